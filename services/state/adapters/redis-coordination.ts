import { createHash } from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Clock } from "../../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import type { Coordination, LeaderLease, LeaderLock, LivenessLease, LivenessLeases, RateLimit, SharedNonceCache, SharedRateLimiter, WakeUps } from "../coordination-ports.js";

// Coordination between replicas on Redis (ioredis).
//
// - Wake-ups: PUBLISH of the new revision after each commit. Pub/sub is at most
//   once: messages published while a subscriber reconnects are gone (ioredis
//   resubscribes, it cannot replay). So a wake-up is only "read the log now", every
//   reconnect is itself a wake-up (revision undefined), and followers also poll.
// - Nonces: SET NX PX, one key per (signer, nonce) for the acceptance window. Run
//   Redis with maxmemory-policy noeviction: an evicted nonce is a replay window;
//   with noeviction a full Redis refuses the SET and the envelope is refused.
// - Liveness leases: a sorted set by expiry (plus a holder hash), not one key with a
//   TTL each: an expired TTL key just vanishes (its expiry event is pub/sub again,
//   lossy), while an expired lease must be listed until somebody acts on it.
// - Rate limits and the leader lock: Lua scripts, so each is one atomic step.
// Every failure is a MeshError("unavailable"): nonce checks and rate limits fail
// closed.

export interface RedisCoordinationOptions {
  url: string;
  clock: Clock;
  /** Prefixes every key and the wake-up channel; lets several meshes share a Redis. */
  keyPrefix?: string;
  /** Bound on one command, so a hung Redis fails calls instead of holding them. */
  commandTimeoutMs?: number;
  logger?: Logger;
}

/** EVALSHA with a fallback to EVAL when the script cache is empty (a restarted Redis). */
class LuaScript {
  private readonly sha: string;

  constructor(
    private readonly source: string,
    private readonly keyCount: number,
  ) {
    this.sha = createHash("sha1").update(source).digest("hex");
  }

  async run(redis: Redis, keysAndArgs: Array<string | number>): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, this.keyCount, ...keysAndArgs);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
      return redis.eval(this.source, this.keyCount, ...keysAndArgs);
    }
  }
}

const scripts = {
  leaseRenew: new LuaScript(
    `redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
     redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
     return 1`,
    2,
  ),
  leaseRelease: new LuaScript(
    `if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
     redis.call('ZREM', KEYS[1], ARGV[1])
     redis.call('HDEL', KEYS[2], ARGV[1])
     return 1`,
    2,
  ),
  leaseExpired: new LuaScript(
    `local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
     local answer = {}
     for index = 1, #expired, 2 do
       local session = expired[index]
       table.insert(answer, session)
       table.insert(answer, redis.call('HGET', KEYS[2], session) or '')
       table.insert(answer, expired[index + 1])
       if ARGV[3] == '1' then
         redis.call('ZREM', KEYS[1], session)
         redis.call('HDEL', KEYS[2], session)
       end
     end
     return answer`,
    2,
  ),
  // Same rule as takeFromBucket in in-process-coordination.ts.
  tokenBucket: new LuaScript(
    `local rate = tonumber(ARGV[1])
     local burst = tonumber(ARGV[2])
     local now = tonumber(ARGV[3])
     local count = tonumber(ARGV[4])
     local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
     local tokens = tonumber(state[1])
     local at = tonumber(state[2])
     if tokens == nil or at == nil then
       tokens = burst
       at = now
     end
     tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
     local allowed = 0
     if tokens >= count then
       tokens = tokens - count
       allowed = 1
     end
     redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(math.max(now, at)))
     redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
     return allowed`,
    1,
  ),
  lockAcquire: new LuaScript(
    `if redis.call('EXISTS', KEYS[1]) == 1 then return false end
     local token = redis.call('INCR', KEYS[2])
     redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
     return token`,
    2,
  ),
  lockRenew: new LuaScript(
    `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
     redis.call('PEXPIRE', KEYS[1], ARGV[2])
     return 1`,
    1,
  ),
  lockRelease: new LuaScript(
    `if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
     return 1`,
    1,
  ),
  lockAdvance: new LuaScript(
    `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
     local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
     if counter < tonumber(ARGV[3]) then redis.call('SET', KEYS[2], ARGV[3]) end
     local token = redis.call('INCR', KEYS[2])
     redis.call('SET', KEYS[1], ARGV[2] .. '|' .. token, 'PX', ARGV[4])
     return token`,
    2,
  ),
};

