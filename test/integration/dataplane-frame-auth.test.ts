// A tunnel over real mTLS with the key agreement of docs/signing.md §8: calls made
// once the stream is ready carry a MAC (HS256) that the receiver's frame key opens,
// calls made while the agreement is still on its way are signed, and a stream whose
// key share does not verify never becomes ready.
import { rmSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { Server, ServerCredentials, credentials as grpcCredentials } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { TunnelClient } from "../../sdk/ts/src/core/dataplane/tunnel-client.js";
import { type InboundHandler, type PeerInfo, TunnelServer } from "../../sdk/ts/src/core/dataplane/tunnel-server.js";
import { type FrameSealer, type KeyAgreementOptions, acceptKeyAgreement, frameMacAlg, startKeyAgreement } from "../../sdk/ts/src/core/frame-auth.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignerKeys } from "../../sdk/ts/src/core/tls/signer-keys.js";
import { type CallFrame, Invocation } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { type MeshCa, loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { type MintedIdentity, mintIdentity, signerFor, spiffe } from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";

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
  if (server) await new Promise<void>((resolve) => server?.tryShutdown(() => resolve()));
  server = undefined;
});

function side(identity: MintedIdentity): KeyAgreementOptions {
  const verifier = new PeerVerifier(trustDomain, [ca.certificatePem]);
  return { selfId: identity.spiffeId, signer: signerFor(identity, clock), verifier, signerKeys: new SignerKeys({ verifier }), clock, nonceCache: new MemoryNonceCache({ clock }) };
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
  const credentials = ServerCredentials.createSsl(Buffer.from(ca.certificatePem), [{ cert_chain: Buffer.from(receiver.chainPem.join("\n")), private_key: Buffer.from(receiver.privateKeyPem) }], true);
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

  it("never becomes ready with a receiver that is not the sidecar the caller meant to reach", async () => {
    const tunnel = connect(await startReceiver(side(receiver)), spiffe(trustDomain, "sidecar", "host-c"));
    const states: string[] = [];
    tunnel.on("stateChange", (state: string) => states.push(state));
    tunnel.connect();
    await new Promise<void>((resolve) => tunnel.on("stateChange", (state: string) => state === "backoff" && resolve()));
    expect(states).not.toContain("ready");
  });
});
