import { status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CallStatusError } from "../../sdk/ts/src/core/dataplane/call-status.js";
import { systemTimers } from "../../sdk/ts/src/core/dataplane/timers.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { type CallOutcome, OutlierDetector, classifyOutcome } from "../../sidecar/outlier-detector.js";

interface Recorded {
  detector: OutlierDetector;
  events: string[];
  vetoed: Set<string>;
}

function detector(): Recorded {
  const events: string[] = [];
  const vetoed = new Set<string>();
  const created = new OutlierDetector({
    consecutiveTimeouts: 3,
    baseEjectionMs: () => 1000,
    maxEjectionMs: 2500,
    timers: systemTimers,
    mayEject: (instanceId) => !vetoed.has(instanceId),
    onEject: (instanceId, reason, ejectionMs) => events.push(`eject ${instanceId} for ${ejectionMs} ms: ${reason}`),
    onReturn: (instanceId) => events.push(`return ${instanceId}`),
  });
  return { detector: created, events, vetoed };
}

function record(target: OutlierDetector, instanceId: string, ...outcomes: CallOutcome[]): void {
  for (const outcome of outcomes) target.record(instanceId, outcome);
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("OutlierDetector (fake timers)", () => {
  it("ejects an instance after N timeouts in a row, for the ejection time, then lets it back", async () => {
    const { detector: outliers, events } = detector();
    record(outliers, "a", "timedOut", "timedOut");
    expect(outliers.isEjected("a")).toBe(false);
    record(outliers, "a", "timedOut");
    expect(events).toEqual(["eject a for 1000 ms: outlier: 3 calls in a row timed out"]);
    expect(outliers.isEjected("a")).toBe(true);
    // Calls that were in flight time out too: no second ejection.
    record(outliers, "a", "timedOut", "timedOut", "timedOut");
    await vi.advanceTimersByTimeAsync(999);
    expect(outliers.isEjected("a")).toBe(true);
    await vi.advanceTimersByTimeAsync(1);
    expect(events.at(-1)).toBe("return a");
    expect(outliers.isEjected("a")).toBe(false);
  });

  it("starts the count over at any answer, and ignores what says nothing about the agent", () => {
    const { detector: outliers, events } = detector();
    record(outliers, "a", "timedOut", "timedOut", "answered", "timedOut", "timedOut", "ignored", "ignored");
    expect(events).toEqual([]);
    record(outliers, "a", "timedOut");
    expect(events).toHaveLength(1);
  });

  it("keeps instances apart", () => {
    const { detector: outliers, events } = detector();
    record(outliers, "a", "timedOut", "timedOut");
    record(outliers, "b", "timedOut", "timedOut", "answered");
    record(outliers, "a", "timedOut");
    record(outliers, "b", "timedOut");
    expect(events).toEqual(["eject a for 1000 ms: outlier: 3 calls in a row timed out"]);
  });

  it("ejects for longer each time in a row (up to the ceiling), and from the base again once it answered after a return", async () => {
    const { detector: outliers, events } = detector();
    record(outliers, "a", "timedOut", "timedOut", "timedOut");
    await vi.advanceTimersByTimeAsync(1000);
    record(outliers, "a", "timedOut", "timedOut", "timedOut");
    await vi.advanceTimersByTimeAsync(2000);
    record(outliers, "a", "timedOut", "timedOut", "timedOut");
    await vi.advanceTimersByTimeAsync(2500);
    record(outliers, "a", "answered", "timedOut", "timedOut", "timedOut");
    expect(events.filter((event) => event.startsWith("eject")).map((event) => event.split(":")[0])).toEqual([
      "eject a for 1000 ms",
      "eject a for 2000 ms",
      "eject a for 2500 ms",
      "eject a for 1000 ms",
    ]);
  });

  it("does not eject when vetoed (the last routable instance of its agent), and keeps counting", () => {
    const { detector: outliers, events, vetoed } = detector();
    vetoed.add("a");
    record(outliers, "a", "timedOut", "timedOut", "timedOut", "timedOut");
    expect(events).toEqual([]);
    vetoed.delete("a");
    record(outliers, "a", "timedOut");
    expect(events).toHaveLength(1);
  });

  it("forgets an instance (restarted, or gone) without a return callback", async () => {
    const { detector: outliers, events } = detector();
    record(outliers, "a", "timedOut", "timedOut", "timedOut");
    outliers.forget("a");
    expect(outliers.isEjected("a")).toBe(false);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(events).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("classifyOutcome", () => {
  const deadlineMs = 10_000;
  it.each<{ what: string; error: unknown; nowMs: number; callDeadlineMs?: number; expected: CallOutcome }>([
    { what: "a reply", error: undefined, nowMs: 5000, expected: "answered" },
    { what: "the agent's own error", error: new CallStatusError(status.INTERNAL, "agent failed"), nowMs: 5000, expected: "answered" },
    { what: "the agent's NOT_FOUND", error: new MeshError("notFound", "capability x not served here"), nowMs: 5000, expected: "answered" },
    { what: "our deadline", error: new MeshError("deadlineExceeded", "deadline exceeded"), nowMs: 10_000, expected: "timedOut" },
    { what: "the caller's cancel at its deadline", error: new MeshError("cancelled", "call cancelled"), nowMs: 9950, expected: "timedOut" },
    { what: "the caller's cancel long before its deadline", error: new MeshError("cancelled", "call cancelled"), nowMs: 5000, expected: "ignored" },
    { what: "a cancel of a call without deadline", error: new MeshError("cancelled", "call cancelled"), nowMs: 5000, callDeadlineMs: 0, expected: "ignored" },
    { what: "the agent detached", error: new MeshError("unavailable", "agent detached"), nowMs: 5000, expected: "ignored" },
    { what: "the in-flight window", error: new MeshError("overLimit", "agent in-flight limit reached"), nowMs: 5000, expected: "ignored" },
    { what: "something unknown", error: new Error("boom"), nowMs: 5000, expected: "ignored" },
  ])("$what → $expected", ({ error, nowMs, callDeadlineMs, expected }) => {
    expect(classifyOutcome(error, callDeadlineMs ?? deadlineMs, nowMs)).toBe(expected);
  });
});
