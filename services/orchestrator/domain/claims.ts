import { HealthState } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { isRoutable } from "../../registry/domain/health-state.js";

/**
 * Who vouches for an instance. An instance is alive only while the Connect
 * session of the sidecar that runs it reports it (its Hello listed it, or a
 * heartbeat announced it); the registry entry alone proves nothing, since a
 * sidecar that died took its knowledge of its processes with it. This is the
 * shape of Kubernetes' node lifecycle controller and Nomad's lost allocations,
 * with the session standing in for the node lease.
 *
 * - claimed: an open session reports it now.
 * - disowned: an earlier session of its sidecar reported it, and a newer
 *   session of that sidecar said Hello without listing it: the sidecar
 *   restarted (or lost it) and does not run it. Lost at once, whatever the host
 *   is called. Only an instance some session has reported can be disowned: a
 *   client may register before its stream is up and announce right after its
 *   Welcome, so a Hello says nothing about instances nobody has claimed yet.
 * - unclaimed: no session reports it, since `sinceMs`; its sidecar may be
 *   reconnecting. Lost once its health is given up on and its sidecar is gone,
 *   or once it has been unclaimed and out of routing for a bound.
 */
export type InstanceClaim = { kind: "claimed" } | { kind: "disowned" } | { kind: "unclaimed"; sinceMs: number };

/** One open Connect session whose Hello has been accepted, as claim classification sees it. */
export interface SessionView {
  /** Tells sessions of one sidecar apart. */
  sessionId: string;
  sidecarId: string;
  /** Hello.host; "" when not given. */
  host: string;
  /** When its Hello was accepted (server clock); undefined when not known. */
  helloAtMs: number | undefined;
  /** The instances its Hello listed: what the sidecar really ran when it connected. */
  helloInstanceIds: ReadonlySet<string>;
}

/** The last session seen reporting an instance. */
export interface LastClaim {
  sessionId: string;
  sidecarId: string;
  /** Its Hello time; undefined when not known. */
  helloAtMs: number | undefined;
}

export interface ClaimInput {
  instanceId: string;
  /** AgentInstance.host from its registration. */
  host: string;
  /** The session that reports it now, if any. */
  claimant: SessionView | undefined;
  /** The last session seen reporting it, if any. */
  lastClaim: LastClaim | undefined;
  /** When it was first seen with no claimant, if it was already. */
  unclaimedSinceMs: number | undefined;
  /** Every open session with an accepted Hello. */
  sessions: readonly SessionView[];
  nowMs: number;
}

export interface ClassifiedClaim {
  /** The sidecar it runs (or ran) on: the claimant's, else the last claimant's, else its registered host. */
  sidecarId: string;
  claim: InstanceClaim;
}

export function classifyClaim(input: ClaimInput): ClassifiedClaim {
  if (input.claimant) return { sidecarId: input.claimant.sidecarId, claim: { kind: "claimed" } };
  const last = input.lastClaim;
  if (!last) return { sidecarId: input.host, claim: { kind: "unclaimed", sinceMs: input.unclaimedSinceMs ?? input.nowMs } };
  // A newer session of the same sidecar that did not list it: the sidecar now running under that name does not run it.
  const disowned = input.sessions.some(
    (session) =>
      session.sidecarId === last.sidecarId &&
      session.sessionId !== last.sessionId &&
      session.helloAtMs !== undefined &&
      (last.helloAtMs === undefined || session.helloAtMs > last.helloAtMs) &&
      !session.helloInstanceIds.has(input.instanceId),
  );
  if (disowned) return { sidecarId: last.sidecarId, claim: { kind: "disowned" } };
  return { sidecarId: last.sidecarId, claim: { kind: "unclaimed", sinceMs: input.unclaimedSinceMs ?? input.nowMs } };
}

export interface LostCheck {
  claim: InstanceClaim;
  sidecarId: string;
  state: HealthState;
}

export interface LostRules {
  /** Sidecars with an open session. */
  connected: ReadonlySet<string>;
  nowMs: number;
  /** How long an instance may stay unclaimed and out of routing before it is lost. */
  lostAfterMs: number;
  /**
   * Managed instances are also lost the moment their sidecar is gone and their health
   * has been given up on (the reconnect grace is over), so a replacement starts at once.
   * Unmanaged ones wait for the bound: nothing replaces them, and an operator may want to
   * see a host's agents down for a while.
   */
  managed: boolean;
}

const givenUpStates = new Set([HealthState.HEALTH_STATE_UNHEALTHY, HealthState.HEALTH_STATE_STOPPED, HealthState.HEALTH_STATE_FAILED]);

/** Why nobody will ever vouch for this instance again, or undefined while someone may. */
export function lostReason(instance: LostCheck, rules: LostRules): string | undefined {
  const { claim } = instance;
  if (claim.kind === "disowned") return "its sidecar reconnected without it";
  const sidecarConnected = rules.connected.has(instance.sidecarId);
  if (claim.kind === "claimed" && sidecarConnected) return undefined;
  if (rules.managed && !sidecarConnected && givenUpStates.has(instance.state)) return "sidecar gone";
  if (claim.kind === "unclaimed" && !isRoutable(instance.state) && rules.nowMs - claim.sinceMs >= rules.lostAfterMs) {
    return `no sidecar has reported it for ${rules.lostAfterMs} ms`;
  }
  return undefined;
}
