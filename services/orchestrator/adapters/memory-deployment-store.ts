import type { Deployment, DeploymentStatus, Rollout } from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { DeploymentStore } from "../ports.js";

/** The embedded default: deployments live as long as the process. */
export class MemoryDeploymentStore implements DeploymentStore {
  private readonly deployments = new Map<string, Deployment>();
  private readonly rollouts = new Map<string, Rollout>();

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

  async putStatus(name: string, status: DeploymentStatus): Promise<boolean> {
    const stored = this.deployments.get(name);
    if (!stored) return false;
    stored.status = structuredClone(status);
    return true;
  }

  async remove(name: string): Promise<boolean> {
    this.rollouts.delete(name);
    return this.deployments.delete(name);
  }

  async putRollout(rollout: Rollout): Promise<void> {
    this.rollouts.set(rollout.deployment, structuredClone(rollout));
  }

  async listRollouts(): Promise<Rollout[]> {
    return [...this.rollouts.values()]
      .sort((left, right) => (left.deployment < right.deployment ? -1 : left.deployment > right.deployment ? 1 : 0))
      .map((rollout) => structuredClone(rollout));
  }
}
