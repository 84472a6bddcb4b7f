import { Writable } from "node:stream";
import { Server, ServerCredentials, credentials, status } from "@grpc/grpc-js";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { CallSignal } from "../../sdk/ts/src/core/dataplane/call-signal.js";
import type { CallReply } from "../../sdk/ts/src/core/dataplane/frames.js";
import { TunnelClient, type TunnelClientOptions, type TunnelState } from "../../sdk/ts/src/core/dataplane/tunnel-client.js";
import { type InboundHandler, TunnelServer, type TunnelServerOptions } from "../../sdk/ts/src/core/dataplane/tunnel-server.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { Invocation } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";

interface RunningTunnelServer {
  server: Server;
  tunnelServer: TunnelServer;
  port: number;
}

const servers: Server[] = [];
const clients: TunnelClient[] = [];

afterEach(() => {
  for (const client of clients.splice(0)) client.close();
  for (const server of servers.splice(0)) server.forceShutdown();
});

async function startTunnelServer(options: TunnelServerOptions, port = 0): Promise<RunningTunnelServer> {
  const server = new Server();
  const tunnelServer = new TunnelServer(options);
  tunnelServer.addTo(server);
  const boundPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (error, bound) =>
      error === null ? resolve(bound) : reject(error),
    ),
  );
  servers.push(server);
  return { server, tunnelServer, port: boundPort };
}

function connect(port: number, options: Partial<TunnelClientOptions> = {}): TunnelClient {
  const client = new TunnelClient({ address: `127.0.0.1:${port}`, credentials: credentials.createInsecure(), ...options });
  clients.push(client);
  return client;
}

function waitForState(client: TunnelClient, state: TunnelState): Promise<void> {
  if (client.state === state) return Promise.resolve();
  return new Promise((resolve) => {
    const onChange = (next: TunnelState): void => {
      if (next !== state) return;
      client.off("stateChange", onChange);
      resolve();
    };
    client.on("stateChange", onChange);
  });
}

/** An OPEN as a sending sidecar builds it: the invocation encoded inside a (here unsigned) envelope. */
function openFor(payload: string, fields: Partial<Invocation> = {}) {
  const invocation = Invocation.fromPartial({ capability: "text.echo", version: "1.0.0", payload: Buffer.from(payload), ...fields });
  const envelope = SignedEnvelope.fromPartial({
    payload: Buffer.from(Invocation.encode(invocation).finish()),
    signer: "spiffe://test/sidecar/a",
    alg: "ES256",
    payloadType: "agentmesh.v1.Invocation",
  });
  return { instanceId: "instance-1", envelope };
}

const echoHandler: InboundHandler = {
  dispatch: async (invocation) => ({ payload: invocation.payload, contentType: invocation.contentType || "application/octet-stream" }),
};

/** A handler whose calls wait until released or aborted, so tests can hold calls in flight. */
class HoldingHandler implements InboundHandler {
  readonly started: Array<{ payload: string; signal: CallSignal; release: (reply: CallReply) => void }> = [];
  private readonly startWaiters: Array<{ count: number; resolve: () => void }> = [];

  dispatch(invocation: Invocation, _instanceId: string, options: { signal: CallSignal }): Promise<CallReply> {
    return new Promise((resolve, reject) => {
      options.signal.addEventListener("abort", () => reject(options.signal.reason), { once: true });
      this.started.push({ payload: invocation.payload.toString(), signal: options.signal, release: resolve });
      for (const waiter of [...this.startWaiters]) {
        if (this.started.length >= waiter.count) {
          this.startWaiters.splice(this.startWaiters.indexOf(waiter), 1);
          waiter.resolve();
        }
      }
    });
  }

  whenStarted(count: number): Promise<void> {
    if (this.started.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.startWaiters.push({ count, resolve }));
  }
}

function aborted(signal: CallSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(signal.reason), { once: true }));
}

