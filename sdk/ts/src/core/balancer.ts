import type { RandomSource } from "./clock.js";
import { powerOfTwoChoices } from "./p2c.js";
import { pickByAffinity } from "./session-affinity.js";
import { HealthState } from "../gen/agentmesh/v1/types.js";

// DEGRADED instances stay routable with lower weight: they look this much busier.
export const degradedLoadPenalty = 8;

/** The load the balancer compares for one instance: what the caller counts for it, plus the DEGRADED penalty. */
export function balancedLoad(state: HealthState, counted: number): number {
  return counted + (state === HealthState.HEALTH_STATE_DEGRADED ? degradedLoadPenalty : 0);
}

export interface BalanceOptions<T> {
  /** What is compared (balancedLoad of the caller's own count: outstanding calls, reported in-flight...). */
  load: (candidate: T) => number;
  /** Decides equal loads (EWMA latency). */
  tieBreak: (candidate: T) => number;
  idOf: (candidate: T) => string;
  random: RandomSource;
  /** Sticky choice for this key (rendezvous hashing with bounded load); "" = none. */
  sessionKey?: string;
}

/**
 * The one balancer of the mesh, used by the sidecar's EndpointCache and the server's
 * Resolver alike: power of two choices on the injected load, or, with a session key,
 * the key's sticky instance within the load bound.
 */
export function balance<T>(candidates: readonly T[], options: BalanceOptions<T>): T | undefined {
  if (options.sessionKey) return pickByAffinity(options.sessionKey, candidates, options.idOf, options.load);
  return powerOfTwoChoices(candidates, options.load, options.random, options.tieBreak);
}
