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
 * - disowned: its sidecar has an open session whose Hello came after the
 *   instance registered and did not list it: the sidecar restarted (or lost
 *   it) and does not run it. Lost at once, whatever the host is called.
 * - unclaimed: no session reports it, since `sinceMs`; its sidecar may be
 *   reconnecting. Lost once its health is given up on and its sidecar is gone,
 *   or once it has been unclaimed and out of routing for a bound.
 */
export type InstanceClaim = { kind: "claimed" } | { kind: "disowned" } | { kind: "unclaimed"; sinceMs: number };

/** One open Connect session whose Hello has been accepted, as claim classification sees it. */
export interface SessionView {
  sidecarId: string;
  /** Hello.host; "" when not given. */
  host: string;
  /** When its Hello was accepted (server clock); undefined when not known. */
  helloAtMs: number | undefined;
  /** The instances its Hello listed: what the sidecar really ran when it connected. */
  helloInstanceIds: ReadonlySet<string>;
}

export interface ClaimInput {
  instanceId: string;
  /** AgentInstance.host from its registration. */
  host: string;
  /** When the registry first registered it (server clock). */
  registeredAtMs: number;
  /** The session that reports it now, if any. */
  claimant: SessionView | undefined;
  /** Sidecar id of the last session seen reporting it, if any. */
  lastSidecarId: string | undefined;
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
  const sidecarId = input.lastSidecarId ?? input.host;
  const isItsSidecar = (session: SessionView) => session.sidecarId === sidecarId || (input.lastSidecarId === undefined && session.host !== "" && session.host === input.host);
  // A Hello in the same millisecond as the registration may not have known it: benefit of the doubt (the bound still applies).
  const disowned = input.sessions.some(
    (session) =>
      isItsSidecar(session) &&
      session.helloAtMs !== undefined &&
      session.helloAtMs > input.registeredAtMs &&
      !session.helloInstanceIds.has(input.instanceId),
  );
  if (disowned) return { sidecarId, claim: { kind: "disowned" } };
  return { sidecarId, claim: { kind: "unclaimed", sinceMs: input.unclaimedSinceMs ?? input.nowMs } };
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
