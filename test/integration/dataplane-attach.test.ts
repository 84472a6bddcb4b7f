import { EventEmitter, once } from "node:events";
import {
  type ClientDuplexStream,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceError,
  type sendUnaryData,
  credentials,
  status,
} from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { AgentClientPool } from "../../sdk/ts/src/core/dataplane/agent-client.js";
import { AttachHub, type AttachHubOptions } from "../../sdk/ts/src/core/dataplane/attach-hub.js";
import { TunnelClient } from "../../sdk/ts/src/core/dataplane/tunnel-client.js";
import { TunnelServer } from "../../sdk/ts/src/core/dataplane/tunnel-server.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import {
  type AgentServiceInvokeRequest,
  type AgentServiceInvokeResponse,
  type AgentServiceInvokeStreamRequest,
  type AgentServiceInvokeStreamResponse,
  AgentServiceService,
  type AttachRequest,
  type AttachResponse,
  CallFrame,
  CallFrame_Kind,
  Invocation,
  SidecarServiceClient,
  SidecarServiceService,
} from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";

const servers: Server[] = [];
const closers: Array<() => void> = [];

afterEach(() => {
  for (const close of closers.splice(0)) close();
  for (const server of servers.splice(0)) server.forceShutdown();
});

async function listen(server: Server): Promise<number> {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) =>
      error === null ? resolve(bound) : reject(error),
    ),
  );
  servers.push(server);
  return port;
}

const unimplemented = (_call: unknown, callback: sendUnaryData<never>): void =>
  callback({ code: status.UNIMPLEMENTED, details: "not in this test" } as ServiceError, null);

/** The sidecar's local port with only Attach wired. */
async function startLocalPort(options: AttachHubOptions = {}): Promise<{ hub: AttachHub; port: number }> {
  const hub = new AttachHub(options);
  closers.push(() => hub.close());
  const server = new Server();
  server.addService(SidecarServiceService, {
    attach: hub.attach,
    invoke: unimplemented,
    discover: unimplemented,
    invokeStream: (call: ServerWritableStream<unknown, unknown>) =>
      call.emit("error", { code: status.UNIMPLEMENTED, details: "not in this test" }),
  });
  return { hub, port: await listen(server) };
}

/**
 * What an SDK agent does: open Attach, say hello, answer each call frame.
 * It upper-cases unary payloads and streams streaming ones word by word;
 * payload "hang" is never answered.
 */
class FakeSdkAgent {
  readonly client: SidecarServiceClient;
  readonly stream: ClientDuplexStream<AttachRequest, AttachResponse>;
  readonly received: CallFrame[] = [];
  private readonly frames = new EventEmitter();
  readonly welcomed: Promise<string>;

  constructor(port: number, instanceId: string) {
    this.client = new SidecarServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    closers.push(() => this.client.close());
    this.stream = this.client.attach();
    this.stream.on("error", () => {});
    this.welcomed = new Promise((resolve) => {
      this.stream.on("data", (response: AttachResponse) => {
        if (response.msg?.$case === "welcome") resolve(response.msg.value.instanceId);
        if (response.msg?.$case === "call") this.answer(response.msg.value);
        for (const frame of response.calls) this.answer(frame);
      });
    });
    this.stream.write({ msg: { $case: "hello", value: { instanceId } }, replies: [] });
  }

  whenReceived(kind: CallFrame_Kind): Promise<CallFrame> {
    const seen = this.received.find((frame) => frame.kind === kind);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const onFrame = (frame: CallFrame): void => {
        if (frame.kind !== kind) return;
        this.frames.off("frame", onFrame);
        resolve(frame);
      };
      this.frames.on("frame", onFrame);
    });
  }

  private answer(frame: CallFrame): void {
    this.received.push(frame);
    this.frames.emit("frame", frame);
    if (frame.kind !== CallFrame_Kind.KIND_OPEN || frame.invocation === undefined) return;
    const text = frame.invocation.payload.toString();
    if (text === "hang") return;
    const reply = (fields: Partial<CallFrame>): boolean =>
      this.stream.write({ msg: { $case: "reply", value: { ...frame, invocation: undefined, ...fields } as CallFrame }, replies: [] });
    if (!frame.streaming) {
      reply({ kind: CallFrame_Kind.KIND_DATA, payload: Buffer.from(text.toUpperCase()), end: true, contentType: "text/plain" });
      return;
    }
    text.split(" ").forEach((word, index) => reply({ kind: CallFrame_Kind.KIND_DATA, payload: Buffer.from(word), sequence: index + 1 }));
    reply({ kind: CallFrame_Kind.KIND_END, payload: Buffer.alloc(0), statusCode: 0 });
  }
}

const invocation = (payload: string): Invocation =>
  Invocation.fromPartial({ capability: "text.upper", version: "1.0.0", payload: Buffer.from(payload) });

