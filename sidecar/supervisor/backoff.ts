import type { RandomSource } from "../../sdk/ts/src/core/clock.js";

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** A child that stayed up at least this long crashed for a new reason: start again from initialMs. */
  resetAfterUptimeMs: number;
}

/**
 * Exponential backoff with full jitter (delay uniform in [0, min(max, initial * 2^attempt)]),
 * which spreads restarts of many children that crashed together (e.g. a shared dependency went away)
 * better than equal or no jitter. Pure: randomness injected, uptime passed in.
 */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: BackoffOptions,
    private readonly random: RandomSource,
  ) {}

  /** Delay before the next restart of a child that ran for `uptimeMs` before exiting. */
  nextDelayMs(uptimeMs: number): number {
    if (uptimeMs >= this.options.resetAfterUptimeMs) this.attempt = 0;
    const ceilingMs = this.ceilingMs(this.attempt);
    this.attempt += 1;
    return Math.floor(this.random() * ceilingMs);
  }

  /** Attempts since the last reset; the next delay is drawn from [0, ceiling(attempts)]. */
  attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }

  private ceilingMs(attempt: number): number {
    // Cap the exponent so 2^attempt never overflows to Infinity for a child that crashes for days.
    const factor = 2 ** Math.min(attempt, 52);
    return Math.min(this.options.maxMs, this.options.initialMs * factor);
  }
}
