import type { Clock } from "../../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { MemoryNonceCache } from "../../../sdk/ts/src/core/nonce-cache.js";
import type { Coordination, LeaderLease, LeaderLock, LivenessLease, LivenessLeases, RateLimit, SharedNonceCache, SharedRateLimiter, Unsubscribe, WakeUps } from "../coordination-ports.js";

// Coordination for the embedded default (one process): the same contracts as the
// Redis adapter, in memory, with time from the injected clock.

class InProcessWakeUps implements WakeUps {
  private readonly listeners = new Set<(revision: number | undefined) => void>();

  async publish(revision: number): Promise<void> {
    for (const listener of this.listeners) {
      try {
        listener(revision);
      } catch {
        // A hint only; the listener's own poll catches it up.
      }
    }
  }

  subscribe(listener: (revision: number | undefined) => void): Unsubscribe {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

class InProcessLeases implements LivenessLeases {
  private readonly leases = new Map<string, LivenessLease>();

  constructor(private readonly clock: Clock) {}

  async renew(sessionId: string, holder: string, ttlMs: number): Promise<void> {
    this.leases.set(sessionId, { sessionId, holder, expiresAtMs: this.clock.nowMs() + ttlMs });
  }

  async release(sessionId: string, holder: string): Promise<boolean> {
    if (this.leases.get(sessionId)?.holder !== holder) return false;
    return this.leases.delete(sessionId);
  }

  async get(sessionId: string): Promise<LivenessLease | undefined> {
    const lease = this.leases.get(sessionId);
    return lease && { ...lease };
  }

  async listExpired(limit: number): Promise<LivenessLease[]> {
    return this.expired(limit);
  }

  async claimExpired(limit: number): Promise<LivenessLease[]> {
    // Listed and removed in one synchronous step: two claimers never get the same lease.
    const expired = this.expired(limit);
    for (const lease of expired) this.leases.delete(lease.sessionId);
    return expired;
  }

  private expired(limit: number): LivenessLease[] {
    const nowMs = this.clock.nowMs();
    return [...this.leases.values()]
      .filter((lease) => lease.expiresAtMs <= nowMs)
      .sort((left, right) => left.expiresAtMs - right.expiresAtMs)
      .slice(0, limit)
      .map((lease) => ({ ...lease }));
  }
}

interface Bucket {
  tokens: number;
  updatedAtMs: number;
}

/** The token bucket rule, identical to the Redis script's. */
export function takeFromBucket(bucket: Bucket | undefined, limit: RateLimit, nowMs: number, count: number): { allowed: boolean; bucket: Bucket } {
  const updatedAtMs = bucket ? Math.max(bucket.updatedAtMs, nowMs) : nowMs;
  const elapsedMs = bucket ? Math.max(0, nowMs - bucket.updatedAtMs) : 0;
  const tokens = Math.min(limit.burst, (bucket?.tokens ?? limit.burst) + (elapsedMs * limit.ratePerSecond) / 1000);
  if (tokens < count) return { allowed: false, bucket: { tokens, updatedAtMs } };
  return { allowed: true, bucket: { tokens: tokens - count, updatedAtMs } };
}

class InProcessRateLimiter implements SharedRateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly clock: Clock,
    private readonly maxKeys = 100_000,
  ) {}

  async tryTake(key: string, limit: RateLimit, count = 1): Promise<boolean> {
    if (!(limit.ratePerSecond > 0) || !(limit.burst >= 1)) throw new MeshError("invalidArgument", "rate limit needs ratePerSecond > 0 and burst >= 1");
    const nowMs = this.clock.nowMs();
    if (!this.buckets.has(key) && this.buckets.size >= this.maxKeys) this.forgetFull(limit, nowMs);
    const { allowed, bucket } = takeFromBucket(this.buckets.get(key), limit, nowMs, count);
    this.buckets.set(key, bucket);
    return allowed;
  }

  /** A bucket that has refilled is the same as no bucket: forget those to bound memory. */
  private forgetFull(limit: RateLimit, nowMs: number): void {
    for (const [key, bucket] of this.buckets) {
      if (bucket.tokens + ((nowMs - bucket.updatedAtMs) * limit.ratePerSecond) / 1000 >= limit.burst) this.buckets.delete(key);
    }
  }
}

class InProcessLeaderLock implements LeaderLock {
  private readonly held = new Map<string, { holder: string; token: number; expiresAtMs: number }>();
  private readonly counters = new Map<string, number>();

  constructor(private readonly clock: Clock) {}

  async tryAcquire(name: string, holder: string, ttlMs: number): Promise<LeaderLease | undefined> {
    const current = this.held.get(name);
    if (current && current.expiresAtMs > this.clock.nowMs()) return undefined;
    const token = (this.counters.get(name) ?? 0) + 1;
    this.counters.set(name, token);
    this.held.set(name, { holder, token, expiresAtMs: this.clock.nowMs() + ttlMs });
    return { name, holder, token };
  }

  async renew(lease: LeaderLease, ttlMs: number): Promise<boolean> {
    if (!this.holds(lease)) return false;
    this.held.set(lease.name, { holder: lease.holder, token: lease.token, expiresAtMs: this.clock.nowMs() + ttlMs });
    return true;
  }

  async release(lease: LeaderLease): Promise<void> {
    if (this.holds(lease)) this.held.delete(lease.name);
  }

  async advanceToken(lease: LeaderLease, floor: number, ttlMs: number): Promise<LeaderLease | undefined> {
    if (!this.holds(lease)) return undefined;
    const token = Math.max(this.counters.get(lease.name) ?? 0, floor) + 1;
    this.counters.set(lease.name, token);
    this.held.set(lease.name, { holder: lease.holder, token, expiresAtMs: this.clock.nowMs() + ttlMs });
    return { ...lease, token };
  }

  private holds(lease: LeaderLease): boolean {
    const current = this.held.get(lease.name);
    return current !== undefined && current.holder === lease.holder && current.token === lease.token && current.expiresAtMs > this.clock.nowMs();
  }
}

class InProcessNonceCache implements SharedNonceCache {
  constructor(private readonly cache: MemoryNonceCache) {}

  async checkAndRemember(signer: string, nonce: Uint8Array, issuedAtMs: number): Promise<boolean> {
    return this.cache.checkAndRemember(signer, nonce, issuedAtMs);
  }
}

export class InProcessCoordination implements Coordination {
  readonly wakeUps = new InProcessWakeUps();
  readonly leases: LivenessLeases;
  readonly rateLimiter: SharedRateLimiter;
  readonly leaderLock: LeaderLock;
  private readonly nonceCaches = new Map<number, SharedNonceCache>();

  constructor(private readonly clock: Clock) {
    this.leases = new InProcessLeases(clock);
    this.rateLimiter = new InProcessRateLimiter(clock);
    this.leaderLock = new InProcessLeaderLock(clock);
  }

  /** One cache per window, shared by every caller in the process, as Redis is shared by every replica. */
  nonceCache(options: { windowMs: number }): SharedNonceCache {
    let cache = this.nonceCaches.get(options.windowMs);
    if (!cache) {
      cache = new InProcessNonceCache(new MemoryNonceCache({ clock: this.clock, windowMs: options.windowMs }));
      this.nonceCaches.set(options.windowMs, cache);
    }
    return cache;
  }

  async close(): Promise<void> {}
}
