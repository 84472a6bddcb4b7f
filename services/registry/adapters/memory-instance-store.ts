import type { AgentInstance } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { InstanceStore } from "../ports.js";

/** The embedded default: registrations live as long as the process. */
export class MemoryInstanceStore implements InstanceStore {
  private readonly instances = new Map<string, AgentInstance>();

  async put(instance: AgentInstance): Promise<void> {
    this.instances.set(instance.instanceId, instance);
  }

  async remove(instanceId: string): Promise<boolean> {
    return this.instances.delete(instanceId);
  }

  async loadAll(): Promise<AgentInstance[]> {
    return [...this.instances.values()];
  }
}
