import type { NonceCache } from "../../sdk/ts/src/core/nonce-cache.js";

// Coordination between replicas: everything that is not the state itself. Redis
// when the server runs replicas, in-process for the embedded default. None of it
// may be the only copy of anything: wake-ups are hints (followers read the change
// log by revision), leases and rate limits are soft state, and the leader lock's
// safety comes from the fencing token the change log checks, not from Redis.

export type Unsubscribe = () => void;

/**
 * "The change log moved" hints between replicas. `revision` undefined means the
 * channel was interrupted and hints may have been lost: read now. Listeners must
 * never trust the content beyond "read changesSince".
 */
export interface WakeUps {
  /** Best effort; a failure is logged, never thrown (the write already committed). */
  publish(revision: number): Promise<void>;
  subscribe(listener: (revision: number | undefined) => void): Unsubscribe;
}

/** The core's NonceCache shape, shared by every replica: a nonce replayed to another replica is refused. */
export interface SharedNonceCache extends NonceCache {
  checkAndRemember(signer: string, nonce: Uint8Array, issuedAtMs: number): Promise<boolean>;
}

export interface LivenessLease {
  /** For example a sidecar's session id. */
  sessionId: string;
  /** The replica holding the session's stream. */
  holder: string;
  expiresAtMs: number;
}

/**
 * Cross-replica liveness: the replica holding a sidecar's stream renews its lease;
 * a lease nobody renews expires and is listed, so any replica (the leader) can act
 * on a sidecar whose replica died.
 */
export interface LivenessLeases {
  /** Creates or extends; a renewal by another holder takes the lease over (the sidecar moved). */
  renew(sessionId: string, holder: string, ttlMs: number): Promise<void>;
  /** Drops the lease if `holder` still holds it; answers whether it did. */
  release(sessionId: string, holder: string): Promise<boolean>;
  get(sessionId: string): Promise<LivenessLease | undefined>;
  /** Leases past their expiry, oldest first; they stay listed until claimed, renewed or released. */
  listExpired(limit: number): Promise<LivenessLease[]>;
  /** Removes and answers expired leases atomically: each one is claimed by exactly one caller. */
  claimExpired(limit: number): Promise<LivenessLease[]>;
}

export interface RateLimit {
  ratePerSecond: number;
  burst: number;
}

/** Per-key token buckets shared by every replica (for example per calling identity). */
export interface SharedRateLimiter {
  tryTake(key: string, limit: RateLimit, count?: number): Promise<boolean>;
}

export interface LeaderLease {
  name: string;
  holder: string;
  /** Fencing token: higher at each acquisition. Every write of the leader carries it. */
  token: number;
}

export interface LeaderLock {
  /** Acquires the lock if nobody holds it; a new acquisition always gets a higher token. */
  tryAcquire(name: string, holder: string, ttlMs: number): Promise<LeaderLease | undefined>;
  /** Extends the lock if `lease` still holds it; false means leadership is lost. */
  renew(lease: LeaderLease, ttlMs: number): Promise<boolean>;
  release(lease: LeaderLease): Promise<void>;
  /**
   * For a lease still held: raises the token counter past `floor` and answers the
   * lease with the new token. Used when the store has seen a higher token than the
   * lock handed out (the lock service lost its counter, e.g. Redis without
   * persistence restarted), so the new leader is not fenced out forever.
   */
  advanceToken(lease: LeaderLease, floor: number, ttlMs: number): Promise<LeaderLease | undefined>;
}

export interface Coordination {
  readonly wakeUps: WakeUps;
  readonly leases: LivenessLeases;
  readonly rateLimiter: SharedRateLimiter;
  readonly leaderLock: LeaderLock;
  /** `windowMs`: the verifier's acceptance window (±windowMs around now). */
  nonceCache(options: { windowMs: number }): SharedNonceCache;
  close(): Promise<void>;
}