export class RedisCoordination implements Coordination {
  readonly wakeUps: WakeUps;
  readonly leases: LivenessLeases;
  readonly rateLimiter: SharedRateLimiter;
  readonly leaderLock: LeaderLock;
  private readonly prefix: string;
  private readonly subscriber: Redis;
  private readonly wakeListeners = new Set<(revision: number | undefined) => void>();
  private markSubscribed: () => void = () => undefined;
  /** Resolves once the first subscription is confirmed: from then on no hint is missed silently. */
  private readonly subscribed = new Promise<void>((resolve) => {
    this.markSubscribed = resolve;
  });

  private constructor(
    private readonly redis: Redis,
    private readonly options: RedisCoordinationOptions,
  ) {
    this.prefix = options.keyPrefix ?? "agentmesh:";
    const channel = `${this.prefix}changes`;
    this.subscriber = redis.duplicate({ autoResubscribe: false, lazyConnect: false, maxRetriesPerRequest: null });
    this.subscriber.on("error", (error) => options.logger?.warn({ component: "coordination", err: error }, "redis subscriber connection error"));
    // Subscribe ourselves on every (re)connection, and only once Redis has
    // confirmed the subscription tell listeners to read: whatever was published
    // while we were away is then in the log, and everything after reaches us.
    this.subscriber.on("ready", () => {
      this.subscriber.subscribe(channel).then(
        () => {
          this.markSubscribed();
          this.notifyWake(undefined);
        },
        (error: unknown) => options.logger?.warn({ component: "coordination", err: error }, "redis subscribe failed"),
      );
    });
    this.subscriber.on("message", (_channel: string, message: string) => {
      const revision = Number(message);
      this.notifyWake(Number.isSafeInteger(revision) ? revision : undefined);
    });
    const guard = this.guard.bind(this);
    const key = (name: string) => `${this.prefix}${name}`;
    this.wakeUps = {
      publish: async (revision) => {
        try {
          await redis.publish(channel, String(revision));
        } catch (error) {
          options.logger?.warn({ component: "coordination", err: error }, "wake-up publish failed; followers catch up by polling");
        }
      },
      subscribe: (listener) => {
        this.wakeListeners.add(listener);
        return () => this.wakeListeners.delete(listener);
      },
    };
    const expiryKey = key("leases:expiry");
    const holderKey = key("leases:holder");
    const expired = (claim: boolean) => async (limit: number) =>
      guard(async () => {
        const flat = (await scripts.leaseExpired.run(redis, [expiryKey, holderKey, options.clock.nowMs(), limit, claim ? "1" : "0"])) as string[];
        const leases: LivenessLease[] = [];
        for (let index = 0; index + 2 < flat.length; index += 3) {
          leases.push({ sessionId: flat[index] as string, holder: flat[index + 1] as string, expiresAtMs: Number(flat[index + 2]) });
        }
        return leases;
      });
    this.leases = {
      renew: (sessionId, holder, ttlMs) => guard(async () => void (await scripts.leaseRenew.run(redis, [expiryKey, holderKey, sessionId, holder, options.clock.nowMs() + ttlMs]))),
      release: (sessionId, holder) => guard(async () => (await scripts.leaseRelease.run(redis, [expiryKey, holderKey, sessionId, holder])) === 1),
      get: (sessionId) =>
        guard(async () => {
          const [score, holder] = await Promise.all([redis.zscore(expiryKey, sessionId), redis.hget(holderKey, sessionId)]);
          return score === null ? undefined : { sessionId, holder: holder ?? "", expiresAtMs: Number(score) };
        }),
      listExpired: expired(false),
      claimExpired: expired(true),
    };
    this.rateLimiter = {
      tryTake: (rateKey: string, limit: RateLimit, count = 1) => {
        if (!(limit.ratePerSecond > 0) || !(limit.burst >= 1)) return Promise.reject(new MeshError("invalidArgument", "rate limit needs ratePerSecond > 0 and burst >= 1"));
        return guard(async () => (await scripts.tokenBucket.run(redis, [key(`rate:${digest(rateKey)}`), limit.ratePerSecond, limit.burst, options.clock.nowMs(), count])) === 1);
      },
    };
    const lockKey = (name: string) => key(`leader:${name}`);
    const counterKey = (name: string) => key(`leader:${name}:token`);
    const lockValue = (lease: LeaderLease) => `${lease.holder}|${lease.token}`;
    this.leaderLock = {
      tryAcquire: (name, holder, ttlMs) =>
        guard(async () => {
          const token = await scripts.lockAcquire.run(redis, [lockKey(name), counterKey(name), holder, ttlMs]);
          return typeof token === "number" ? { name, holder, token } : undefined;
        }),
      renew: (lease, ttlMs) => guard(async () => (await scripts.lockRenew.run(redis, [lockKey(lease.name), lockValue(lease), ttlMs])) === 1),
      release: (lease) => guard(async () => void (await scripts.lockRelease.run(redis, [lockKey(lease.name), lockValue(lease)]))),
      advanceToken: (lease, floor, ttlMs) =>
        guard(async () => {
          const token = await scripts.lockAdvance.run(redis, [lockKey(lease.name), counterKey(lease.name), lockValue(lease), lease.holder, floor, ttlMs]);
          return typeof token === "number" ? { ...lease, token } : undefined;
        }),
    };
  }