describe("AttachHub", () => {
  it("welcomes an SDK agent, emits attached, and round-trips a unary call", async () => {
    const { hub, port } = await startLocalPort();
    const attached = once(hub, "attached");
    const agent = new FakeSdkAgent(port, "instance-a");
    expect(await agent.welcomed).toBe("instance-a");
    const [instanceId, hello] = await attached;
    expect(instanceId).toBe("instance-a");
    expect(hello).toMatchObject({ instanceId: "instance-a" });
    expect(hub.isAttached("instance-a")).toBe(true);

    const reply = await hub.dispatch("instance-a", invocation("hello agent"));
    expect(reply).toMatchObject({ payload: Buffer.from("HELLO AGENT"), contentType: "text/plain" });
    const open = agent.received[0];
    expect(open).toMatchObject({ kind: CallFrame_Kind.KIND_OPEN, instanceId: "instance-a", streaming: false });
    expect(open?.invocation?.capability).toBe("text.upper");
  });

  it("streams a reply from the agent", async () => {
    const { hub, port } = await startLocalPort();
    await new FakeSdkAgent(port, "instance-a").welcomed;
    const chunks: string[] = [];
    for await (const chunk of hub.dispatchStream("instance-a", invocation("a b c"))) chunks.push(chunk.toString());
    expect(chunks).toEqual(["a", "b", "c"]);
  });

  it("sends CANCEL to the agent when the dispatch's signal aborts", async () => {
    const { hub, port } = await startLocalPort();
    const agent = new FakeSdkAgent(port, "instance-a");
    await agent.welcomed;
    const controller = new AbortController();
    const reply = hub.dispatch("instance-a", invocation("hang"), { signal: controller.signal });
    const open = await agent.whenReceived(CallFrame_Kind.KIND_OPEN);
    controller.abort();
    await expect(reply).rejects.toMatchObject({ kind: "cancelled" });
    const cancel = await agent.whenReceived(CallFrame_Kind.KIND_CANCEL);
    expect(cancel.callId).toBe(open.callId);
  });

  it("emits detached the moment the agent's stream closes, failing its calls in flight with UNAVAILABLE", async () => {
    const { hub, port } = await startLocalPort();
    const agent = new FakeSdkAgent(port, "instance-a");
    await agent.welcomed;
    const inFlight = hub.dispatch("instance-a", invocation("hang"));
    await agent.whenReceived(CallFrame_Kind.KIND_OPEN);
    const detached = once(hub, "detached");
    // What a crashed process looks like from here: the connection goes away.
    agent.client.close();
    agent.stream.cancel();
    expect(await detached).toEqual(["instance-a"]);
    await expect(inFlight).rejects.toEqual(new MeshError("unavailable", "agent detached"));
    expect(hub.isAttached("instance-a")).toBe(false);
  });

  it("fails fast with UNAVAILABLE when dispatching to an agent that is not attached", async () => {
    const { hub } = await startLocalPort();
    await expect(hub.dispatch("instance-gone", invocation("x"))).rejects.toMatchObject({
      kind: "unavailable",
      code: status.UNAVAILABLE,
      message: "agent not attached",
    });
    await expect(hub.dispatchStream("instance-gone", invocation("x")).next()).rejects.toMatchObject({ kind: "unavailable" });
  });

  it("refuses a second stream for an attached instance with ALREADY_EXISTS", async () => {
    const { hub, port } = await startLocalPort();
    await new FakeSdkAgent(port, "instance-a").welcomed;
    const impostor = new FakeSdkAgent(port, "instance-a");
    const [error] = (await once(impostor.stream, "error")) as [ServiceError];
    expect(error.code).toBe(status.ALREADY_EXISTS);
    expect(hub.attachedInstances()).toEqual(["instance-a"]);
    await expect(hub.dispatch("instance-a", invocation("still me"))).resolves.toMatchObject({ payload: Buffer.from("STILL ME") });
  });

  it("ends a stream whose first message is not a hello with INVALID_ARGUMENT", async () => {
    const { port } = await startLocalPort();
    const client = new SidecarServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    closers.push(() => client.close());
    const stream = client.attach();
    const failed = once(stream, "error");
    stream.write({ msg: { $case: "reply", value: CallFrame.fromPartial({ callId: 1 }) }, replies: [] });
    const [error] = (await failed) as [ServiceError];
    expect(error.code).toBe(status.INVALID_ARGUMENT);
  });

  it("ends the stream with the admit hook's MeshError", async () => {
    const { hub, port } = await startLocalPort({
      admit: (hello) => {
        if (hello.instanceId !== "expected") throw new MeshError("denied", "unknown instance");
      },
    });
    const stranger = new FakeSdkAgent(port, "stranger");
    const [error] = (await once(stranger.stream, "error")) as [ServiceError];
    expect(error).toMatchObject({ code: status.PERMISSION_DENIED, details: "unknown instance" });
    expect(hub.isAttached("stranger")).toBe(false);
  });

  it("carries a tunnel caller's deadline through the peer sidecar to the agent as CANCEL", async () => {
    const { hub, port: localPort } = await startLocalPort();
    const agent = new FakeSdkAgent(localPort, "instance-a");
    await agent.welcomed;
    const tunnelServer = new TunnelServer({ handler: { dispatch: (inv, instanceId, { signal }) => hub.dispatch(instanceId, inv, { signal }) } });
    const inbound = new Server();
    tunnelServer.addTo(inbound);
    const inboundPort = await listen(inbound);
    const tunnel = new TunnelClient({ address: `127.0.0.1:${inboundPort}`, credentials: credentials.createInsecure() });
    closers.push(() => tunnel.close());
    const open = (payload: string) => ({
      instanceId: "instance-a",
      envelope: SignedEnvelope.fromPartial({ payload: Buffer.from(Invocation.encode(invocation(payload)).finish()) }),
    });

    await expect(tunnel.unary(open("through two hops"))).resolves.toMatchObject({ payload: Buffer.from("THROUGH TWO HOPS") });
    await expect(tunnel.unary(open("hang"), { deadlineMs: Date.now() + 150 })).rejects.toMatchObject({ kind: "deadlineExceeded" });
    await agent.whenReceived(CallFrame_Kind.KIND_CANCEL);
  });
});

