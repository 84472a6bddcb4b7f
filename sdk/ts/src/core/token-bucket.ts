import type { Clock } from "./clock.js";

/** Classic token bucket: `ratePerSecond` refill, `burst` capacity. Time comes from the clock. */
export class TokenBucket {
  private tokens: number;
  private updatedAtMs: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly clock: Clock,
  ) {
    this.tokens = burst;
    this.updatedAtMs = clock.nowMs();
  }

  tryTake(count = 1): boolean {
    const nowMs = this.clock.nowMs();
    const elapsedMs = Math.max(0, nowMs - this.updatedAtMs);
    this.tokens = Math.min(this.burst, this.tokens + (elapsedMs * this.ratePerSecond) / 1000);
    this.updatedAtMs = nowMs;
    if (this.tokens < count) return false;
    this.tokens -= count;
    return true;
  }
}

const MAX_KEYS = 10_000;

/** Per-key buckets and in-flight counters, for limits "per identity" and "per agent". */
export class KeyedLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly inFlight = new Map<string, number>();

  constructor(
    private readonly options: { ratePerSecond: number; burst: number; maxInFlight: number },
    private readonly clock: Clock,
  ) {}

  /** Answers which limit refused the call, or undefined when admitted (then call release once). */
  admit(key: string): "rate" | "in_flight" | undefined {
    const current = this.inFlight.get(key) ?? 0;
    if (this.options.maxInFlight > 0 && current >= this.options.maxInFlight) return "in_flight";
    if (this.options.ratePerSecond > 0) {
      let bucket = this.buckets.get(key);
      if (!bucket) {
        // Bounded memory: forget idle keys' buckets (a fresh bucket starts full, which is what an idle one is).
        if (this.buckets.size >= MAX_KEYS) for (const idle of this.buckets.keys()) if (!this.inFlight.has(idle)) this.buckets.delete(idle);
        bucket = new TokenBucket(this.options.ratePerSecond, Math.max(1, this.options.burst), this.clock);
        this.buckets.set(key, bucket);
      }
      if (!bucket.tryTake()) return "rate";
    }
    this.inFlight.set(key, current + 1);
    return undefined;
  }

  release(key: string): void {
    const current = this.inFlight.get(key) ?? 0;
    if (current <= 1) this.inFlight.delete(key);
    else this.inFlight.set(key, current - 1);
  }
}
