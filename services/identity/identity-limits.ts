import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { TokenBucket } from "../../sdk/ts/src/core/token-bucket.js";

export interface IdentityLimitsOptions {
  /** Calls and stream opens per second per identity (0 = unlimited), and the burst. */
  ratePerSecond: number;
  burst: number;
  /** Unary calls in flight per identity (0 = unlimited). */
  maxInFlight: number;
  /** Open streams per identity (0 = unlimited). */
  maxStreams: number;
}

/** Token buckets shared by every replica (the Coordination's rate limiter, on Redis). */
export interface SharedRateLimit {
  tryTake(key: string, limit: { ratePerSecond: number; burst: number }): Promise<boolean>;
}

export type CallKind = "unary" | "stream";
export type LimitRefusal = "rate" | "in_flight" | "streams";

const MAX_KEYS = 10_000;

/**
 * Per-identity limits on every call. Unary calls and streams are counted apart: a
 * stream lives for hours (Connect, Watch), so counting it as "in flight" would let a
 * sidecar's long-lived streams use up the slots its short calls need. Both draw on
 * one rate bucket, so opening streams in a loop is limited like calling.
 *
 * Replicas (`shared`): the rate is also taken from a bucket all replicas share, so
 * spreading calls over replicas does not multiply it. The local bucket still comes
 * first: a caller over the rate on this replica alone is over it everywhere, and is
 * refused without a round trip. In-flight and stream counts stay local (they bound
 * this process's work). If the shared bucket cannot answer, the local one decides:
 * a Redis outage makes the limit per replica for a while, not the control plane
 * unavailable.
 */
export class IdentityLimits {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly open: Record<CallKind, Map<string, number>> = { unary: new Map(), stream: new Map() };

  constructor(
    private readonly options: IdentityLimitsOptions,
    private readonly clock: Clock,
    private readonly shared?: { limiter: SharedRateLimit; onUnavailable?: (error: unknown) => void },
  ) {}

  /**
   * Which limit refused the call, or undefined when admitted (then call release once).
   * Synchronous unless a shared bucket has to be asked: then a promise (never rejected).
   */
  admit(key: string, kind: CallKind): LimitRefusal | undefined | Promise<LimitRefusal | undefined> {
    const counts = this.open[kind];
    const current = counts.get(key) ?? 0;
    const max = kind === "unary" ? this.options.maxInFlight : this.options.maxStreams;
    if (max > 0 && current >= max) return kind === "unary" ? "in_flight" : "streams";
    if (this.options.ratePerSecond > 0 && !this.bucketFor(key).tryTake()) return "rate";
    counts.set(key, current + 1);
    if (this.options.ratePerSecond <= 0 || !this.shared) return undefined;
    // The slot is held while the shared bucket answers, so concurrent calls cannot overshoot maxInFlight.
    const { limiter, onUnavailable } = this.shared;
    return limiter.tryTake(`identity:${key}`, { ratePerSecond: this.options.ratePerSecond, burst: Math.max(1, this.options.burst) }).then(
      (allowed) => {
        if (allowed) return undefined;
        this.release(key, kind);
        return "rate" as const;
      },
      (error: unknown) => {
        onUnavailable?.(error);
        return undefined;
      },
    );
  }

  release(key: string, kind: CallKind): void {
    const counts = this.open[kind];
    const current = counts.get(key) ?? 0;
    if (current <= 1) counts.delete(key);
    else counts.set(key, current - 1);
  }

  private bucketFor(key: string): TokenBucket {
    let bucket = this.buckets.get(key);
    if (bucket) return bucket;
    // Bounded memory: forget idle keys' buckets (a fresh bucket starts full, which is what an idle one is).
    if (this.buckets.size >= MAX_KEYS) {
      for (const idle of this.buckets.keys()) if (!this.open.unary.has(idle) && !this.open.stream.has(idle)) this.buckets.delete(idle);
    }
    bucket = new TokenBucket(this.options.ratePerSecond, Math.max(1, this.options.burst), this.clock);
    this.buckets.set(key, bucket);
    return bucket;
  }
}
