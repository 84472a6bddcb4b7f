import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { InProcessCoordination } from "../../services/state/adapters/in-process-coordination.js";
import { MemoryChangeLog } from "../../services/state/adapters/memory-change-log.js";
import { relayCommits } from "../../services/state/wake-up-relay.js";
import { describeCoordination } from "../contract/coordination.js";

describeCoordination("in-process", async () => {
  const clock = new ManualClock();
  const coordination = new InProcessCoordination(clock);
  return { replicaA: coordination, replicaB: coordination, clock, close: () => coordination.close() };
});

describe("relayCommits", () => {
  it("publishes each commit's revision after it committed, and stops when told", async () => {
    const coordination = new InProcessCoordination(new ManualClock());
    const log = new MemoryChangeLog();
    const heard: Array<{ revision: number | undefined; readable: Promise<boolean> }> = [];
    // Whatever a hint names must already be readable when it arrives.
    coordination.wakeUps.subscribe((revision) =>
      heard.push({ revision, readable: log.changesSince((revision ?? 1) - 1).then((page) => page.kind === "changes" && page.changes[0]?.revision === revision) }),
    );
    const stop = relayCommits(log, coordination.wakeUps);
    await log.txn([{ type: "put", key: "/a", value: new Uint8Array([1]) }]);
    await log.txn([{ type: "put", key: "/b", value: new Uint8Array([1]) }]);
    stop();
    await log.txn([{ type: "put", key: "/c", value: new Uint8Array([1]) }]);
    expect(heard.map((hint) => hint.revision)).toEqual([1, 2]);
    expect(await Promise.all(heard.map((hint) => hint.readable))).toEqual([true, true]);
  });
});
