import type { AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";

/**
 * Why a registration is written: decides what a write does when another replica
 * wrote the same instance first (ADR 0008).
 * - `register`: this replica registered it, or a local session now speaks for it:
 *   it takes the instance's liveness over, whoever held it.
 * - `health`: the holder's liveness (state, reason); dropped when another replica
 *   holds the instance by now.
 * - `traffic`: the leader's traffic share, whoever holds the instance.
 */
export type InstanceWriteKind = "register" | "health" | "traffic";

/**
 * Durable home of registrations. The registry keeps its own in-memory index for
 * reads (Discover must answer in well under a millisecond), so the store only
 * sees writes. Heartbeat load never reaches it: that is
 * soft state, rebuilt within one interval after a restart.
 *
 * With replicas (`ReplicatedInstanceStore`), every replica's registry is also a
 * projection of the others' writes, and each instance's liveness is judged by
 * one replica, the one whose session speaks for it.
 */
export interface InstanceStore {
  put(instance: AgentInstance, kind?: InstanceWriteKind): Promise<void>;
  remove(instanceId: string): Promise<boolean>;
  /** Whether this replica judges the instance's liveness; absent: always (one server). */
  holdsLiveness?(instanceId: string): boolean;
}

/** What a replicated store applies to the local registry: the other replicas' writes. */
export interface RemoteRegistrations {
  get(instanceId: string): AgentInstance | undefined;
  all(): IterableIterator<AgentInstance>;
  /** Another replica registered or changed the instance. */
  applyRemote(instance: AgentInstance): void;
  /** The leader changed the traffic share of an instance this replica holds. */
  applyRemoteTraffic(instanceId: string, trafficPercent: number): void;
  /** Taken over from a replica that went away: silence counts only from `untilMs`. */
  graceLiveness(instanceId: string, untilMs: number): void;
  /** Another replica deregistered the instance. */
  removeRemote(instanceId: string, reason: string): void;
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