describe("AgentClientPool (agents without an SDK)", () => {
  async function startAgent(): Promise<{ address: string; seen: Invocation[] }> {
    const seen: Invocation[] = [];
    const server = new Server();
    server.addService(AgentServiceService, {
      invoke: (call: ServerUnaryCall<AgentServiceInvokeRequest, AgentServiceInvokeResponse>, callback: sendUnaryData<AgentServiceInvokeResponse>) => {
        const inv = call.request.invocation as Invocation;
        seen.push(inv);
        const text = inv.payload.toString();
        if (text === "bad") return callback({ code: status.INVALID_ARGUMENT, details: "payload must not be bad" } as ServiceError, null);
        if (text === "hang") return;
        callback(null, { payload: Buffer.from(text.toUpperCase()), contentType: "text/plain" });
      },
      invokeStream: (call: ServerWritableStream<AgentServiceInvokeStreamRequest, AgentServiceInvokeStreamResponse>) => {
        for (const word of (call.request.invocation as Invocation).payload.toString().split(" ")) call.write({ payload: Buffer.from(word) });
        call.end();
      },
    });
    const port = await listen(server);
    return { address: `127.0.0.1:${port}`, seen };
  }

  function pool(): AgentClientPool {
    const created = new AgentClientPool();
    closers.push(() => created.close());
    return created;
  }

  it("invokes AgentService.Invoke with the invocation and returns the reply bytes", async () => {
    const agent = await startAgent();
    const agents = pool();
    const reply = await agents.invoke(agent.address, invocation("plain agent"));
    expect(reply).toEqual({ payload: Buffer.from("PLAIN AGENT"), contentType: "text/plain" });
    expect(agent.seen[0]?.capability).toBe("text.upper");
    await expect(agents.invoke(agent.address, invocation("again"))).resolves.toMatchObject({ payload: Buffer.from("AGAIN") });
  });

  it("streams InvokeStream chunks", async () => {
    const agent = await startAgent();
    const chunks: string[] = [];
    for await (const chunk of pool().invokeStream(agent.address, invocation("x y z"))) chunks.push(chunk.toString());
    expect(chunks).toEqual(["x", "y", "z"]);
  });

  it("passes the agent's own status code and message through", async () => {
    const agent = await startAgent();
    await expect(pool().invoke(agent.address, invocation("bad"))).rejects.toEqual(
      new MeshError("invalidArgument", "payload must not be bad"),
    );
  });

  it("answers UNAVAILABLE with a safe message when nothing listens at the address", async () => {
    const agent = await startAgent();
    (servers.pop() as Server).forceShutdown();
    await expect(pool().invoke(agent.address, invocation("x"))).rejects.toEqual(new MeshError("unavailable", "agent unavailable"));
  });

  it("applies the deadline and cancels on the signal", async () => {
    const agent = await startAgent();
    const agents = pool();
    await expect(agents.invoke(agent.address, invocation("hang"), { deadlineMs: Date.now() + 100 })).rejects.toEqual(
      new MeshError("deadlineExceeded", "deadline exceeded"),
    );
    const controller = new AbortController();
    const cancelled = agents.invoke(agent.address, invocation("hang"), { signal: controller.signal });
    await expect.poll(() => agent.seen.length).toBe(2);
    controller.abort();
    await expect(cancelled).rejects.toMatchObject({ kind: "cancelled" });
  });
});
