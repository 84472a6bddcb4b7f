import type { Clock } from "../../sdk/ts/src/core/clock.js";

export interface RestartIntensityLimits {
  /** Restarts allowed inside the window; one more means the child is crash looping. */
  maxRestarts: number;
  windowMs: number;
}

/**
 * OTP-style restart intensity: more than `maxRestarts` restarts within `windowMs`
 * and the supervisor gives up on the child instead of restarting it forever.
 * Keeps only the timestamps still inside the window, so memory is bounded by maxRestarts + 1.
 */
export class RestartIntensity {
  private restartTimesMs: number[] = [];

  constructor(
    private readonly limits: RestartIntensityLimits,
    private readonly clock: Clock,
  ) {}

  /**
   * Records that the child needs a restart now. Returns true when the restart is
   * within the limits, false when it would exceed them (give up: crash loop).
   */
  admitRestart(): boolean {
    const nowMs = this.clock.nowMs();
    this.forgetBefore(nowMs - this.limits.windowMs);
    this.restartTimesMs.push(nowMs);
    return this.restartTimesMs.length <= this.limits.maxRestarts;
  }

  /** Restarts counted in the current window (including a refused one). */
  restartsInWindow(): number {
    this.forgetBefore(this.clock.nowMs() - this.limits.windowMs);
    return this.restartTimesMs.length;
  }

  /** Forget history, e.g. after an operator restarts a failed child by hand. */
  reset(): void {
    this.restartTimesMs = [];
  }

  private forgetBefore(cutoffMs: number): void {
    // OTP counts restarts in the last MaxT seconds inclusive of the edge; a restart exactly windowMs ago has left.
    this.restartTimesMs = this.restartTimesMs.filter((atMs) => atMs > cutoffMs);
  }
}
