import type { RandomSource } from "../clock.js";

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  multiplier: number;
  /** Spread each delay by ± this share of itself, so tunnels that broke together do not reconnect in lockstep. */
  jitterRatio: number;
}

export const defaultBackoffPolicy: BackoffPolicy = { initialMs: 100, maxMs: 5_000, multiplier: 2, jitterRatio: 0.2 };

/** Delay before reconnect attempt number `attempt` (0 for the first retry after a break). */
export function backoffDelayMs(attempt: number, policy: BackoffPolicy, random: RandomSource): number {
  // Cap the exponent so a peer that stays down for days never overflows to Infinity.
  const baseMs = Math.min(policy.maxMs, policy.initialMs * policy.multiplier ** Math.min(attempt, 64));
  const spreadMs = baseMs * policy.jitterRatio;
  return Math.max(0, Math.round(baseMs - spreadMs + 2 * spreadMs * random()));
}
