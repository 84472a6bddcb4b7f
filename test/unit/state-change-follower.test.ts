import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MemoryChangeLog } from "../../services/state/adapters/memory-change-log.js";
import { ChangeFollower, type ChangeFollowerOptions } from "../../services/state/change-follower.js";
import type { ChangeLog } from "../../services/state/ports.js";
import { EventLog } from "../helpers/events.js";
import { ManualTimers } from "../helpers/manual-timers.js";

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined) => (value === undefined ? undefined : new TextDecoder().decode(value));

/** A projection of one prefix, as the registry will keep: key → value. */
function projection() {
  const state = new Map<string, string>();
  const log: string[] = [];
  const handlers: Pick<ChangeFollowerOptions, "onSnapshot" | "onChanges"> = {
    onSnapshot: ({ revision, items }) => {
      state.clear();
      for (const item of items) state.set(item.key, text(item.value) ?? "");
      log.push(`snapshot@${revision}`);
    },
    onChanges: ({ revision, changes }) => {
      for (const change of changes) {
        if (change.value === undefined) state.delete(change.key);
        else state.set(change.key, text(change.value) ?? "");
      }
      log.push(`changes@${revision}:${changes.length}`);
    },
  };
  return { state, log, handlers };
}

describe("ChangeFollower", () => {
  const followers: ChangeFollower[] = [];
  afterEach(async () => {
    for (const follower of followers.splice(0)) await follower.close();
  });

  function follow(log: ChangeLog, handlers: Pick<ChangeFollowerOptions, "onSnapshot" | "onChanges">, timers = new ManualTimers(new ManualClock())) {
    const follower = new ChangeFollower({ log, prefix: "/registry/", pollIntervalMs: 1_000, timers, ...handlers });
    followers.push(follower);
    return follower;
  }

  it("loads a snapshot, then applies each later commit of its prefix in order", async () => {
    const log = new MemoryChangeLog();
    await log.txn([{ type: "put", key: "/registry/instances/a", value: bytes("1") }, { type: "put", key: "/deployments/web", value: bytes("x") }]);
    const { state, log: applied, handlers } = projection();
    const follower = follow(log, handlers);
    await follower.start();
    expect(follower.position).toEqual({ epoch: log.epoch, revision: 1 });
    await log.txn([{ type: "put", key: "/registry/instances/b", value: bytes("2") }]);
    await log.txn([{ type: "put", key: "/deployments/api", value: bytes("y") }]);
    const deleted = await log.txn([{ type: "delete", key: "/registry/instances/a" }]);
    await follower.waitForRevision(deleted.ok ? deleted.revision : -1);
    expect([...state]).toEqual([["/registry/instances/b", "2"]]);
    // The other prefix's commit moved the position without a call.
    expect(applied).toEqual(["snapshot@1", "changes@2:1", "changes@4:1"]);
  });

  it("resumes exactly from a position of the same epoch, without a snapshot", async () => {
    const log = new MemoryChangeLog();
    await log.txn([{ type: "put", key: "/registry/instances/a", value: bytes("1") }]);
    await log.txn([{ type: "put", key: "/registry/instances/b", value: bytes("2") }]);
    const { log: applied, handlers } = projection();
    await follow(log, handlers).start({ epoch: log.epoch, revision: 1 });
    expect(applied).toEqual(["changes@2:1"]);
  });

  it.each([
    ["another epoch", async (_log: ChangeLog) => ({ epoch: "old-store", revision: 1 })],
    ["a revision the store never reached", async (log: ChangeLog) => ({ epoch: log.epoch, revision: 99 })],
    [
      "a compacted revision",
      async (log: ChangeLog) => {
        await log.compact(3);
        return { epoch: log.epoch, revision: 1 };
      },
    ],
  ])("rebuilds from a snapshot when resuming from %s", async (_name, position) => {
    const log = new MemoryChangeLog();
    await log.txn([{ type: "put", key: "/registry/instances/a", value: bytes("1") }]);
    await log.txn([{ type: "put", key: "/registry/instances/b", value: bytes("2") }]);
    await log.txn([{ type: "put", key: "/registry/instances/c", value: bytes("3") }]);
    const { state, log: applied, handlers } = projection();
    state.set("/registry/instances/stale", "left over from the old store");
    const follower = follow(log, handlers);
    await follower.start(await position(log));
    expect(applied).toEqual(["snapshot@3"]);
    expect([...state.keys()]).toEqual(["/registry/instances/a", "/registry/instances/b", "/registry/instances/c"]);
    expect(follower.position).toEqual({ epoch: log.epoch, revision: 3 });
  });

  it("catches up on its poll when no hint arrives, and again after a failed read", async () => {
    const store = new MemoryChangeLog();
    const reads = new EventLog<"ok" | "failed">();
    let failNext = false;
    // Another replica's view of the store: it never hears the commits (no onChange),
    // so only its poll finds them; one read fails, as during a database outage.
    const replica: ChangeLog = {
      epoch: store.epoch,
      txn: (ops, options) => store.txn(ops, options),
      get: (key) => store.get(key),
      range: (prefix) => store.range(prefix),
      changesSince: async (after, options) => {
        if (failNext) {
          failNext = false;
          reads.push("failed");
          throw new Error("connection reset");
        }
        const page = await store.changesSince(after, options);
        reads.push("ok");
        return page;
      },
      currentRevision: () => store.currentRevision(),
      compact: (before) => store.compact(before),
      onChange: () => () => undefined,
      close: () => store.close(),
    };
    const timers = new ManualTimers(new ManualClock());
    const { state, handlers } = projection();
    const follower = follow(replica, handlers, timers);
    await follower.start();
    await reads.next((read) => read === "ok");
    await store.txn([{ type: "put", key: "/registry/instances/a", value: bytes("1") }]);
    failNext = true;
    timers.advance(1_000);
    await reads.next((read) => read === "failed");
    expect(state.size).toBe(0);
    timers.advance(1_000);
    await reads.next((read) => read === "ok");
    await follower.waitForRevision(1);
    expect([...state]).toEqual([["/registry/instances/a", "1"]]);
  });

  it("times out a wait for a revision that never comes", async () => {
    const log = new MemoryChangeLog();
    const timers = new ManualTimers(new ManualClock());
    const follower = follow(log, projection().handlers, timers);
    await follower.start();
    const waiting = follower.waitForRevision(5, 2_000);
    timers.advance(2_000);
    await expect(waiting).rejects.toMatchObject({ kind: "unavailable" });
  });
});
