import { afterEach, describe, expect, it } from "vitest";
import type { ManualClock } from "../../sdk/ts/src/core/clock.js";
import type { Coordination } from "../../services/state/coordination-ports.js";
import { EventLog } from "../helpers/events.js";

export interface CoordinationHarness {
  /** Two replicas' views of one coordination service (the same object when in-process). */
  replicaA: Coordination;
  replicaB: Coordination;
  clock: ManualClock;
  close(): Promise<void>;
}

const nonce = (byte: number) => new Uint8Array(16).fill(byte);

/** The Coordination contract; the in-process and the Redis adapters run it unchanged. */
export function describeCoordination(adapterName: string, create: () => Promise<CoordinationHarness>): void {
  describe(`Coordination contract: ${adapterName}`, () => {
    let harness: CoordinationHarness | undefined;
    const open = async () => {
      harness = await create();
      return harness;
    };
    afterEach(async () => {
      await harness?.close();
      harness = undefined;
    });

    it("refuses a nonce replayed to another replica, per signer", async () => {
      const { replicaA, replicaB, clock } = await open();
      const cacheA = replicaA.nonceCache({ windowMs: 30_000 });
      const cacheB = replicaB.nonceCache({ windowMs: 30_000 });
      expect(await cacheA.checkAndRemember("spiffe://mesh.local/agent/a", nonce(1), clock.nowMs())).toBe(true);
      expect(await cacheB.checkAndRemember("spiffe://mesh.local/agent/a", nonce(1), clock.nowMs())).toBe(false);
      expect(await cacheA.checkAndRemember("spiffe://mesh.local/agent/a", nonce(1), clock.nowMs())).toBe(false);
      expect(await cacheB.checkAndRemember("spiffe://mesh.local/agent/b", nonce(1), clock.nowMs())).toBe(true);
      expect(await cacheB.checkAndRemember("spiffe://mesh.local/agent/a", nonce(2), clock.nowMs())).toBe(true);
    });

    it("lets exactly one of many racing replicas accept a nonce", async () => {
      const { replicaA, replicaB, clock } = await open();
      const caches = [replicaA.nonceCache({ windowMs: 30_000 }), replicaB.nonceCache({ windowMs: 30_000 })];
      const results = await Promise.all(Array.from({ length: 10 }, (_, index) => caches[index % 2]?.checkAndRemember("spiffe://mesh.local/agent/a", nonce(7), clock.nowMs())));
      expect(results.filter(Boolean)).toHaveLength(1);
    });

    it("lists a liveness lease as expired once nobody renews it, on every replica", async () => {
      const { replicaA, replicaB, clock } = await open();
      await replicaA.leases.renew("session-1", "replica-a", 1_000);
      await replicaA.leases.renew("session-2", "replica-a", 5_000);
      expect(await replicaB.leases.get("session-1")).toEqual({ sessionId: "session-1", holder: "replica-a", expiresAtMs: clock.nowMs() + 1_000 });
      expect(await replicaB.leases.listExpired(10)).toEqual([]);
      clock.advance(1_000);
      expect((await replicaB.leases.listExpired(10)).map((lease) => lease.sessionId)).toEqual(["session-1"]);
      // Renewing in time keeps it alive; listing does not remove.
      await replicaA.leases.renew("session-2", "replica-a", 5_000);
      clock.advance(4_500);
      expect((await replicaB.leases.listExpired(10)).map((lease) => lease.sessionId)).toEqual(["session-1"]);
    });

    it("hands each expired lease to exactly one claimer", async () => {
      const { replicaA, replicaB, clock } = await open();
      for (let index = 0; index < 6; index += 1) await replicaA.leases.renew(`session-${index}`, "replica-a", 100 + index);
      clock.advance(1_000);
      const [fromA, fromB] = await Promise.all([replicaA.leases.claimExpired(4), replicaB.leases.claimExpired(4)]);
      const claimed = [...(fromA ?? []), ...(fromB ?? [])].map((lease) => lease.sessionId).sort();
      expect(claimed).toEqual(["session-0", "session-1", "session-2", "session-3", "session-4", "session-5"]);
      expect(await replicaA.leases.listExpired(10)).toEqual([]);
      expect(await replicaA.leases.get("session-0")).toBeUndefined();
    });

    it("moves a lease with its sidecar: the old holder can no longer release it", async () => {
      const { replicaA, replicaB } = await open();
      await replicaA.leases.renew("session-1", "replica-a", 1_000);
      await replicaB.leases.renew("session-1", "replica-b", 1_000);
      expect(await replicaA.leases.release("session-1", "replica-a")).toBe(false);
      expect((await replicaA.leases.get("session-1"))?.holder).toBe("replica-b");
      expect(await replicaB.leases.release("session-1", "replica-b")).toBe(true);
      expect(await replicaA.leases.get("session-1")).toBeUndefined();
    });

    it("shares a rate limit across replicas and refills it with time", async () => {
      const { replicaA, replicaB, clock } = await open();
      const limit = { ratePerSecond: 2, burst: 3 };
      const identity = "spiffe://mesh.local/agent/a";
      const taken = [];
      for (let index = 0; index < 5; index += 1) taken.push(await (index % 2 === 0 ? replicaA : replicaB).rateLimiter.tryTake(identity, limit));
      expect(taken).toEqual([true, true, true, false, false]);
      expect(await replicaB.rateLimiter.tryTake("spiffe://mesh.local/agent/b", limit)).toBe(true);
      clock.advance(1_000);
      expect(await replicaB.rateLimiter.tryTake(identity, limit)).toBe(true);
      expect(await replicaA.rateLimiter.tryTake(identity, limit)).toBe(true);
      expect(await replicaA.rateLimiter.tryTake(identity, limit)).toBe(false);
      await expect(replicaA.rateLimiter.tryTake(identity, { ratePerSecond: 0, burst: 1 })).rejects.toMatchObject({ kind: "invalidArgument" });
    });

    it("gives the leader lock to one holder at a time, with a higher token at each acquisition", async () => {
      const { replicaA, replicaB } = await open();
      const first = await replicaA.leaderLock.tryAcquire("reconciler", "replica-a", 10_000);
      if (!first) throw new Error("not acquired");
      expect(await replicaB.leaderLock.tryAcquire("reconciler", "replica-b", 10_000)).toBeUndefined();
      expect(await replicaA.leaderLock.renew(first, 10_000)).toBe(true);
      await replicaA.leaderLock.release(first);
      const second = await replicaB.leaderLock.tryAcquire("reconciler", "replica-b", 10_000);
      expect(second?.token).toBeGreaterThan(first.token);
      expect(await replicaA.leaderLock.renew(first, 10_000)).toBe(false);
      // Releasing with a lease that is no longer held leaves the current holder alone.
      await replicaA.leaderLock.release(first);
      expect(await replicaA.leaderLock.tryAcquire("reconciler", "replica-a", 10_000)).toBeUndefined();
      expect(await replicaA.leaderLock.tryAcquire("other-lock", "replica-a", 10_000)).toBeDefined();
    });

    it("raises the token past a floor only for the current holder", async () => {
      const { replicaA, replicaB } = await open();
      const lease = await replicaA.leaderLock.tryAcquire("reconciler", "replica-a", 10_000);
      if (!lease) throw new Error("not acquired");
      const raised = await replicaA.leaderLock.advanceToken(lease, 41, 10_000);
      expect(raised?.token).toBe(42);
      if (!raised) throw new Error("not raised");
      expect(await replicaA.leaderLock.renew(lease, 10_000)).toBe(false);
      expect(await replicaA.leaderLock.renew(raised, 10_000)).toBe(true);
      expect(await replicaB.leaderLock.advanceToken({ name: "reconciler", holder: "replica-b", token: 42 }, 100, 10_000)).toBeUndefined();
      await replicaA.leaderLock.release(raised);
      expect((await replicaB.leaderLock.tryAcquire("reconciler", "replica-b", 10_000))?.token).toBe(43);
    });

    it("carries wake-ups from one replica to the other", async () => {
      const { replicaA, replicaB } = await open();
      const hints = new EventLog<number | undefined>();
      const stop = replicaB.wakeUps.subscribe((revision) => hints.push(revision));
      // A subscriber may first hear "read now" (undefined) for its own (re)connection.
      await replicaA.wakeUps.publish(17);
      await hints.next((revision) => revision === 17, 5_000);
      stop();
    });
  });
}
