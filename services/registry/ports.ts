import type { AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";

/**
 * Durable home of registrations. The registry keeps its own in-memory index for
 * reads (Discover must answer in well under a millisecond), so the store only
 * sees writes and the reload at start. Heartbeat load never reaches it: that is
 * soft state, rebuilt within one interval after a restart.
 */
export interface InstanceStore {
  put(instance: AgentInstance): Promise<void>;
  remove(instanceId: string): Promise<boolean>;
  loadAll(): Promise<AgentInstance[]>;
}

export interface RegistryEvent {
  revision: number;
  type: WatchResponse_EventType;
  /** A copy taken when the event happened; later changes do not touch it. */
  instance: AgentInstance;
  previousState: HealthState;
}

export interface ChangeSubscription {
  close(): void;
}

/**
 * Fan-out of registry changes, in revision order. In-process by default; a Redis
 * pub/sub adapter carries them between replicas.
 */
export interface ChangeFeed {
  publish(event: RegistryEvent): void;
  /**
   * Subscribes to events after `sinceRevision`. Returns undefined when that
   * revision is no longer retained (the caller then starts from a snapshot).
   */
  subscribe(sinceRevision: number, onEvent: (event: RegistryEvent) => void): ChangeSubscription | undefined;
  readonly oldestRetainedRevision: number;
}