  /** Connects both connections; answers once Redis answered a PING and confirmed the wake-up subscription. */
  static async open(options: RedisCoordinationOptions): Promise<RedisCoordination> {
    const redis = new Redis(options.url, {
      commandTimeout: options.commandTimeoutMs ?? 2_000,
      // Fail a command after one reconnect attempt instead of queueing it for long:
      // a nonce check must answer, even if the answer is "unavailable".
      maxRetriesPerRequest: 1,
      connectTimeout: 5_000,
      retryStrategy: (attempt) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000),
    });
    redis.on("error", (error) => options.logger?.warn({ component: "coordination", err: error }, "redis connection error"));
    const coordination = new RedisCoordination(redis, options);
    try {
      await coordination.guard(() => redis.ping());
      await coordination.guard(() => withTimeout(coordination.subscribed, options.commandTimeoutMs ?? 2_000));
      return coordination;
    } catch (error) {
      await coordination.close();
      throw error;
    }
  }

  nonceCache(cacheOptions: { windowMs: number }): SharedNonceCache {
    return {
      checkAndRemember: (signer, nonce, issuedAtMs) =>
        this.guard(async () => {
          const ttlMs = Math.max(1, Math.ceil(issuedAtMs + cacheOptions.windowMs - this.options.clock.nowMs()));
          const nonceKey = `${this.prefix}nonce:${digest(`${signer}\n${Buffer.from(nonce).toString("base64")}`)}`;
          return (await this.redis.set(nonceKey, "1", "PX", ttlMs, "NX")) === "OK";
        }),
    };
  }

  async close(): Promise<void> {
    this.wakeListeners.clear();
    this.subscriber.disconnect();
    this.redis.disconnect();
  }

  private notifyWake(revision: number | undefined): void {
    for (const listener of this.wakeListeners) {
      try {
        listener(revision);
      } catch {
        // A hint only.
      }
    }
  }

  private async guard<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (error instanceof MeshError) throw error;
      this.options.logger?.error({ component: "coordination", err: error }, "redis coordination call failed");
      throw new MeshError("unavailable", "coordination store unavailable");
    }
  }
}

function withTimeout(promise: Promise<void>, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready within ${timeoutMs} ms`)), timeoutMs);
    promise.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** Keys of bounded length whatever the caller's identifiers look like. */
function digest(value: string): string {
  return createHash("sha256").update(value).digest("base64url");
}
