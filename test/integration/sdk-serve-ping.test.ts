// The agent half of Attach liveness (docs/protocol.md): serve() answers each PING
// with a PONG of the same sequence, at once, even while a handler is busy.
import { once } from "node:events";
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { type Serving, serve } from "../../sdk/ts/src/agent/serve.js";
import { openFrame, pingFrame } from "../../sdk/ts/src/core/dataplane/frames.js";
import { type AttachRequest, type AttachResponse, type CallFrame, CallFrame_Kind, Invocation, SidecarServiceService } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";

let server: Server | undefined;
let serving: Serving | undefined;

afterEach(() => {
  serving?.close();
  server?.forceShutdown();
  serving = undefined;
  server = undefined;
});

/** A bare sidecar local port: welcomes the agent and hands the test the stream and every frame the agent sends. */
async function startSidecarPort(): Promise<{ address: string; attached: Promise<ServerDuplexStream<AttachRequest, AttachResponse>>; frames: CallFrame[] }> {
  const frames: CallFrame[] = [];
  let resolveAttached: (call: ServerDuplexStream<AttachRequest, AttachResponse>) => void = () => {};
  const attached = new Promise<ServerDuplexStream<AttachRequest, AttachResponse>>((resolve) => {
    resolveAttached = resolve;
  });
  server = new Server();
  server.addService(SidecarServiceService, {
    attach: (call: ServerDuplexStream<AttachRequest, AttachResponse>) => {
      call.on("data", (request: AttachRequest) => {
        if (request.msg?.$case === "hello") {
          call.write({ msg: { $case: "welcome", value: { instanceId: request.msg.value.instanceId } }, calls: [] });
          resolveAttached(call);
        }
        frames.push(...request.replies);
        call.emit("frames");
      });
      call.on("error", () => undefined);
    },
    invoke: () => {},
    invokeStream: () => {},
    discover: () => {},
    call: () => {},
  } as never);
  const port = await new Promise<number>((resolve, reject) =>
    (server as Server).bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return { address: `127.0.0.1:${port}`, attached, frames };
}

async function waitForFrame(call: ServerDuplexStream<AttachRequest, AttachResponse>, frames: CallFrame[], match: (frame: CallFrame) => boolean): Promise<CallFrame> {
  for (;;) {
    const found = frames.find(match);
    if (found) return found;
    await once(call, "frames");
  }
}

describe("SDK serve(): Attach pings", () => {
  it("answers a PING at once with a PONG of the same sequence and call id 0, while a handler is still busy", async () => {
    const { address, attached, frames } = await startSidecarPort();
    let handlerStarted: () => void = () => {};
    const started = new Promise<void>((resolve) => {
      handlerStarted = resolve;
    });
    serving = serve({
      sidecarAddress: address,
      instanceId: "agent-1",
      orphanTimeoutMs: 0,
      handlers: {
        "test.slow": () => {
          handlerStarted();
          return new Promise<string>(() => {}); // never answers
        },
      },
    });
    await serving.ready;
    const call = await attached;
    call.write({ msg: undefined, calls: [openFrame(1, { instanceId: "agent-1", invocation: Invocation.fromPartial({ capability: "test.slow", version: "1.0.0" }) }, false)] });
    await started;

    call.write({ msg: undefined, calls: [pingFrame(7)] });
    const pong = await waitForFrame(call, frames, (frame) => frame.kind === CallFrame_Kind.KIND_PONG);
    expect(pong).toMatchObject({ callId: 0, kind: CallFrame_Kind.KIND_PONG, sequence: 7, payload: Buffer.alloc(0), statusCode: 0 });

    call.write({ msg: undefined, calls: [pingFrame(8), pingFrame(9)] });
    await waitForFrame(call, frames, (frame) => frame.kind === CallFrame_Kind.KIND_PONG && frame.sequence === 9);
    expect(frames.filter((frame) => frame.kind === CallFrame_Kind.KIND_PONG).map((frame) => frame.sequence)).toEqual([7, 8, 9]);
    expect(frames.filter((frame) => frame.kind !== CallFrame_Kind.KIND_PONG)).toEqual([]);
  });
});
