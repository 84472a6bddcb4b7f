// What a client that opens something and then says nothing can hold: a Connect
// stream without its Hello is ended once the first-message deadline passes (a
// stream that did say Hello is not), and a TCP connection that never finishes TLS
// (silent, or dripping a partial ClientHello) is closed at the handshake deadline,
// not after Node's 120 s idle timer. Deadlines are short flags here, not sleeps.
import { type ClientDuplexStream, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { connect as tcpConnect, type Socket } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ConnectRequest, type ConnectResponse, Hello } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import {
  type MintedIdentity,
  type SecureMesh,
  connectMethod,
  mintIdentity,
  signerFor,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";

const firstMessageTimeoutMs = 300;
const tlsHandshakeTimeoutMs = 300;

let mesh: SecureMesh;
let sidecar: MintedIdentity;
const sockets: Socket[] = [];
const streams: Array<ClientDuplexStream<ConnectRequest, ConnectResponse>> = [];

beforeEach(async () => {
  mesh = await startSecureMesh({ firstMessageTimeoutMs, tlsHandshakeTimeoutMs });
  sidecar = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "sidecar", "host-a"), { allowedAgentNames: ["*"] });
});

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const stream of streams.splice(0)) stream.cancel();
  await mesh.close();
});

async function metricValue(name: "guardRefusals" | "tlsHandshakeFailures", reason: string): Promise<number> {
  const metric = await mesh.server.metrics[name].get();
  return metric.values.find((value) => value.labels.reason === reason)?.value ?? 0;
}

function openConnect(): { stream: ClientDuplexStream<ConnectRequest, ConnectResponse>; ended: Promise<ServiceError> } {
  const stream = mesh.clientsFor(sidecar).orchestrator.connect(new Metadata());
  streams.push(stream);
  const ended = new Promise<ServiceError>((resolve) => stream.on("error", resolve));
  return { stream, ended };
}

describe("first message deadline", () => {
  it("a Connect stream that never sends its Hello is ended with DEADLINE_EXCEEDED and frees its place", async () => {
    const { ended } = openConnect();
    await expect.poll(() => mesh.server.hub.openStreams).toBe(1);
    const error = await ended;
    expect({ code: error.code, details: error.details }).toEqual({ code: status.DEADLINE_EXCEEDED, details: `no request message within ${firstMessageTimeoutMs} ms` });
    await expect.poll(() => mesh.server.hub.openStreams).toBe(0);
    expect(await metricValue("guardRefusals", "first_message_timeout")).toBe(1);
  });

  it("a Connect stream that sent its Hello in time stays open past the deadline", async () => {
    const { stream, ended } = openConnect();
    const welcomed = new Promise<void>((resolve) => stream.on("data", (response: ConnectResponse) => response.msg?.$case === "welcome" && resolve()));
    const hello = Hello.fromPartial({ sidecarId: "host-a", host: "host-a", capacity: 1 });
    const envelope = signerFor(sidecar).sign(Hello.encode(hello).finish(), connectMethod, "agentmesh.v1.Hello", `spiffe://${mesh.trustDomain}/server`);
    stream.write({ msg: { $case: "hello", value: { ...hello, envelope } } });
    await welcomed;
    // A second stream without a Hello, opened now, ends at its deadline: when it has, the first is past its own.
    const { ended: laterEnded } = openConnect();
    expect((await laterEnded).code).toBe(status.DEADLINE_EXCEEDED);
    const outcome = await Promise.race([ended.then((error) => `ended ${status[error.code]}`), Promise.resolve("open")]);
    expect(outcome).toBe("open");
    expect(mesh.server.hub.openStreams).toBe(1);
  });
});

describe("TLS handshake deadline", () => {
  function rawConnection(): { socket: Socket; closed: Promise<void> } {
    const [host, port] = [mesh.server.config.host, mesh.server.grpcPort];
    const socket = tcpConnect({ host, port });
    sockets.push(socket);
    socket.on("error", () => {});
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    return { socket, closed };
  }

  it("a connection that sends nothing is closed at the deadline and counted", async () => {
    const { socket, closed } = rawConnection();
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    await closed;
    await expect.poll(() => metricValue("tlsHandshakeFailures", "timeout")).toBe(1);
  });

  it("a connection dripping a partial ClientHello is closed at the deadline too (an idle timer would never fire)", async () => {
    const { socket, closed } = rawConnection();
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    // A TLS record header announcing a 512-byte handshake message, then one byte at a time.
    const partial = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, ...Array(64).fill(0x2a)]);
    let sent = 0;
    const drip = setInterval(() => {
      if (sent < partial.length && !socket.destroyed) socket.write(partial.subarray(sent, ++sent));
    }, tlsHandshakeTimeoutMs / 10);
    try {
      await closed;
    } finally {
      clearInterval(drip);
    }
    // It was still sending when it was closed: the deadline counts from accept, not from the last byte.
    expect(sent).toBeLessThan(partial.length);
    await expect.poll(() => metricValue("tlsHandshakeFailures", "timeout")).toBe(1);
  });

  it("a completed handshake is not touched by the deadline: an idle mTLS connection keeps serving", async () => {
    const clients = mesh.clientsFor(mesh.admin);
    const check = () =>
      new Promise<string>((resolve, reject) =>
        clients.health.check({ service: "" }, { deadline: new Date(Date.now() + 5000) }, (error, response) => (error ? reject(error) : resolve(response.status))),
      );
    expect(await check()).toBe("SERVING");
    // Another connection, left silent, is closed at its deadline; the first one outlives it.
    const { closed } = rawConnection();
    await closed;
    expect(await check()).toBe("SERVING");
    expect(await metricValue("tlsHandshakeFailures", "timeout")).toBe(1);
  });
});
