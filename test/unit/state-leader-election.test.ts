import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { InProcessCoordination } from "../../services/state/adapters/in-process-coordination.js";
import { MemoryChangeLog } from "../../services/state/adapters/memory-change-log.js";
import type { LeaderLock } from "../../services/state/coordination-ports.js";
import { LeaderElector } from "../../services/state/leader-election.js";
import type { ChangeLog, FencingToken } from "../../services/state/ports.js";
import { ManualTimers } from "../helpers/manual-timers.js";

const ttlMs = 3_000;
const write = (log: ChangeLog, fence: FencingToken | undefined) => log.txn([{ type: "put", key: "/deployments/web", value: new Uint8Array([1]) }], fence ? { fence } : {});

describe("LeaderElector", () => {
  const electors: LeaderElector[] = [];
  afterEach(async () => {
    for (const elector of electors.splice(0)) await elector.stop();
  });

  function elector(lock: LeaderLock, log: ChangeLog, holder: string, timers: ManualTimers, events: string[] = []) {
    const created = new LeaderElector({
      lock,
      log,
      name: "reconciler",
      holder,
      ttlMs,
      timers,
      onElected: (fence) => events.push(`${holder} elected ${fence.token}`),
      onDemoted: () => events.push(`${holder} demoted`),
    });
    electors.push(created);
    return created;
  }

  it("elects one leader and claims its token in the store at once", async () => {
    const clock = new ManualClock();
    const coordination = new InProcessCoordination(clock);
    const log = new MemoryChangeLog();
    const events: string[] = [];
    const a = elector(coordination.leaderLock, log, "a", new ManualTimers(clock), events);
    const b = elector(coordination.leaderLock, log, "b", new ManualTimers(clock), events);
    await a.start();
    await b.start();
    expect(events).toEqual(["a elected 1"]);
    expect([a.state, b.state]).toEqual(["leader", "follower"]);
    expect(a.fence).toEqual({ name: "reconciler", token: 1 });
    expect(b.fence).toBeUndefined();
  });

  it("moves leadership when the leader pauses; the paused leader's writes are fenced", async () => {
    const clock = new ManualClock();
    const coordination = new InProcessCoordination(clock);
    const log = new MemoryChangeLog();
    const events: string[] = [];
    const pausedTimers = new ManualTimers(clock);
    const timersB = new ManualTimers(clock);
    const a = elector(coordination.leaderLock, log, "a", pausedTimers, events);
    const b = elector(coordination.leaderLock, log, "b", timersB, events);
    await a.start();
    await b.start();
    const stale = a.fence;
    // a's timers never fire again (paused); b keeps trying every ttl/3.
    for (let step = 0; step < 4 && b.state === "follower"; step += 1) {
      timersB.advance(ttlMs / 3);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(events).toEqual(["a elected 1", "b elected 2"]);
    expect(a.state).toBe("leader");
    expect(await write(log, stale)).toEqual({ ok: false, reason: "fenced", fence: "reconciler", highestToken: 2 });
    expect((await write(log, b.fence)).ok).toBe(true);
  });

  it("steps down when a renewal fails, and hands over at once when stopped", async () => {
    const clock = new ManualClock();
    const coordination = new InProcessCoordination(clock);
    const log = new MemoryChangeLog();
    const events: string[] = [];
    const timersA = new ManualTimers(clock);
    const timersB = new ManualTimers(clock);
    const a = elector(coordination.leaderLock, log, "a", timersA, events);
    const b = elector(coordination.leaderLock, log, "b", timersB, events);
    await a.start();
    await b.start();
    // A lock lost behind a's back (expired during a long pause): the next renewal demotes it.
    const lease = await coordination.leaderLock.tryAcquire("reconciler", "a", ttlMs);
    expect(lease).toBeUndefined();
    clock.advance(ttlMs);
    timersA.advance(0);
    await new Promise((resolve) => setImmediate(resolve));
    expect(events).toContain("a demoted");
    timersB.advance(0);
    await new Promise((resolve) => setImmediate(resolve));
    expect(events.at(-1)).toBe("b elected 2");
    await b.stop();
    expect(events.at(-1)).toBe("b demoted");
    timersA.advance(ttlMs / 3);
    await new Promise((resolve) => setImmediate(resolve));
    expect(events.at(-1)).toBe("a elected 3");
  });

  it("raises its token past the store's when the lock lost its counter", async () => {
    const clock = new ManualClock();
    const log = new MemoryChangeLog();
    await log.txn([], { fence: { name: "reconciler", token: 7 } });
    // A fresh lock service (Redis restarted empty) starts counting at 1 again.
    const coordination = new InProcessCoordination(clock);
    const events: string[] = [];
    const a = elector(coordination.leaderLock, log, "a", new ManualTimers(clock), events);
    await a.start();
    expect(events).toEqual(["a elected 8"]);
    expect((await write(log, a.fence)).ok).toBe(true);
  });
});
