// Tunnels across certificate renewal and connection ageing (make-before-break),
// liveness pings against a peer that stops answering, and the
// refused_before_delivery flag, over real sockets.
import { once } from "node:events";
import { Metadata, Server, type ServerDuplexStream, ServerCredentials, credentials, status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { isRefusedBeforeDelivery, refusedBeforeDelivery } from "../../sdk/ts/src/core/dataplane/call-status.js";
import type { CallReply } from "../../sdk/ts/src/core/dataplane/frames.js";
import { dataFrame, pongFrame } from "../../sdk/ts/src/core/dataplane/frames.js";
import { TunnelClient, type TunnelClientOptions, type TunnelState } from "../../sdk/ts/src/core/dataplane/tunnel-client.js";
import { type InboundHandler, type PeerInfo, TunnelServer } from "../../sdk/ts/src/core/dataplane/tunnel-server.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { type CallFrame, CallFrame_Kind, Invocation, PeerServiceService, type TunnelRequest, type TunnelResponse } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { SteppingTimers as ManualTimers } from "../helpers/stepping-timers.js";

const servers: Server[] = [];
const clients: TunnelClient[] = [];

afterEach(() => {
  for (const client of clients.splice(0)) client.close();
  for (const server of servers.splice(0)) server.forceShutdown();
});

async function listen(server: Server): Promise<number> {
  servers.push(server);
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => (error === null ? resolve(port) : reject(error))),
  );
}

async function startTunnelServer(handler: InboundHandler, serverOptions: Record<string, number> = {}): Promise<{ port: number; tunnelServer: TunnelServer }> {
  const server = new Server(serverOptions);
  const tunnelServer = new TunnelServer({ handler });
  tunnelServer.addTo(server);
  return { port: await listen(server), tunnelServer };
}

function connect(port: number, options: Partial<TunnelClientOptions> = {}): TunnelClient {
  const client = new TunnelClient({ address: `127.0.0.1:${port}`, credentials: credentials.createInsecure(), ...options });
  clients.push(client);
  return client;
}

