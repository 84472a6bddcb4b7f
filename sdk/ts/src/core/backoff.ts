import type { RandomSource } from "./clock.js";

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  multiplier: number;
}

export const defaultReconnectBackoff: BackoffOptions = { initialMs: 100, maxMs: 5000, multiplier: 2 };

/** Exponential backoff with full jitter (AWS architecture blog): spreads reconnect storms. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: BackoffOptions = defaultReconnectBackoff,
    private readonly random: RandomSource = Math.random,
  ) {}

  nextDelayMs(): number {
    const ceilingMs = Math.min(this.options.maxMs, this.options.initialMs * this.options.multiplier ** this.attempt);
    this.attempt += 1;
    return Math.round(ceilingMs / 2 + (this.random() * ceilingMs) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}
