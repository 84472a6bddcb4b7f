import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { FrameBatcher } from "../../sdk/ts/src/core/dataplane/frame-batcher.js";
import { dataFrame, endFrame } from "../../sdk/ts/src/core/dataplane/frames.js";
import type { CallFrame } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";

class FakeStream extends EventEmitter {
  readonly messages: CallFrame[][] = [];
  accepting = true;
  write(message: { frames: CallFrame[] }): boolean {
    this.messages.push(message.frames);
    return this.accepting;
  }
}

/** Collects scheduled flushes so the test decides when "the end of this tick" is. */
class ManualSchedule {
  private readonly flushes: Array<() => void> = [];
  readonly schedule = (flush: () => void): void => {
    this.flushes.push(flush);
  };
  get pending(): number {
    return this.flushes.length;
  }
  runAll(): void {
    for (const flush of this.flushes.splice(0)) flush();
  }
}

function setup(options: { maxFramesPerMessage?: number; maxBytesPerMessage?: number } = {}) {
  const stream = new FakeStream();
  const tick = new ManualSchedule();
  const batcher = new FrameBatcher(stream, (frames) => ({ frames }), { ...options, schedule: tick.schedule });
  return { stream, tick, batcher };
}

const ids = (frames: CallFrame[] | undefined): number[] => (frames ?? []).map((frame) => frame.callId);

describe("FrameBatcher", () => {
  it("writes the frames pushed in one tick as one message, after the tick", () => {
    const { stream, tick, batcher } = setup();
    batcher.push(dataFrame(1, Buffer.from("a")));
    batcher.push(dataFrame(2, Buffer.from("b")));
    batcher.push(endFrame(3));
    expect(stream.messages).toHaveLength(0);
    expect(tick.pending).toBe(1);
    tick.runAll();
    expect(stream.messages.map(ids)).toEqual([[1, 2, 3]]);
    expect(batcher.stats).toEqual({ messagesWritten: 1, framesWritten: 3 });
  });

  it("starts a new message for frames pushed after a flush", () => {
    const { stream, tick, batcher } = setup();
    batcher.push(endFrame(1));
    tick.runAll();
    batcher.push(endFrame(2));
    batcher.push(endFrame(3));
    tick.runAll();
    expect(stream.messages.map(ids)).toEqual([[1], [2, 3]]);
  });

  it("splits a burst at maxFramesPerMessage", () => {
    const { stream, tick, batcher } = setup({ maxFramesPerMessage: 2 });
    for (let callId = 1; callId <= 5; callId += 1) batcher.push(endFrame(callId));
    tick.runAll();
    expect(stream.messages.map(ids)).toEqual([[1, 2], [3, 4], [5]]);
  });

  it("splits at maxBytesPerMessage and sends an oversized frame alone", () => {
    const { stream, tick, batcher } = setup({ maxBytesPerMessage: 1_000 });
    batcher.push(dataFrame(1, Buffer.alloc(400)));
    batcher.push(dataFrame(2, Buffer.alloc(400)));
    batcher.push(dataFrame(3, Buffer.alloc(5_000)));
    batcher.push(dataFrame(4, Buffer.alloc(10)));
    tick.runAll();
    expect(stream.messages.map(ids)).toEqual([[1, 2], [3], [4]]);
  });

  it("stops writing when the stream asks to wait, and resumes on drain", async () => {
    const { stream, tick, batcher } = setup({ maxFramesPerMessage: 1 });
    stream.accepting = false;
    batcher.push(endFrame(1));
    batcher.push(endFrame(2));
    tick.runAll();
    // The first write was refused: nothing more goes until 'drain'.
    expect(stream.messages.map(ids)).toEqual([[1]]);
    expect(batcher.isBlocked).toBe(true);
    batcher.push(endFrame(3));
    expect(tick.pending).toBe(0);
    expect(batcher.queuedFrames).toBe(2);

    let writable = false;
    const waiting = batcher.whenWritable().then(() => {
      writable = true;
    });
    await Promise.resolve();
    expect(writable).toBe(false);

    stream.accepting = true;
    stream.emit("drain");
    await waiting;
    expect(writable).toBe(true);
    expect(batcher.isBlocked).toBe(false);
    expect(stream.messages.map(ids)).toEqual([[1], [2], [3]]);
  });

  it("whenWritable resolves at once when not blocked", async () => {
    const { batcher } = setup();
    await expect(batcher.whenWritable()).resolves.toBeUndefined();
  });

  it("drops queued and later frames after close and releases waiters", async () => {
    const { stream, tick, batcher } = setup();
    stream.accepting = false;
    batcher.push(endFrame(1));
    tick.runAll();
    batcher.push(endFrame(2));
    const waiting = batcher.whenWritable();
    batcher.close();
    await waiting;
    batcher.push(endFrame(3));
    stream.accepting = true;
    stream.emit("drain");
    tick.runAll();
    expect(stream.messages.map(ids)).toEqual([[1]]);
    expect(batcher.queuedFrames).toBe(0);
  });
});
