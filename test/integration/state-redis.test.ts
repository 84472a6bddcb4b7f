import { rmSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManualClock, systemClock } from "../../sdk/ts/src/core/clock.js";
import { RedisCoordination } from "../../services/state/adapters/redis-coordination.js";
import { SqliteChangeLog } from "../../services/state/adapters/sqlite-change-log.js";
import { ChangeFollower } from "../../services/state/change-follower.js";
import type { FencingToken } from "../../services/state/ports.js";
import { LeaderElector } from "../../services/state/leader-election.js";
import { describeCoordination } from "../contract/coordination.js";
import { EventLog } from "../helpers/events.js";
import { ManualTimers } from "../helpers/manual-timers.js";
import { tempDir } from "../helpers/processes.js";
import { startRedis, type ThrowawayRedis } from "../helpers/redis.js";

let redis: ThrowawayRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.destroy();
});

describeCoordination("redis", async () => {
  const clock = new ManualClock();
  const keyPrefix = redis.keyPrefix();
  // Two connections with one prefix: two replicas on one Redis.
  const replicaA = await RedisCoordination.open({ url: redis.url, clock, keyPrefix });
  const replicaB = await RedisCoordination.open({ url: redis.url, clock, keyPrefix });
  return {
    replicaA,
    replicaB,
    clock,
    close: async () => {
      await replicaA.close();
      await replicaB.close();
    },
  };
});

describe("Redis coordination across a Redis restart", () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await redis.start();
  });

  /** Two replicas: each its own handle on one store (so a commit's local hint reaches only its own), its own Redis connections. */
  async function twoReplicas() {
    const dataDir = tempDir("agentmesh-state-");
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const keyPrefix = redis.keyPrefix();
    const replicas = [];
    for (const name of ["a", "b"]) {
      const log = await SqliteChangeLog.open({ dataDir });
      const coordination = await RedisCoordination.open({ url: redis.url, clock: systemClock, keyPrefix, commandTimeoutMs: 500 });
      cleanups.push(() => log.close(), () => coordination.close());
      replicas.push({ name, log, coordination });
    }
    return replicas as [(typeof replicas)[number], (typeof replicas)[number]];
  }

  it("catches up by revision on wake-ups published while Redis was down", async () => {
    const [writer, reader] = await twoReplicas();
    const clock = new ManualClock();
    // The poll timer never fires: only wake-ups move this follower.
    const applied = new EventLog<number>();
    const follower = new ChangeFollower({
      log: reader.log,
      prefix: "/registry/",
      wakeUps: reader.coordination.wakeUps,
      pollIntervalMs: 60_000,
      timers: new ManualTimers(clock),
      onSnapshot: ({ revision }) => applied.push(revision),
      onChanges: ({ revision }) => applied.push(revision),
    });
    cleanups.push(() => follower.close());
    await follower.start();
    const write = async (id: string) => {
      const result = await writer.log.txn([{ type: "put", key: `/registry/instances/${id}`, value: new Uint8Array([1]) }]);
      if (!result.ok) throw new Error("refused");
      await writer.coordination.wakeUps.publish(result.revision);
      return result.revision;
    };
    await applied.next((revision) => revision === 0);
    const first = await write("one");
    await applied.next((revision) => revision === first);

    await redis.stop();
    await write("two");
    const third = await write("three");
    expect(follower.position?.revision).toBe(first);

    await redis.start();
    // No publish after the restart: the subscriber's reconnection is the wake-up.
    await applied.next((revision) => revision === third, 10_000);
  });

  it("fails over the leader lock; the paused old leader's writes are fenced, even after Redis forgets its counter", async () => {
    const [first, second] = await twoReplicas();
    const elections = new EventLog<{ replica: string; fence: FencingToken }>();
    const demotions = new EventLog<string>();
    // The first replica's timers are manual and never advanced: once elected it is
    // "paused" (a stop-the-world GC, a frozen VM) and never renews.
    const pausedTimers = new ManualTimers(new ManualClock());
    const ttlMs = 300;
    const paused = new LeaderElector({ lock: first.coordination.leaderLock, log: first.log, name: "reconciler", holder: "replica-a", ttlMs, timers: pausedTimers, onElected: (fence) => elections.push({ replica: "a", fence }) });
    await paused.start();
    const elected = await elections.next(() => true);
    expect(elected.replica).toBe("a");
    const healthy = new LeaderElector({
      lock: second.coordination.leaderLock,
      log: second.log,
      name: "reconciler",
      holder: "replica-b",
      ttlMs,
      intervalMs: 50,
      onElected: (fence) => elections.push({ replica: "b", fence }),
      onDemoted: () => demotions.push("b"),
    });
    cleanups.push(() => healthy.stop());
    await healthy.start();
    const takeover = await elections.next((event) => event.replica === "b", 5_000);
    expect(takeover.fence.token).toBeGreaterThan(elected.fence.token);

    // The old leader still believes it leads; the store refuses it.
    expect(paused.state).toBe("leader");
    const stale = await first.log.txn([{ type: "put", key: "/deployments/web", value: new Uint8Array([1]) }], { fence: paused.fence as FencingToken });
    expect(stale).toEqual({ ok: false, reason: "fenced", fence: "reconciler", highestToken: takeover.fence.token });
    expect((await second.log.txn([{ type: "put", key: "/deployments/web", value: new Uint8Array([2]) }], { fence: healthy.fence as FencingToken })).ok).toBe(true);

    // Redis restarts empty (no persistence): the lock and its token counter are gone.
    await redis.restart();
    await demotions.next(() => true, 5_000);
    const reelected = await elections.next((event) => event.replica === "b", 10_000);
    expect(reelected.fence.token).toBeGreaterThan(takeover.fence.token);
    expect((await second.log.txn([{ type: "put", key: "/deployments/web", value: new Uint8Array([3]) }], { fence: reelected.fence })).ok).toBe(true);
    expect(await first.log.txn([{ type: "put", key: "/deployments/web", value: new Uint8Array([9]) }], { fence: takeover.fence })).toMatchObject({ ok: false, reason: "fenced" });
  });

  it("refuses to open with unavailable when Redis is not there", async () => {
    await redis.stop();
    await expect(RedisCoordination.open({ url: redis.url, clock: systemClock, commandTimeoutMs: 500 })).rejects.toMatchObject({ kind: "unavailable", message: "coordination store unavailable" });
  });

  it("answers unavailable while Redis is down: nonce checks and rate limits fail closed", async () => {
    const [replica] = await twoReplicas();
    const nonces = replica.coordination.nonceCache({ windowMs: 30_000 });
    await redis.stop();
    await expect(nonces.checkAndRemember("spiffe://mesh.local/agent/a", new Uint8Array(16), Date.now())).rejects.toMatchObject({ kind: "unavailable" });
    await expect(replica.coordination.rateLimiter.tryTake("spiffe://mesh.local/agent/a", { ratePerSecond: 1, burst: 1 })).rejects.toMatchObject({ kind: "unavailable" });
    await redis.start();
  });
});
