import type { RandomSource } from "./clock.js";

/**
 * How a delay is drawn below its exponential ceiling (AWS architecture blog,
 * "Exponential Backoff And Jitter"):
 * - `"full"`: uniform in [0, ceiling). Spreads the most; for restarts of many
 *   children that crashed together (a shared dependency went away).
 * - `"equal"`: uniform in [ceiling / 2, ceiling]. Never retries sooner than half
 *   the ceiling; for reconnects to one server.
 * - `{ ratio }`: the ceiling ± ratio of itself. Close to the nominal schedule;
 *   for data-plane tunnels, so tunnels that broke together do not reopen in lockstep.
 */
export type BackoffJitter = "full" | "equal" | { ratio: number };

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  multiplier: number;
  /** Default `"equal"`. */
  jitter?: BackoffJitter;
  /**
   * A run that lasted at least this long before it failed starts the schedule over
   * (a child that stayed up crashed for a new reason). Unset: only reset() does.
   */
  resetAfterRunMs?: number;
}

export const defaultReconnectBackoff: BackoffOptions = { initialMs: 100, maxMs: 5000, multiplier: 2 };

/** Delay before retry number `attempt` (0 for the first retry after a failure). Pure: randomness injected. */
export function backoffDelayMs(attempt: number, options: BackoffOptions, random: RandomSource): number {
  // Cap the exponent so something that stays down for days never overflows to Infinity.
  const ceilingMs = Math.min(options.maxMs, options.initialMs * options.multiplier ** Math.min(attempt, 64));
  const jitter = options.jitter ?? "equal";
  if (jitter === "full") return Math.floor(random() * ceilingMs);
  if (jitter === "equal") return Math.round(ceilingMs / 2 + (random() * ceilingMs) / 2);
  const spreadMs = ceilingMs * jitter.ratio;
  return Math.max(0, Math.round(ceilingMs - spreadMs + 2 * spreadMs * random()));
}

/** {@link backoffDelayMs} with the attempt count kept: one per thing that retries. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: BackoffOptions = defaultReconnectBackoff,
    private readonly random: RandomSource = Math.random,
  ) {}

  /** The delay before the next retry of something that ran for `ranForMs` before it failed. */
  nextDelayMs(ranForMs = 0): number {
    if (this.options.resetAfterRunMs !== undefined && ranForMs >= this.options.resetAfterRunMs) this.attempt = 0;
    const delayMs = backoffDelayMs(this.attempt, this.options, this.random);
    this.attempt += 1;
    return delayMs;
  }

  /** Attempts since the last reset. */
  attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}
