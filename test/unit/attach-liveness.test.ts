import { EventEmitter } from "node:events";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AttachHub, type AttachHubOptions } from "../../sdk/ts/src/core/dataplane/attach-hub.js";
import { dataFrame, pongFrame } from "../../sdk/ts/src/core/dataplane/frames.js";
import { hungRestartAfterMs, livenessTiming } from "../../sdk/ts/src/core/liveness.js";
import { type AttachResponse, type CallFrame, CallFrame_Kind, Invocation } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";

const heartbeatIntervalMs = 1000;

/** The server side of one Attach stream, in memory: what the hub writes, and a way to send as the agent. */
class FakeAttachCall extends EventEmitter {
  readonly written: AttachResponse[] = [];
  /** Answer every PING at once, as the SDKs must. */
  autoPong = false;

  write(message: AttachResponse): boolean {
    this.written.push(message);
    if (this.autoPong) for (const frame of message.calls) if (frame.kind === CallFrame_Kind.KIND_PING) this.send(pongFrame(frame.sequence));
    return true;
  }

  end(): void {}

  getPeer(): string {
    return "127.0.0.1:1";
  }

  send(...frames: CallFrame[]): void {
    this.emit("data", { msg: undefined, replies: frames });
  }

  get pings(): CallFrame[] {
    return this.written.flatMap((message) => message.calls).filter((frame) => frame.kind === CallFrame_Kind.KIND_PING);
  }
}

interface Attached {
  hub: AttachHub;
  call: FakeAttachCall;
  hung: Array<[string, number]>;
  responsive: string[];
}

async function attach(options: AttachHubOptions = { liveness: () => livenessTiming(heartbeatIntervalMs) }): Promise<Attached> {
  const hub = new AttachHub(options);
  const call = new FakeAttachCall();
  const hung: Array<[string, number]> = [];
  const responsive: string[] = [];
  hub.on("hung", (instanceId: string, silentMs: number) => hung.push([instanceId, silentMs]));
  hub.on("responsive", (instanceId: string) => responsive.push(instanceId));
  hub.attach(call as unknown as Parameters<AttachHub["attach"]>[0]);
  call.emit("data", { msg: { $case: "hello", value: { instanceId: "agent-a", manifest: undefined } }, replies: [] });
  await advance(0); // admit is async
  expect(hub.isAttached("agent-a")).toBe(true);
  return { hub, call, hung, responsive };
}

/**
 * Moves fake time on, then lets queued frames go out: the batcher writes on a real
 * setImmediate, so steps longer than a probe interval deliver their pings together.
 */
async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
  await new Promise((resolve) => setImmediate(resolve));
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
});

afterEach(() => {
  vi.useRealTimers();
});

describe("liveness timing", () => {
  it("derives the probe interval, the deadline and the restart bound from the heartbeat interval", () => {
    expect(livenessTiming(1000)).toEqual({ probeIntervalMs: 500, deadlineMs: 1500 });
    expect(livenessTiming(100)).toEqual({ probeIntervalMs: 50, deadlineMs: 150 });
    expect(hungRestartAfterMs(1000, 0)).toBe(10_000);
    expect(hungRestartAfterMs(1000, 2500)).toBe(2500);
  });
});

describe("Attach pings (AttachHub, fake timers)", () => {
  it("pings a quiet agent every half interval with call id 0 and a rising sequence; one that answers is never hung", async () => {
    const { hub, call, hung } = await attach();
    call.autoPong = true;
    for (let step = 0; step < 20; step += 1) await advance(500);
    const pings = call.pings;
    expect(pings).toHaveLength(20);
    expect(pings.map((ping) => ping.callId)).toEqual(Array(20).fill(0));
    expect(pings.map((ping) => ping.sequence)).toEqual(Array.from({ length: 20 }, (_, index) => index + 1));
    expect(hung).toEqual([]);
    expect(hub.isHung("agent-a")).toBe(false);
    hub.close();
  });

  it("finds an agent hung after 1.5 intervals without a frame, once, and responsive again at its first frame", async () => {
    const { hub, call, hung, responsive } = await attach();
    await advance(1499);
    expect(hung).toEqual([]);
    await advance(1);
    expect(hung).toEqual([["agent-a", 1500]]);
    expect(hub.isHung("agent-a")).toBe(true);

    // Still silent: no second report, but the probes go on so its recovery is seen.
    await advance(5000);
    expect(hung).toHaveLength(1);
    const lastPing = call.pings.at(-1) as CallFrame;
    expect(lastPing.sequence).toBe(13);

    call.send(pongFrame(lastPing.sequence));
    expect(responsive).toEqual(["agent-a"]);
    expect(hub.isHung("agent-a")).toBe(false);
    call.send(pongFrame(lastPing.sequence));
    expect(responsive).toHaveLength(1);
    hub.close();
  });

  it("sends no pings on a busy stream: replies to calls prove the agent answers", async () => {
    const { hub, call, hung } = await attach();
    for (let elapsedMs = 0; elapsedMs < 5000; elapsedMs += 100) {
      call.send(dataFrame(99, Buffer.from("late reply of a call given up"), { end: true }));
      await advance(100);
    }
    expect(call.pings).toEqual([]);
    expect(hung).toEqual([]);
    hub.close();
  });

  it("passes no verdict at a tick that fires late (the sidecar itself was stalled), and decides at the next one", async () => {
    const { hub, call, hung } = await attach();
    await advance(500);
    // The clock jumps while no timer runs: our own event loop was blocked for 3 s.
    vi.setSystemTime(Date.now() + 3000);
    await advance(500);
    expect(hung).toEqual([]);
    // The agent's answer was waiting in the socket all along.
    call.send(pongFrame(call.pings.at(-1)?.sequence ?? 0));
    await advance(1000);
    expect(hung).toEqual([]);
    await advance(1000);
    expect(hung).toEqual([["agent-a", 1500]]);
    hub.close();
  });

  it("keeps PONGs away from the calls in flight", async () => {
    const { hub, call } = await attach();
    const reply = hub.dispatch("agent-a", Invocation.fromPartial({ capability: "text.upper", version: "1.0.0" }));
    await advance(0);
    const open = call.written.flatMap((message) => message.calls).find((frame) => frame.kind === CallFrame_Kind.KIND_OPEN) as CallFrame;
    call.send({ ...pongFrame(1), callId: open.callId });
    expect(hub.inFlight("agent-a")).toBe(1);
    call.send(dataFrame(open.callId, Buffer.from("done"), { end: true }));
    await expect(reply).resolves.toMatchObject({ payload: Buffer.from("done") });
    hub.close();
  });

  it("pings nobody without a liveness option, and stops pinging an agent once it detaches", async () => {
    const quiet = await attach({});
    await advance(10_000);
    expect(quiet.call.pings).toEqual([]);
    expect(quiet.hung).toEqual([]);
    quiet.hub.close();

    const { hub, call } = await attach();
    await advance(1000);
    expect(call.pings).toHaveLength(2);
    hub.detach("agent-a");
    await advance(10_000);
    expect(call.pings).toHaveLength(2);
    expect(vi.getTimerCount()).toBe(0);
  });
});
