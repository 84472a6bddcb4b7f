import type { Clock } from "./clock.js";
import { MeshError } from "./mesh-error.js";

/**
 * Remembers (signer, nonce) pairs for as long as an envelope carrying them could
 * still be accepted. Async-friendly so a shared (Redis) store fits the same seam.
 */
export interface NonceCache {
  /** True the first time the pair is seen within the window, false for a replay. */
  checkAndRemember(signer: string, nonce: Uint8Array, issuedAtMs: number): Promise<boolean> | boolean;
}

export interface MemoryNonceCacheOptions {
  clock: Clock;
  /** Same acceptance window the verifier uses (±windowMs around now). */
  windowMs?: number;
  /** Eviction granularity; entries live at most one bucket longer than needed. */
  bucketMs?: number;
  /**
   * Hard bound on remembered pairs. Past it the cache refuses new envelopes
   * (overLimit) rather than forgetting nonces, which would reopen replays.
   */
  maxEntries?: number;
}

/**
 * In-process nonce cache. A pair must be kept until its envelope leaves the
 * acceptance window, i.e. until issuedAtMs + windowMs; entries are filed in time
 * buckets by that expiry so eviction drops whole buckets instead of scanning.
 */
export class MemoryNonceCache implements NonceCache {
  private readonly clock: Clock;
  private readonly windowMs: number;
  private readonly bucketMs: number;
  private readonly maxEntries: number;
  private readonly expiryByKey = new Map<string, number>();
  private readonly keysByBucket = new Map<number, string[]>();
  private lastSweptBucket = Number.NEGATIVE_INFINITY;

  constructor(options: MemoryNonceCacheOptions) {
    this.clock = options.clock;
    this.windowMs = options.windowMs ?? 30_000;
    this.bucketMs = options.bucketMs ?? 1_000;
    this.maxEntries = options.maxEntries ?? 1_000_000;
  }

  get size(): number {
    return this.expiryByKey.size;
  }

  checkAndRemember(signer: string, nonce: Uint8Array, issuedAtMs: number): boolean {
    const nowMs = this.clock.nowMs();
    this.evictExpired(nowMs);
    const key = `${signer}\n${Buffer.from(nonce.buffer, nonce.byteOffset, nonce.byteLength).toString("base64")}`;
    const knownExpiryMs = this.expiryByKey.get(key);
    if (knownExpiryMs !== undefined && knownExpiryMs >= nowMs) return false;
    if (this.expiryByKey.size >= this.maxEntries) throw new MeshError("overLimit", "nonce cache full");
    const expiresAtMs = Math.max(issuedAtMs + this.windowMs, nowMs);
    this.expiryByKey.set(key, expiresAtMs);
    const bucket = Math.floor(expiresAtMs / this.bucketMs);
    const keys = this.keysByBucket.get(bucket);
    if (keys) keys.push(key);
    else this.keysByBucket.set(bucket, [key]);
    return true;
  }

  private evictExpired(nowMs: number): void {
    // A bucket is dead once every expiry it can hold is in the past.
    const currentBucket = Math.floor(nowMs / this.bucketMs);
    if (currentBucket === this.lastSweptBucket) return;
    this.lastSweptBucket = currentBucket;
    for (const [bucket, keys] of this.keysByBucket) {
      if (bucket >= currentBucket) continue;
      for (const key of keys) {
        const expiresAtMs = this.expiryByKey.get(key);
        if (expiresAtMs !== undefined && expiresAtMs < nowMs) this.expiryByKey.delete(key);
      }
      this.keysByBucket.delete(bucket);
    }
  }
}