function open(payload: string) {
  return { instanceId: "instance-1", invocation: Invocation.fromPartial({ capability: "text.echo", payload: Buffer.from(payload) }) };
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

/** Holds every call until released, remembering which connection (peer address) carried it. */
class HoldingHandler implements InboundHandler {
  readonly calls: Array<{ payload: string; peerAddress: string; release: (reply: CallReply) => void }> = [];
  private readonly peers = new WeakMap<Invocation, string>();
  private waiters: Array<() => void> = [];

  verify(frame: CallFrame, peer: PeerInfo): Invocation {
    const invocation = frame.invocation as Invocation;
    this.peers.set(invocation, peer.address);
    return invocation;
  }

  dispatch(invocation: Invocation): Promise<CallReply> {
    return new Promise((resolve) => {
      this.calls.push({ payload: invocation.payload.toString(), peerAddress: this.peers.get(invocation) ?? "", release: resolve });
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  async whenCalls(count: number): Promise<void> {
    while (this.calls.length < count) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  releaseAll(): void {
    for (const call of this.calls) call.release({ payload: Buffer.from(`done ${call.payload}`), contentType: "" });
  }
}

/** What a CertificateSource offers the tunnel: change notifications. */
class ChangeSource {
  private readonly listeners = new Set<() => void>();
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  fire(): void {
    for (const listener of this.listeners) listener();
  }
}

describe("tunnel rotation, make-before-break", () => {
  it("on certificate renewal moves to a new connection: the call in flight finishes on the old one, new calls take the new one", async () => {
    const handler = new HoldingHandler();
    const { port, tunnelServer } = await startTunnelServer(handler);
    const renewals = new ChangeSource();
    const client = connect(port, { renewals });
    const states: TunnelState[] = [];
    client.on("stateChange", (state: TunnelState) => states.push(state));

    const before = client.unary(open("before"));
    await handler.whenCalls(1);
    const rotated = once(client, "rotated");
    // A renewal changes the trust bundle and the certificate: two notifications, one move.
    renewals.fire();
    renewals.fire();
    expect(await rotated).toEqual(["certificate renewed"]);
    const after = client.unary(open("after"));
    await handler.whenCalls(2);
    const [first, second] = handler.calls;
    expect(second?.peerAddress).not.toBe(first?.peerAddress);

    handler.releaseAll();
    await expect(before).resolves.toMatchObject({ payload: Buffer.from("done before") });
    await expect(after).resolves.toMatchObject({ payload: Buffer.from("done after") });
    // The replaced stream half-closed once its call was answered, and the peer ended it.
    await expect.poll(() => tunnelServer.activeTunnels).toBe(1);
    expect(client.rotations).toBe(1);
    expect(states).toEqual(["connecting", "ready"]);
  });

  it("when the server retires the connection (GOAWAY), new calls move to a new connection while the old one finishes its call", async () => {
    const handler = new HoldingHandler();
    const { port } = await startTunnelServer(handler, { "grpc.max_connection_age_ms": 300 });
    const client = connect(port);
    const held = client.unary(open("held"));
    await handler.whenCalls(1);
    const heldOn = handler.calls[0]?.peerAddress;
    const results: Array<Promise<CallReply>> = [];
    const connections = new Set<string>([heldOn ?? ""]);
    // Calls until three more connections have carried one: the server retires each after about 300 ms.
    while (connections.size < 4) {
      results.push(client.unary(open(`call ${results.length}`)));
      await handler.whenCalls(results.length + 1);
      connections.add(handler.calls.at(-1)?.peerAddress ?? "");
      for (const call of handler.calls.slice(1)) call.release({ payload: Buffer.from(`done ${call.payload}`), contentType: "" });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    handler.releaseAll();
    // Held across three GOAWAYs: it still ends, on the stream it started on.
    await expect(held).resolves.toMatchObject({ payload: Buffer.from("done held") });
    const outcomes = await Promise.allSettled(results);
    expect(outcomes.filter((outcome) => outcome.status === "rejected")).toEqual([]);
    expect(client.rotations).toBeGreaterThanOrEqual(3);
    expect(client.state).toBe("ready");
  });
});

/**
 * A peer whose connection stays open while it stops answering (as a SIGSTOPped
 * sidecar): while `frozen` it reads and drops everything; otherwise it answers
 * PINGs with PONGs (unless `answersPings` is off, as a sidecar from before pings)
 * and OPENs with their payload.
 */
async function startFreezablePeer(): Promise<{ port: number; peer: { frozen: boolean; answersPings: boolean; received: CallFrame[] } }> {
  const peer = { frozen: false, answersPings: true, received: [] as CallFrame[] };
  const server = new Server();
  server.addService(PeerServiceService, {
    tunnel: (call: ServerDuplexStream<TunnelRequest, TunnelResponse>) => {
      call.sendMetadata(new Metadata());
      call.on("data", (message: TunnelRequest) => {
        for (const frame of message.frames) {
          peer.received.push(frame);
          if (peer.frozen) continue;
          if (frame.kind === CallFrame_Kind.KIND_PING && peer.answersPings) call.write({ frames: [pongFrame(frame.sequence)] });
          if (frame.kind === CallFrame_Kind.KIND_OPEN) call.write({ frames: [dataFrame(frame.callId, frame.invocation?.payload ?? Buffer.alloc(0), { end: true })] });
        }
      });
      call.on("end", () => call.end());
    },
  });
  return { port: await listen(server), peer };
}

describe("tunnel liveness pings", () => {
  it("marks a peer that stops answering unresponsive: its calls fail at once, new ones are refused, and it is used again when it answers", async () => {
    const { port, peer } = await startFreezablePeer();
    const timers = new ManualTimers();
    const client = connect(port, { clock: timers.clock, streamTimers: timers });
    // The first call goes out before the stream's first PING, the second after it: its
    // answer comes behind the PONG, so the peer has shown it speaks liveness.
    await expect(client.unary(open("warm"))).resolves.toMatchObject({ payload: Buffer.from("warm") });
    await expect(client.unary(open("warm again"))).resolves.toMatchObject({ payload: Buffer.from("warm again") });

    peer.frozen = true;
    const held = client.unary(open("held"));
    const failed = held.catch((error: unknown) => error);
    // One ping interval of quiet, then the ping's deadline.
    timers.advance(500);
    timers.advance(2_000);
    expect(await failed).toMatchObject({ code: status.UNAVAILABLE, message: "peer sidecar not answering" });
    expect(client.state).toBe("unresponsive");
    const refused = await client.unary(open("meanwhile")).catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: status.UNAVAILABLE, message: "peer sidecar not answering" });
    // Never sent: a router may send it elsewhere even when it is not idempotent.
    expect(isRefusedBeforeDelivery(refused)).toBe(true);
    expect(isRefusedBeforeDelivery(await failed)).toBe(false);
    // The peer was told to stop the abandoned call.
    await expect.poll(() => peer.received.some((frame) => frame.kind === CallFrame_Kind.KIND_CANCEL)).toBe(true);

    peer.frozen = false;
    const answering = waitForState(client, "ready");
    timers.advance(2_000);
    await answering;
    await expect(client.unary(open("again"))).resolves.toMatchObject({ payload: Buffer.from("again") });
  });

  it("does not blame the peer for a stall of its own event loop: the deadline starts over", async () => {
    const { port, peer } = await startFreezablePeer();
    const timers = new ManualTimers();
    const client = connect(port, { clock: timers.clock, streamTimers: timers });
    await client.unary(open("warm"));
    await client.unary(open("warm again"));
    peer.frozen = true;
    let settled = false;
    const held = client.unary(open("held")).catch((error: unknown) => error).finally(() => {
      settled = true;
    });
    timers.advance(500);
    // Our loop stalls for 5 s (the clock moves, no timer runs), then the overdue check runs.
    timers.clock.advance(5_000);
    timers.advance(0);
    await new Promise((resolve) => setImmediate(resolve));
    expect({ state: client.state, settled }).toEqual({ state: "ready", settled: false });
    // A full deadline of silence after the stall: now it counts.
    timers.advance(2_000);
    expect(await held).toMatchObject({ code: status.UNAVAILABLE, message: "peer sidecar not answering" });
  });

  it("pings a quiet stream only: an idle tunnel once per idle interval", async () => {
    const { port, peer } = await startFreezablePeer();
    const timers = new ManualTimers();
    const client = connect(port, { clock: timers.clock, streamTimers: timers });
    await client.unary(open("warm"));
    const pings = () => peer.received.filter((frame) => frame.kind === CallFrame_Kind.KIND_PING).length;
    await expect.poll(pings).toBe(1);
    timers.advance(9_000);
    expect(pings()).toBe(1);
    timers.advance(1_000);
    await expect.poll(pings).toBe(2);
  });

  it("never marks a peer that has not answered any ping (a sidecar from before pings) unresponsive", async () => {
    const { port, peer } = await startFreezablePeer();
    peer.answersPings = false;
    const timers = new ManualTimers();
    const client = connect(port, { clock: timers.clock, streamTimers: timers });
    await client.unary(open("warm"));
    for (let step = 0; step < 20; step += 1) timers.advance(1_000);
    expect(client.state).toBe("ready");
    await expect(client.unary(open("still works"))).resolves.toMatchObject({ payload: Buffer.from("still works") });
  });

  it("gives up a stream the peer never accepts within the deadline, instead of holding calls until theirs", async () => {
    // A port that accepts TCP and HTTP/2 but never answers the stream: the peer's headers never come.
    const server = new Server();
    server.addService(PeerServiceService, { tunnel: () => undefined });
    const port = await listen(server);
    const timers = new ManualTimers();
    const client = connect(port, { clock: timers.clock, streamTimers: timers, backoff: { initialMs: 60_000, maxMs: 60_000 } });
    const call = client.unary(open("waiting")).catch((error: unknown) => error);
    expect(client.state).toBe("connecting");
    timers.advance(2_000);
    expect(await call).toMatchObject({ code: status.UNAVAILABLE, message: "tunnel to peer broke" });
    expect(client.state).toBe("backoff");
  });
});

describe("refused_before_delivery on END frames", () => {
  it("travels from the receiver's refusal to the caller's error, and only when the receiver set it", async () => {
    const refusals: Record<string, MeshError> = {
      draining: refusedBeforeDelivery(new MeshError("unavailable", "instance draining")),
      ran: new MeshError("unavailable", "agent went away"),
    };
    const { port } = await startTunnelServer({
      dispatch: (invocation) => {
        throw refusals[invocation.payload.toString()];
      },
    });
    const client = connect(port);
    const draining = await client.unary(open("draining")).catch((error: unknown) => error);
    const ran = await client.unary(open("ran")).catch((error: unknown) => error);
    expect(draining).toMatchObject({ code: status.UNAVAILABLE, message: "instance draining" });
    expect(isRefusedBeforeDelivery(draining)).toBe(true);
    expect(ran).toMatchObject({ code: status.UNAVAILABLE, message: "agent went away" });
    expect(isRefusedBeforeDelivery(ran)).toBe(false);
  });
});
