import type { Deployment } from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { DeploymentStore } from "../ports.js";

/** The embedded default: deployments live as long as the process. */
export class MemoryDeploymentStore implements DeploymentStore {
  private readonly deployments = new Map<string, Deployment>();

  async put(deployment: Deployment): Promise<void> {
    this.deployments.set(deployment.name, structuredClone(deployment));
  }

  async get(name: string): Promise<Deployment | undefined> {
    const deployment = this.deployments.get(name);
    return deployment ? structuredClone(deployment) : undefined;
  }

  async list(): Promise<Deployment[]> {
    return [...this.deployments.values()]
      .sort((left, right) => (left.name < right.name ? -1 : left.name > right.name ? 1 : 0))
      .map((deployment) => structuredClone(deployment));
  }

  async remove(name: string): Promise<boolean> {
    return this.deployments.delete(name);
  }
}