describe("TunnelClient ↔ TunnelServer over a real socket", () => {
  it("answers a unary call with the handler's reply, bytes untouched", async () => {
    const { port } = await startTunnelServer({ handler: echoHandler });
    const client = connect(port);
    const payload = Buffer.from([0, 1, 2, 255, 254]).toString("latin1");
    const reply = await client.unary(openFor(payload, { contentType: "application/x-test" }));
    expect(reply).toEqual({ payload: Buffer.from(payload), contentType: "application/x-test" });
    expect(client.state).toBe("ready");
  });

  it("streams reply chunks in order and ends the call", async () => {
    const { port } = await startTunnelServer({
      handler: {
        dispatch: async function* (invocation) {
          for (const word of invocation.payload.toString().split(" ")) yield Buffer.from(word);
        },
      },
    });
    const client = connect(port);
    const chunks: string[] = [];
    for await (const chunk of client.stream(openFor("one two three four"))) chunks.push(chunk.toString());
    expect(chunks).toEqual(["one", "two", "three", "four"]);
    expect(client.inFlight).toBe(0);
  });

  it("gives a streaming caller a unary handler's reply as one chunk", async () => {
    const { port } = await startTunnelServer({ handler: echoHandler });
    const chunks: string[] = [];
    for await (const chunk of connect(port).stream(openFor("whole"))) chunks.push(chunk.toString());
    expect(chunks).toEqual(["whole"]);
  });

  it("multiplexes 200 concurrent calls on one stream and answers each under its own id", async () => {
    const { port, tunnelServer } = await startTunnelServer({
      handler: {
        // Replies finish out of order: later calls are often answered first.
        dispatch: async (invocation) => {
          const index = Number(invocation.payload.toString().split("-")[1]);
          await new Promise((resolve) => setTimeout(resolve, (200 - index) % 13));
          return { payload: Buffer.from(`reply-${index}`), contentType: "" };
        },
      },
    });
    const client = connect(port);
    const replies = await Promise.all(Array.from({ length: 200 }, (_, index) => client.unary(openFor(`call-${index}`))));
    expect(replies.map((reply) => reply.payload.toString())).toEqual(Array.from({ length: 200 }, (_, index) => `reply-${index}`));
    expect(tunnelServer.activeTunnels).toBe(1);
    expect(client.inFlight).toBe(0);
  });

  it("on deadline sends CANCEL, which aborts the handler's signal, and fails the caller with DEADLINE_EXCEEDED", async () => {
    const handler = new HoldingHandler();
    const { port, tunnelServer } = await startTunnelServer({ handler });
    const client = connect(port);
    const reply = client.unary(openFor("slow"), { deadlineMs: Date.now() + 150 });
    await handler.whenStarted(1);
    await expect(reply).rejects.toMatchObject({ kind: "deadlineExceeded", code: status.DEADLINE_EXCEEDED });
    const reason = await aborted((handler.started[0] as { signal: CallSignal }).signal);
    expect(reason).toEqual(new MeshError("cancelled", "call cancelled by caller"));
    await expect.poll(() => tunnelServer.activeCalls).toBe(0);
  });

  it("propagates an AbortSignal from the caller as CANCEL", async () => {
    const handler = new HoldingHandler();
    const { port } = await startTunnelServer({ handler });
    const controller = new AbortController();
    const reply = connect(port).unary(openFor("abort me"), { signal: controller.signal });
    await handler.whenStarted(1);
    controller.abort();
    await expect(reply).rejects.toMatchObject({ kind: "cancelled" });
    await aborted((handler.started[0] as { signal: CallSignal }).signal);
  });

  it("cancels the handler's stream when the consumer stops reading early", async () => {
    let handlerSignal: CallSignal | undefined;
    const { port } = await startTunnelServer({
      handler: {
        dispatch: async function* (_invocation, _instanceId, { signal }) {
          handlerSignal = signal;
          for (let index = 0; !signal.aborted; index += 1) {
            yield Buffer.from(String(index));
            await new Promise((resolve) => setTimeout(resolve, 5));
          }
        },
      },
    });
    const received: string[] = [];
    for await (const chunk of connect(port).stream(openFor("tokens"))) {
      received.push(chunk.toString());
      if (received.length === 3) break;
    }
    expect(received).toEqual(["0", "1", "2"]);
    await expect.poll(() => handlerSignal?.aborted).toBe(true);
  });

  it("refuses calls beyond the client's window with RESOURCE_EXHAUSTED", async () => {
    const handler = new HoldingHandler();
    const { port } = await startTunnelServer({ handler });
    const client = connect(port, { windowSize: 2 });
    const held = [client.unary(openFor("a")), client.unary(openFor("b"))];
    await expect(client.unary(openFor("c"))).rejects.toEqual(new MeshError("overLimit", "tunnel window full"));
    await handler.whenStarted(2);
    for (const call of handler.started) call.release({ payload: Buffer.from("done"), contentType: "" });
    await Promise.all(held);
    // The window has room again.
    const next = client.unary(openFor("d"));
    await handler.whenStarted(3);
    (handler.started[2] as { release: (reply: CallReply) => void }).release({ payload: Buffer.from("d"), contentType: "" });
    await expect(next).resolves.toMatchObject({ payload: Buffer.from("d") });
  });

  it("answers RESOURCE_EXHAUSTED when a tunnel is over the server's concurrency limit", async () => {
    const handler = new HoldingHandler();
    const { port } = await startTunnelServer({ handler, maxConcurrentCallsPerTunnel: 2 });
    const client = connect(port);
    const held = [client.unary(openFor("a")), client.unary(openFor("b"))];
    await handler.whenStarted(2);
    const refused = await client.unary(openFor("c")).catch((error: unknown) => error);
    expect(refused).toMatchObject({ kind: "overLimit", code: status.RESOURCE_EXHAUSTED, message: "tunnel concurrency limit reached" });
    for (const call of handler.started) call.release({ payload: Buffer.from("done"), contentType: "" });
    await Promise.all(held);
    expect(handler.started).toHaveLength(2);
  });

  it("sends a MeshError from verify as END with its code and message", async () => {
    let dispatched = false;
    const { port } = await startTunnelServer({
      handler: {
        verify: () => {
          throw new MeshError("denied", "caller may not invoke text.echo");
        },
        dispatch: async () => {
          dispatched = true;
          return { payload: Buffer.alloc(0), contentType: "" };
        },
      },
    });
    await expect(connect(port).unary(openFor("x"))).rejects.toMatchObject({
      kind: "denied",
      code: status.PERMISSION_DENIED,
      message: "caller may not invoke text.echo",
    });
    expect(dispatched).toBe(false);
  });

  it("hands verify the OPEN frame and the peer, and dispatches what verify returned", async () => {
    const seen: string[] = [];
    const { port } = await startTunnelServer({
      handler: {
        verify: (open, peer) => {
          seen.push(`${open.instanceId} ${peer.address.startsWith("127.0.0.1:")} ${open.envelope?.signer}`);
          return Invocation.fromPartial({ payload: Buffer.from("verified") });
        },
        dispatch: async (invocation, instanceId) => ({ payload: Buffer.from(`${instanceId}:${invocation.payload}`), contentType: "" }),
      },
    });
    const reply = await connect(port).unary(openFor("raw"));
    expect(reply.payload.toString()).toBe("instance-1:verified");
    expect(seen).toEqual(["instance-1 true spiffe://test/sidecar/a"]);
  });

  it("answers INTERNAL with a generic message for an unexpected error and logs it with the call id", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        callback();
      },
    });
    const { port } = await startTunnelServer({
      logger: pino(sink),
      handler: {
        dispatch: async () => {
          throw new Error("db password is hunter2");
        },
      },
    });
    const error = (await connect(port).unary(openFor("x")).catch((caught: unknown) => caught)) as Error & { code: number };
    expect(error.code).toBe(status.INTERNAL);
    expect(error.message).toBe("internal error, call 1");
    const logged = lines.find((line) => line.msg === "inbound call failed");
    expect(logged).toMatchObject({ callId: 1, component: "tunnel-server", err: { message: "db password is hunter2" } });
  });

  it("rejects an OPEN frame without an invocation as INVALID_ARGUMENT", async () => {
    const { port } = await startTunnelServer({ handler: echoHandler });
    await expect(connect(port).unary({ instanceId: "instance-1" })).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
      message: "open frame carries no invocation",
    });
  });

  it("aborts running handlers when the client closes its tunnel", async () => {
    const handler = new HoldingHandler();
    const { port, tunnelServer } = await startTunnelServer({ handler });
    const client = connect(port);
    const reply = client.unary(openFor("held"));
    await handler.whenStarted(1);
    client.close();
    await expect(reply).rejects.toEqual(new MeshError("unavailable", "tunnel closed"));
    await aborted((handler.started[0] as { signal: CallSignal }).signal);
    await expect.poll(() => tunnelServer.activeTunnels).toBe(0);
  });

  it("fails calls in flight at once with UNAVAILABLE when the server dies, and reconnects when it is back", async () => {
    const handler = new HoldingHandler();
    const first = await startTunnelServer({ handler });
    const client = connect(first.port, { backoff: { initialMs: 20, maxMs: 200 } });
    const held = [client.unary(openFor("a")), client.unary(openFor("b")), client.stream(openFor("c")).next()];
    await handler.whenStarted(3);

    first.server.forceShutdown();
    // The calls' own deadlines are far away: only the broken stream can fail them.
    for (const call of held) await expect(call).rejects.toEqual(new MeshError("unavailable", "tunnel to peer broke"));
    expect(client.inFlight).toBe(0);
    expect(["backoff", "connecting"]).toContain(client.state);

    const second = await startTunnelServer({ handler: echoHandler }, first.port);
    expect(second.port).toBe(first.port);
    await waitForState(client, "ready");
    const reply = await client.unary(openFor("again"));
    expect(reply.payload.toString()).toBe("again");
  });

  it("reopens with exponential backoff from the injected timers and random source, reset once the peer answers", async () => {
    const delaysMs: number[] = [];
    const recordingTimers = {
      setTimeout: (callback: () => void, delayMs: number) => {
        delaysMs.push(delayMs);
        return setTimeout(callback, delayMs);
      },
      clearTimeout: (handle: unknown) => clearTimeout(handle as ReturnType<typeof setTimeout>),
    };
    const first = await startTunnelServer({ handler: echoHandler });
    const client = connect(first.port, {
      timers: recordingTimers,
      random: () => 0.5,
      backoff: { initialMs: 40, maxMs: 160, multiplier: 2, jitter: { ratio: 0.2 } },
    });
    await client.unary(openFor("warm"));

    first.server.forceShutdown();
    await waitForState(client, "backoff");
    await expect(client.unary(openFor("meanwhile"))).rejects.toEqual(new MeshError("unavailable", "tunnel to peer is reconnecting"));
    // Each reopen against the dead port fails and doubles the wait, up to maxMs.
    await expect.poll(() => delaysMs.length, { timeout: 5_000 }).toBeGreaterThanOrEqual(4);
    expect(delaysMs.slice(0, 4)).toEqual([40, 80, 160, 160]);

    const second = await startTunnelServer({ handler: echoHandler }, first.port);
    await waitForState(client, "ready");
    const breaksBefore = delaysMs.length;
    second.server.forceShutdown();
    await expect.poll(() => delaysMs.length).toBeGreaterThan(breaksBefore);
    expect(delaysMs[breaksBefore]).toBe(40);
  });

  it("lets running calls finish on drain, refuses new ones with UNAVAILABLE, then ends the tunnel", async () => {
    const handler = new HoldingHandler();
    const { port, tunnelServer } = await startTunnelServer({ handler });
    const client = connect(port, { backoff: { initialMs: 10_000, maxMs: 10_000 } });
    const running = client.unary(openFor("finishing"));
    await handler.whenStarted(1);
    const drained = tunnelServer.drain();
    await expect(client.unary(openFor("late"))).rejects.toMatchObject({ code: status.UNAVAILABLE, message: "peer sidecar draining" });
    (handler.started[0] as { release: (reply: CallReply) => void }).release({ payload: Buffer.from("ok"), contentType: "" });
    await expect(running).resolves.toMatchObject({ payload: Buffer.from("ok") });
    await drained;
    await waitForState(client, "backoff");

    // A tunnel opened during the drain is refused before it looks ready, so its client keeps backing off.
    const late = connect(port);
    const states: TunnelState[] = [];
    late.on("stateChange", (state: TunnelState) => states.push(state));
    await expect(late.unary(openFor("too late"))).rejects.toEqual(new MeshError("unavailable", "tunnel to peer broke"));
    expect(states).toEqual(["connecting", "backoff"]);
  });
});
