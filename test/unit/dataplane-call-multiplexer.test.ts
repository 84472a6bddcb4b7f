import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { CallMultiplexer } from "../../sdk/ts/src/core/dataplane/call-multiplexer.js";
import { CallStatusError } from "../../sdk/ts/src/core/dataplane/call-status.js";
import { CallTable } from "../../sdk/ts/src/core/dataplane/call-table.js";
import { dataFrame, endFrame } from "../../sdk/ts/src/core/dataplane/frames.js";
import type { TimerHandle, Timers } from "../../sdk/ts/src/core/dataplane/timers.js";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { type CallFrame, CallFrame_Kind } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";

/** Timers driven by a ManualClock: advance() fires what became due. */
class ManualTimers implements Timers {
  private readonly pending = new Map<number, { dueMs: number; callback: () => void }>();
  private nextHandle = 1;
  constructor(private readonly clock: ManualClock) {}
  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const handle = this.nextHandle++;
    this.pending.set(handle, { dueMs: this.clock.nowMs() + delayMs, callback });
    return handle;
  }
  clearTimeout(handle: TimerHandle): void {
    this.pending.delete(handle as number);
  }
  get armed(): number {
    return this.pending.size;
  }
  advance(ms: number): void {
    this.clock.advance(ms);
    for (const [handle, timer] of [...this.pending]) {
      if (timer.dueMs <= this.clock.nowMs()) {
        this.pending.delete(handle);
        timer.callback();
      }
    }
  }
}

function setup(windowSize = 4, maxBufferedChunks = 8) {
  const clock = new ManualClock();
  const timers = new ManualTimers(clock);
  const sent: CallFrame[] = [];
  const calls = new CallMultiplexer({ send: (frame) => sent.push(frame), windowSize, maxBufferedChunks, clock, timers });
  const kinds = () => sent.map((frame) => [frame.callId, CallFrame_Kind[frame.kind]]);
  return { clock, timers, sent, calls, kinds };
}

const open = { instanceId: "instance-1", payload: Buffer.from("request") };

describe("CallTable", () => {
  it("allocates increasing ids from 1 and never reuses a freed one", () => {
    const table = new CallTable<number>(2);
    const first = table.add((callId) => callId);
    const second = table.add((callId) => callId);
    expect([first, second]).toEqual([1, 2]);
    expect(table.full).toBe(true);
    table.delete(first);
    expect(table.add((callId) => callId)).toBe(3);
  });

  it("refuses a call when the window is full with overLimit", () => {
    const table = new CallTable<number>(1);
    table.add((callId) => callId);
    expect(() => table.add((callId) => callId)).toThrowError(new MeshError("overLimit", "tunnel window full"));
    expect(table.size).toBe(1);
  });

  it("takeAll empties the table", () => {
    const table = new CallTable<number>(3);
    table.add((callId) => callId * 10);
    table.add((callId) => callId * 10);
    expect(table.takeAll()).toEqual([10, 20]);
    expect(table.size).toBe(0);
    expect(table.get(1)).toBeUndefined();
  });

  it.each([0, -1, 1.5, Number.NaN])("rejects window size %s", (capacity) => {
    expect(() => new CallTable(capacity)).toThrowError(MeshError);
  });
});

