import type { AgentInstance } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { InstanceStore } from "../ports.js";

/** Registrations that live as long as the process (tests, benches); servers keep them in the state store. */
export class MemoryInstanceStore implements InstanceStore {
  private readonly instances = new Map<string, AgentInstance>();

  async put(instance: AgentInstance): Promise<void> {
    this.instances.set(instance.instanceId, instance);
  }

  async remove(instanceId: string): Promise<boolean> {
    return this.instances.delete(instanceId);
  }
}
