// A tunnel over real mTLS with the key agreement of docs/signing.md §8: calls made
// once the stream is ready carry a MAC (HS256) that the receiver's frame key opens,
// calls made while the agreement is still on its way are signed, and a stream whose
// key share does not verify never becomes ready. The receiver's DATA and END frames
// carry a MAC under the other direction's key: a receiver that tampers with a reply,
// replays one or leaves its MAC out has that call refused UNAUTHENTICATED.
import { rmSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { Metadata, Server, ServerCredentials, type ServerDuplexStream, credentials as grpcCredentials, status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { TunnelClient } from "../../sdk/ts/src/core/dataplane/tunnel-client.js";
import { type InboundHandler, type PeerInfo, TunnelServer } from "../../sdk/ts/src/core/dataplane/tunnel-server.js";
import { dataFrame, endFrame } from "../../sdk/ts/src/core/dataplane/frames.js";
import {
  type FrameOpener,
  type FrameSealer,
  type KeyAgreementOptions,
  acceptKeyAgreement,
  frameFailure,
  frameMacAlg,
  keyShareMetadataKey,
  startKeyAgreement,
} from "../../sdk/ts/src/core/frame-auth.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignerKeys } from "../../sdk/ts/src/core/tls/signer-keys.js";
import { type CallFrame, CallFrame_Kind, Invocation, PeerServiceService, type TunnelRequest, type TunnelResponse } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { type MeshCa, loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { ServerInvoker } from "../../services/orchestrator/invoker.js";
import type { Resolver } from "../../services/orchestrator/resolver.js";
import { CertificateSource } from "../../sdk/ts/src/core/tls/certificate-source.js";
import { normalizeSerial } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { InvokeRequest } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { AgentInstance } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { pino } from "pino";
import { type MintedIdentity, mintIdentity, signerFor, spiffe } from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";
import { ManualTimers } from "../helpers/manual-timers.js";

const trustDomain = "mesh.test";
const callerId = spiffe(trustDomain, "sidecar", "host-a");
const receiverId = spiffe(trustDomain, "sidecar", "host-b");
const invokeMethod = "/agentmesh.v1.AgentService/Invoke";
const invocationType = "agentmesh.v1.Invocation";

let caDir: string;
let ca: MeshCa;
let caller: MintedIdentity;
let receiver: MintedIdentity;
let server: Server | undefined;
let client: TunnelClient | undefined;
let invoker: ServerInvoker | undefined;
const clock = new ManualClock(Date.now());

beforeAll(async () => {
  caDir = tempDir("agentmesh-frame-auth-tunnel-");
  ca = await loadOrCreateCa({ dataDir: caDir, trustDomain, clock: new ManualClock(Date.now()) });
  caller = await mintIdentity(ca, callerId);
  receiver = await mintIdentity(ca, receiverId);
});
afterAll(() => rmSync(caDir, { recursive: true, force: true }));
afterEach(async () => {
  client?.close();
  client = undefined;
  invoker?.close();
  invoker = undefined;
  if (server) await new Promise<void>((resolve) => server?.tryShutdown(() => resolve()));
  server = undefined;
});

function side(identity: MintedIdentity, sideClock: ManualClock = clock): KeyAgreementOptions {
  const verifier = new PeerVerifier(trustDomain, [ca.certificatePem]);
  return { selfId: identity.spiffeId, signer: signerFor(identity, sideClock), verifier, signerKeys: new SignerKeys({ verifier }), clock: sideClock, nonceCache: new MemoryNonceCache({ clock: sideClock }) };
}

/** Opens MACed frames with the stream's key and answers with the alg each call arrived with. */
const handler: InboundHandler = {
  verify: (open: CallFrame, peer: PeerInfo) => {
    const envelope = open.envelope;
    if (!envelope) throw new MeshError("unauthenticated", "signed envelope required");
    if (envelope.alg === frameMacAlg) {
      if (!peer.frames) throw new MeshError("unauthenticated", "no tunnel key for this stream");
      peer.frames.open(envelope, invokeMethod, invocationType);
    }
    return { ...Invocation.decode(envelope.payload), contentType: envelope.alg };
  },
  dispatch: async (invocation) => ({ payload: invocation.payload, contentType: invocation.contentType }),
};

async function startReceiver(keyAgreement: KeyAgreementOptions): Promise<string> {
  server = new Server();
  new TunnelServer({ handler, keyAgreement: (share, authContext) => acceptKeyAgreement(keyAgreement, share, authContext?.sslPeerCertificate as PeerCertificate | undefined) }).addTo(server);
  return bindReceiver();
}

/**
 * A receiver that agrees keys like a sidecar, then answers each OPEN with the
 * frames `answer` makes (sealing them with `seal`): a peer that breaks the reply rules.
 */
async function startRogueReceiver(answer: (open: CallFrame, seal: (frame: CallFrame) => CallFrame) => CallFrame[]): Promise<string> {
  server = new Server();
  const keyAgreement = side(receiver);
  server.addService(PeerServiceService, {
    tunnel: (call: ServerDuplexStream<TunnelRequest, TunnelResponse>) => {
      const share = call.metadata.get(keyShareMetadataKey)[0] as Buffer;
      void acceptKeyAgreement(keyAgreement, share, call.getAuthContext().sslPeerCertificate).then(({ bytes, opener }: { bytes: Buffer; opener: FrameOpener }) => {
        const headers = new Metadata();
        headers.set(keyShareMetadataKey, bytes);
        call.sendMetadata(headers);
        const seal = (frame: CallFrame): CallFrame => {
          opener.sealReply(frame);
          return frame;
        };
        call.on("data", (message: TunnelRequest) => {
          for (const frame of message.frames) {
            if (frame.kind === CallFrame_Kind.KIND_OPEN) call.write({ frames: answer(frame, seal) });
          }
        });
        call.on("end", () => call.end());
      });
    },
  });
  return bindReceiver();
}

async function bindReceiver(identity: MintedIdentity = receiver): Promise<string> {
  const credentials = ServerCredentials.createSsl(Buffer.from(ca.certificatePem), [{ cert_chain: Buffer.from(identity.chainPem.join("\n")), private_key: Buffer.from(identity.privateKeyPem) }], true);
  const port = await new Promise<number>((resolve, reject) => server?.bindAsync("127.0.0.1:0", credentials, (error, bound) => (error ? reject(error) : resolve(bound))));
  return `127.0.0.1:${port}`;
}

function connect(address: string, peerId: string): TunnelClient {
  const agreement = side(caller);
  client = new TunnelClient({
    address,
    // TLS checks the chain; which sidecar answered is the key agreement's to check (its SPIFFE ID).
    credentials: grpcCredentials.createSsl(Buffer.from(ca.certificatePem), Buffer.from(caller.privateKeyPem), Buffer.from(caller.chainPem.join("\n")), { checkServerIdentity: () => undefined }),
    channelOptions: { "grpc.ssl_target_name_override": "agentmesh-sidecar" },
    keyAgreement: () => startKeyAgreement(agreement, peerId),
  });
  return client;
}

function openFields(signerOf: MintedIdentity) {
  const bytes = Invocation.encode({ callId: "", capability: "echo", version: "1.0.0", payload: Buffer.from("hi"), contentType: "", caller: "", deadlineMs: 0, metadata: {}, traceparent: "" }).finish();
  return {
    instanceId: "instance-1",
    authenticate: (frames: FrameSealer | undefined) =>
      frames ? frames.seal(bytes, invokeMethod, invocationType) : signerFor(signerOf, clock).sign(bytes, invokeMethod, invocationType, receiverId),
  };
}

function ready(tunnel: TunnelClient): Promise<void> {
  tunnel.connect();
  if (tunnel.state === "ready") return Promise.resolve();
  return new Promise((resolve) => tunnel.on("stateChange", (state: string) => state === "ready" && resolve()));
}

describe("tunnel frames over mTLS with a signed key agreement", () => {
  it("signs the call made while the agreement is under way, MACs every call once the stream is ready", async () => {
    const tunnel = connect(await startReceiver(side(receiver)), receiverId);
    const early = await tunnel.unary(openFields(caller));
    expect(early.contentType).toBe("ES256");
    await ready(tunnel);
    const replies = await Promise.all([1, 2, 3].map(() => tunnel.unary(openFields(caller))));
    expect(replies.map((reply) => reply.contentType)).toEqual([frameMacAlg, frameMacAlg, frameMacAlg]);
    expect(replies[0]?.payload.toString()).toBe("hi");
  });

  it("refuses a reply whose payload was changed after it was MACed", async () => {
    const tunnel = connect(await startRogueReceiver((open, seal) => [{ ...seal(dataFrame(open.callId, Buffer.from("genuine"), { end: true })), payload: Buffer.from("forged!") }]), receiverId);
    await ready(tunnel);
    await expect(tunnel.unary(openFields(caller))).rejects.toMatchObject({ code: status.UNAUTHENTICATED, message: frameFailure.badMac });
  });

  it("refuses an END frame whose failure status was turned into OK", async () => {
    const tunnel = connect(await startRogueReceiver((open, seal) => [{ ...seal(endFrame(open.callId, status.PERMISSION_DENIED, "caller not allowed")), statusCode: status.OK, statusMessage: "" }]), receiverId);
    await ready(tunnel);
    await expect(tunnel.unary(openFields(caller))).rejects.toMatchObject({ code: status.UNAUTHENTICATED, message: frameFailure.badMac });
  });

  it("refuses a replayed reply frame: the streamed call fails after the genuine chunk", async () => {
    const tunnel = connect(
      await startRogueReceiver((open, seal) => {
        const chunk = seal(dataFrame(open.callId, Buffer.from("chunk-1"), { sequence: 1 }));
        return [chunk, chunk, seal(endFrame(open.callId))];
      }),
      receiverId,
    );
    await ready(tunnel);
    const received: string[] = [];
    const consume = async () => {
      for await (const chunk of tunnel.stream(openFields(caller))) received.push(chunk.toString());
    };
    await expect(consume()).rejects.toMatchObject({ code: status.UNAUTHENTICATED, message: frameFailure.sequenceReplayed });
    expect(received).toEqual(["chunk-1"]);
  });

  it("refuses a reply without a MAC on a stream that agreed a key, and keeps serving the next call", async () => {
    let calls = 0;
    const tunnel = connect(
      await startRogueReceiver((open, seal) => {
        calls += 1;
        const reply = dataFrame(open.callId, Buffer.from("hi"), { end: true });
        return [calls === 1 ? reply : seal(reply)];
      }),
      receiverId,
    );
    const refused: string[] = [];
    tunnel.on("frameRefused", (reason: string) => refused.push(reason));
    await ready(tunnel);
    await expect(tunnel.unary(openFields(caller))).rejects.toMatchObject({ code: status.UNAUTHENTICATED, message: frameFailure.replyNotAuthenticated });
    expect((await tunnel.unary(openFields(caller))).payload.toString()).toBe("hi");
    expect(refused).toEqual([frameFailure.replyNotAuthenticated]);
  });

  it("moves to a new stream at 3/4 of the receiver's remaining certificate validity, before its replies would be refused as expired", async () => {
    const streamClock = new ManualClock(Date.now());
    const timers = new ManualTimers(streamClock);
    const shortLived = await mintIdentity(ca, receiverId, { ttlMs: 60_000 });
    server = new Server();
    const keyAgreement = side(shortLived, streamClock);
    new TunnelServer({ handler, keyAgreement: (share, authContext) => acceptKeyAgreement(keyAgreement, share, authContext?.sslPeerCertificate as PeerCertificate | undefined) }).addTo(server);
    const address = await bindReceiver(shortLived);
    const agreement = side(caller, streamClock);
    client = new TunnelClient({
      address,
      credentials: grpcCredentials.createSsl(Buffer.from(ca.certificatePem), Buffer.from(caller.privateKeyPem), Buffer.from(caller.chainPem.join("\n")), { checkServerIdentity: () => undefined }),
      channelOptions: { "grpc.ssl_target_name_override": "agentmesh-sidecar" },
      keyAgreement: () => startKeyAgreement(agreement, receiverId),
      rekeyIntervalMs: 24 * 60 * 60_000,
      clock: streamClock,
      streamTimers: timers,
    });
    const tunnel = client;
    await ready(tunnel);
    const remainingMs = new Date(shortLived.certificate.validTo).getTime() - streamClock.nowMs();
    const rotated = new Promise<string>((resolve) => tunnel.once("rotated", resolve));
    timers.advance(Math.floor((remainingMs * 3) / 4) - 2_000);
    expect(tunnel.rotations).toBe(0);
    timers.advance(2_000);
    timers.advance(0);
    expect(await rotated).toBe("peer certificate ageing");
  });

  it("never becomes ready with a receiver that is not the sidecar the caller meant to reach", async () => {
    const tunnel = connect(await startReceiver(side(receiver)), spiffe(trustDomain, "sidecar", "host-c"));
    const states: string[] = [];
    tunnel.on("stateChange", (state: string) => states.push(state));
    tunnel.connect();
    await new Promise<void>((resolve) => tunnel.on("stateChange", (state: string) => state === "backoff" && resolve()));
    expect(states).not.toContain("ready");
  });
});

describe("the server's Invoke as a tunnel caller", () => {
  async function serverInvoker(address: string, options: { signedCapabilities?: Set<string>; isRevoked?: (serial: string) => boolean } = {}): Promise<ServerInvoker> {
    const serverIdentity = await mintIdentity(ca, spiffe(trustDomain, "server", "s1"));
    const source = new CertificateSource();
    source.setIdentity({
      chainPem: serverIdentity.chainPem,
      privateKeyPem: serverIdentity.privateKeyPem,
      notBeforeMs: Date.now() - 1000,
      expiresAtMs: Date.now() + 3_600_000,
      serial: serverIdentity.serial,
      spiffeId: serverIdentity.spiffeId,
    });
    source.setTrustBundle([ca.certificatePem]);
    const instance = AgentInstance.fromPartial({
      instanceId: "instance-1",
      spiffeId: receiverId,
      endpoint: address,
      manifest: { name: "echo", capabilities: [{ name: "echo", version: "1.0.0" }, { name: "audited", version: "1.0.0" }] },
    });
    // Only the pick is a stand-in: the tunnel, TLS and the key agreement are real.
    const resolver = { resolve: () => instance } as unknown as Resolver;
    invoker = new ServerInvoker(resolver, source, trustDomain, clock, pino({ level: "silent" }), options);
    return invoker;
  }
  const request = (capability: string) => InvokeRequest.fromPartial({ capability, payload: Buffer.from("hi") });

  it("signs only the first call (key agreement under way) and capabilities in signedCapabilities; MACs the rest, replies checked", async () => {
    const server = await serverInvoker(await startReceiver(side(receiver)), { signedCapabilities: new Set(["audited"]) });
    expect((await server.invoke(request("echo"), "spiffe://mesh.test/admin/alice", 0)).contentType).toBe("ES256");
    const macced = await Promise.all([1, 2, 3].map(() => server.invoke(request("echo"), "spiffe://mesh.test/admin/alice", 0)));
    expect(macced.map((reply) => [reply.contentType, reply.payload.toString()])).toEqual([
      [frameMacAlg, "hi"],
      [frameMacAlg, "hi"],
      [frameMacAlg, "hi"],
    ]);
    expect((await server.invoke(request("audited"), "spiffe://mesh.test/admin/alice", 0)).contentType).toBe("ES256");
  });

  it("refuses a sidecar whose certificate is revoked: the call fails UNAVAILABLE, none is MACed to it", async () => {
    const server = await serverInvoker(await startReceiver(side(receiver)), { isRevoked: (serial) => serial === normalizeSerial(receiver.serial) });
    await expect(server.invoke(request("echo"), "spiffe://mesh.test/admin/alice", 0)).rejects.toMatchObject({ code: status.UNAVAILABLE });
  });
});