describe("CallMultiplexer", () => {
  it("matches replies to callers by call id, in any order", async () => {
    const { calls, sent } = setup();
    const first = calls.unary(open);
    const second = calls.unary(open);
    expect(sent.map((frame) => [frame.callId, frame.kind, frame.instanceId])).toEqual([
      [1, CallFrame_Kind.KIND_OPEN, "instance-1"],
      [2, CallFrame_Kind.KIND_OPEN, "instance-1"],
    ]);
    calls.receive(dataFrame(2, Buffer.from("two"), { end: true, contentType: "text/plain" }));
    calls.receive(dataFrame(1, Buffer.from("one"), { end: true }));
    await expect(first).resolves.toEqual({ payload: Buffer.from("one"), contentType: "" });
    await expect(second).resolves.toEqual({ payload: Buffer.from("two"), contentType: "text/plain" });
    expect(calls.inFlight).toBe(0);
  });

  it("joins a unary reply sent as several DATA frames ended by END", async () => {
    const { calls } = setup();
    const reply = calls.unary(open);
    calls.receive(dataFrame(1, Buffer.from("ab"), { sequence: 1 }));
    calls.receive(dataFrame(1, Buffer.from("cd"), { sequence: 2 }));
    calls.receive(endFrame(1));
    await expect(reply).resolves.toMatchObject({ payload: Buffer.from("abcd") });
  });

  it("refuses the call beyond the window with overLimit, and takes calls again once one finishes", async () => {
    const { calls, sent } = setup(2);
    const first = calls.unary(open);
    void calls.unary(open);
    await expect(calls.unary(open)).rejects.toMatchObject({ kind: "overLimit", code: status.RESOURCE_EXHAUSTED });
    expect(sent).toHaveLength(2);
    calls.receive(dataFrame(1, Buffer.alloc(0), { end: true }));
    await first;
    void calls.unary(open);
    expect(sent.map((frame) => frame.callId)).toEqual([1, 2, 3]);
  });

  it("sends CANCEL and fails with deadlineExceeded when the deadline passes; a late reply is dropped", async () => {
    const { calls, clock, timers, kinds } = setup();
    const reply = calls.unary(open, { deadlineMs: clock.nowMs() + 100 });
    timers.advance(99);
    expect(kinds()).toEqual([[1, "KIND_OPEN"]]);
    timers.advance(1);
    await expect(reply).rejects.toEqual(new MeshError("deadlineExceeded", "deadline exceeded"));
    expect(kinds()).toEqual([
      [1, "KIND_OPEN"],
      [1, "KIND_CANCEL"],
    ]);
    expect(calls.inFlight).toBe(0);
    calls.receive(dataFrame(1, Buffer.from("late"), { end: true }));
    expect(calls.inFlight).toBe(0);
  });

  it("fails at once without opening when the deadline already passed", async () => {
    const { calls, clock, sent } = setup();
    await expect(calls.unary(open, { deadlineMs: clock.nowMs() })).rejects.toMatchObject({ kind: "deadlineExceeded" });
    expect(sent).toHaveLength(0);
  });

  it("clears the deadline timer when the reply arrives", async () => {
    const { calls, clock, timers } = setup();
    const reply = calls.unary(open, { deadlineMs: clock.nowMs() + 100 });
    expect(timers.armed).toBe(1);
    calls.receive(endFrame(1));
    await reply;
    expect(timers.armed).toBe(0);
  });

  it("sends CANCEL and fails with cancelled when the signal aborts", async () => {
    const { calls, kinds } = setup();
    const controller = new AbortController();
    const reply = calls.unary(open, { signal: controller.signal });
    controller.abort();
    await expect(reply).rejects.toMatchObject({ kind: "cancelled", code: status.CANCELLED });
    expect(kinds()).toEqual([
      [1, "KIND_OPEN"],
      [1, "KIND_CANCEL"],
    ]);
  });

  it("does not open a call whose signal already aborted", async () => {
    const { calls, sent } = setup();
    await expect(calls.unary(open, { signal: AbortSignal.abort() })).rejects.toMatchObject({ kind: "cancelled" });
    expect(sent).toHaveLength(0);
  });

  it.each([
    [status.RESOURCE_EXHAUSTED, "tunnel concurrency limit reached", MeshError],
    [status.PERMISSION_DENIED, "caller not allowed", MeshError],
    [status.UNAVAILABLE, "agent detached", MeshError],
    [status.INTERNAL, "internal error, call 1", CallStatusError],
    [status.UNIMPLEMENTED, "no such capability", CallStatusError],
  ])("maps END status %s to an error carrying that code", async (code, message, errorClass) => {
    const { calls } = setup();
    const reply = calls.unary(open);
    calls.receive(endFrame(1, code, message));
    const error = await reply.catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(errorClass);
    expect(error).toMatchObject({ code, message });
  });

  it("failAll fails every call in flight without CANCEL frames and frees the window", async () => {
    const { calls, sent } = setup(4);
    const replies = [calls.unary(open), calls.unary(open), calls.unary(open)];
    const streamed = calls.stream(open);
    calls.failAll(new MeshError("unavailable", "tunnel to peer broke"));
    for (const reply of replies) await expect(reply).rejects.toMatchObject({ kind: "unavailable" });
    await expect(streamed.next()).rejects.toMatchObject({ kind: "unavailable" });
    expect(sent.every((frame) => frame.kind === CallFrame_Kind.KIND_OPEN)).toBe(true);
    expect(calls.inFlight).toBe(0);
  });

  it("streams chunks in order and ends on END", async () => {
    const { calls, sent } = setup();
    const chunks = calls.stream(open);
    expect(sent[0]?.streaming).toBe(true);
    calls.receive(dataFrame(1, Buffer.from("a"), { sequence: 1 }));
    calls.receive(dataFrame(1, Buffer.from("b"), { sequence: 2 }));
    calls.receive(endFrame(1));
    const received: string[] = [];
    for await (const chunk of chunks) received.push(chunk.toString());
    expect(received).toEqual(["a", "b"]);
    expect(calls.inFlight).toBe(0);
  });

  it("delivers chunks received before a failing END, then throws", async () => {
    const { calls } = setup();
    const chunks = calls.stream(open);
    calls.receive(dataFrame(1, Buffer.from("a"), { sequence: 1 }));
    calls.receive(endFrame(1, status.NOT_FOUND, "gone"));
    await expect(chunks.next()).resolves.toEqual({ value: Buffer.from("a"), done: false });
    await expect(chunks.next()).rejects.toMatchObject({ kind: "notFound" });
    await expect(chunks.next()).resolves.toEqual({ value: undefined, done: true });
  });

  it("sends CANCEL when the consumer leaves a stream early", async () => {
    const { calls, kinds } = setup();
    const chunks = calls.stream(open);
    calls.receive(dataFrame(1, Buffer.from("a"), { sequence: 1 }));
    for await (const chunk of chunks) {
      expect(chunk.toString()).toBe("a");
      break;
    }
    expect(kinds()).toEqual([
      [1, "KIND_OPEN"],
      [1, "KIND_CANCEL"],
    ]);
    expect(calls.inFlight).toBe(0);
  });

  it("cancels a stream whose unread chunks pass the buffer limit", async () => {
    const { calls, kinds } = setup(4, 2);
    const chunks = calls.stream(open);
    for (let sequence = 1; sequence <= 3; sequence += 1) calls.receive(dataFrame(1, Buffer.from("x"), { sequence }));
    expect(kinds()).toEqual([
      [1, "KIND_OPEN"],
      [1, "KIND_CANCEL"],
    ]);
    let count = 0;
    await expect(
      (async () => {
        for await (const _chunk of chunks) count += 1;
      })(),
    ).rejects.toMatchObject({ kind: "overLimit", message: "stream reply buffer full" });
    expect(count).toBe(3);
  });
});
