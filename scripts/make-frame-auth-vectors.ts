// Regenerates test/vectors/frame-auth.json: `npx tsx scripts/make-frame-auth-vectors.ts`.
// Every key comes from a fixed seed and the key shares are signed with Ed25519
// (deterministic), so running it again changes nothing.
import { createHash, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  clientKeySharePayloadType,
  deriveFrameKeys,
  frameMac,
  frameMacAlg,
  frameNonce,
  keyShareMethod,
  macCanonicalBytes,
  rawX25519PublicKey,
  replyMac,
  replyMacHeader,
  serverKeySharePayloadType,
  x25519SharedSecret,
} from "../sdk/ts/src/core/frame-auth.js";
import { ManualClock } from "../sdk/ts/src/core/clock.js";
import { sha256, signEnvelope } from "../sdk/ts/src/core/signing.js";
import { CallFrame_Kind, Invocation } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { SignedEnvelope } from "../sdk/ts/src/gen/agentmesh/v1/types.js";

const outputPath = join(dirname(fileURLToPath(import.meta.url)), "..", "test", "vectors", "frame-auth.json");
const baseMs = 1_700_000_000_000;
const seed = (label: string): Buffer => createHash("sha256").update(`agentmesh frame-auth vectors: ${label}`).digest();
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

/** PKCS#8 DER of a raw 32-byte X25519 or Ed25519 private key (RFC 8410). */
function rawPrivateKey(kind: "x25519" | "ed25519", raw: Buffer): KeyObject {
  const oid = kind === "x25519" ? "6e" : "70";
  return createPrivateKey({ key: Buffer.concat([Buffer.from(`302e020100300506032b65${oid}04220420`, "hex"), raw]), format: "der", type: "pkcs8" });
}

const clientId = "spiffe://mesh.local/sidecar/host-a";
const serverId = "spiffe://mesh.local/sidecar/host-b";
const clientCertificateKey = rawPrivateKey("ed25519", seed("client certificate key"));
const serverCertificateKey = rawPrivateKey("ed25519", seed("server certificate key"));
const clientEphemeral = rawPrivateKey("x25519", seed("client ephemeral"));
const serverEphemeral = rawPrivateKey("x25519", seed("server ephemeral"));
const clientEphemeralPublic = rawX25519PublicKey(createPublicKey(clientEphemeral));
const serverEphemeralPublic = rawX25519PublicKey(createPublicKey(serverEphemeral));

const clientKeyShare = Buffer.from(
  SignedEnvelope.encode(
    signEnvelope({
      payload: clientEphemeralPublic,
      signer: clientId,
      audience: serverId,
      method: keyShareMethod,
      payloadType: clientKeySharePayloadType,
      privateKey: clientCertificateKey,
      clock: new ManualClock(baseMs),
      randomBytes: () => seed("client key share nonce").subarray(0, 16),
    }),
  ).finish(),
);
const serverKeyShare = Buffer.from(
  SignedEnvelope.encode(
    signEnvelope({
      payload: Buffer.concat([serverEphemeralPublic, sha256(clientKeyShare)]),
      signer: serverId,
      audience: clientId,
      method: keyShareMethod,
      payloadType: serverKeySharePayloadType,
      privateKey: serverCertificateKey,
      clock: new ManualClock(baseMs + 1),
      randomBytes: () => seed("server key share nonce").subarray(0, 16),
    }),
  ).finish(),
);
const sharedSecret = x25519SharedSecret(clientEphemeral, serverEphemeralPublic);
const keys = deriveFrameKeys(sharedSecret, clientId, serverId, clientKeyShare, serverKeyShare);

const invokeMethod = "/agentmesh.v1.AgentService/Invoke";
const invocationType = "agentmesh.v1.Invocation";
function invocation(callId: string): Buffer {
  return Buffer.from(
    Invocation.encode({
      callId,
      capability: "text.summarize",
      version: "1.2.0",
      payload: Buffer.from("hello"),
      contentType: "text/plain",
      caller: clientId,
      deadlineMs: 0,
      metadata: {},
      traceparent: "",
    }).finish(),
  );
}

function frame(sequence: number, issuedAtMs: number, payload: Buffer) {
  const envelope = { signer: clientId, audience: serverId, method: invokeMethod, payloadType: invocationType, issuedAtMs, nonce: frameNonce(keys.sessionId, sequence), payload };
  return {
    sequence,
    alg: frameMacAlg,
    signer: envelope.signer,
    audience: envelope.audience,
    method: envelope.method,
    payloadType: envelope.payloadType,
    issuedAtMs,
    payloadHex: hex(payload),
    nonceHex: hex(envelope.nonce),
    macCanonicalHex: hex(macCanonicalBytes(envelope)),
    macHex: hex(frameMac(keys.clientToServerKey, envelope)),
  };
}

const frames = [frame(1, baseMs + 10, invocation("call-1")), frame(2, baseMs + 11, invocation("call-2")), frame(7, baseMs + 12, invocation("call-7"))];
const first = frames[0] as (typeof frames)[number];
const otherSession = Buffer.from(keys.sessionId).map((byte) => byte ^ 0xff);
const invalid = [
  { name: "forged MAC", expectedError: "frame MAC invalid", frame: { ...first, macHex: `${first.macHex.slice(0, -2)}${first.macHex.endsWith("00") ? "01" : "00"}` } },
  { name: "tampered payload", expectedError: "frame MAC invalid", frame: { ...first, payloadHex: hex(invocation("call-X")) } },
  { name: "MAC with the other direction's key", expectedError: "frame MAC invalid", frame: { ...first, macHex: hex(frameMac(keys.serverToClientKey, { ...first, nonce: Buffer.from(first.nonceHex, "hex"), payload: Buffer.from(first.payloadHex, "hex") })) } },
  { name: "nonce of another tunnel", expectedError: "frame from another tunnel", frame: { ...first, nonceHex: hex(frameNonce(Buffer.from(otherSession), 1)) } },
  { name: "wrong audience", expectedError: "audience mismatch", frame: { ...first, audience: "spiffe://mesh.local/sidecar/host-c" } },
  { name: "timestamp 31 s old", expectedError: "timestamp outside window", frame: frame(1, baseMs - 31_000, invocation("call-1")) },
];

// Receiver → caller: a unary reply (one DATA frame with `end`), a streamed chunk and an END
// with a non-OK status (a negative int32 is not possible for a gRPC code, so the
// two's complement case is covered by the layout, not by a vector).
interface ReplyFields {
  macSequence: number;
  callId: number;
  kind: CallFrame_Kind;
  sequence: number;
  end: boolean;
  refusedBeforeDelivery: boolean;
  statusCode: number;
  statusMessage: string;
  contentType: string;
  instanceId: string;
  version: string;
  payload: Buffer;
}
const replyFields = (fields: Partial<ReplyFields> & Pick<ReplyFields, "macSequence" | "callId" | "kind">): ReplyFields => ({
  sequence: 0,
  end: false,
  refusedBeforeDelivery: false,
  statusCode: 0,
  statusMessage: "",
  contentType: "",
  instanceId: "",
  version: "",
  payload: Buffer.alloc(0),
  ...fields,
});
function replyFrame(fields: ReplyFields) {
  const { payload, kind } = fields;
  return {
    macSequence: fields.macSequence,
    callId: fields.callId,
    kind: CallFrame_Kind[kind],
    kindNumber: kind,
    sequence: fields.sequence,
    end: fields.end,
    refusedBeforeDelivery: fields.refusedBeforeDelivery,
    statusCode: fields.statusCode,
    statusMessage: fields.statusMessage,
    contentType: fields.contentType,
    instanceId: fields.instanceId,
    version: fields.version,
    payloadHex: hex(payload),
    macInputHex: hex(Buffer.concat([replyMacHeader(keys.sessionId, fields), payload])),
    macHex: hex(replyMac(keys, fields)),
  };
}
const replyInputs = [
  replyFields({ macSequence: 1, callId: 1, kind: CallFrame_Kind.KIND_DATA, end: true, contentType: "text/plain", instanceId: "summarizer-7f3a", version: "1.2.0", payload: Buffer.from("a short summary") }),
  replyFields({ macSequence: 2, callId: 2, kind: CallFrame_Kind.KIND_DATA, sequence: 1, payload: Buffer.from("tok") }),
  replyFields({ macSequence: 5, callId: 7, kind: CallFrame_Kind.KIND_END, statusCode: 14, statusMessage: "instance draining", refusedBeforeDelivery: true }),
];
const replyFrames = replyInputs.map(replyFrame);
const firstReply = replyInputs[0] as ReplyFields;
const lastReply = replyInputs[2] as ReplyFields;
const withMacOf = (fields: ReplyFields, macHex: string) => ({ ...replyFrame(fields), macHex });
const invalidReplies = [
  { name: "forged MAC", expectedError: "frame MAC invalid", frame: withMacOf(firstReply, hex(Buffer.alloc(32, 0xab))) },
  { name: "tampered payload", expectedError: "frame MAC invalid", frame: withMacOf({ ...firstReply, payload: Buffer.from("a forged summary") }, replyFrame(firstReply).macHex) },
  { name: "tampered status (OK in place of UNAVAILABLE)", expectedError: "frame MAC invalid", frame: withMacOf({ ...lastReply, statusCode: 0 }, replyFrame(lastReply).macHex) },
  { name: "tampered flag (refused_before_delivery cleared)", expectedError: "frame MAC invalid", frame: withMacOf({ ...lastReply, refusedBeforeDelivery: false }, replyFrame(lastReply).macHex) },
  { name: "MAC with the other direction's key", expectedError: "frame MAC invalid", frame: withMacOf(firstReply, hex(replyMac({ sessionId: keys.sessionId, serverToClientKey: keys.clientToServerKey }, firstReply))) },
  { name: "MAC of another tunnel's session id", expectedError: "frame MAC invalid", frame: withMacOf(firstReply, hex(replyMac({ sessionId: Buffer.from(otherSession), serverToClientKey: keys.serverToClientKey }, firstReply))) },
  { name: "no MAC", expectedError: "reply frame not authenticated", frame: { ...replyFrame({ ...firstReply, macSequence: 0 }), macHex: "" } },
];

const vectors = {
  description: "agentmesh tunnel frame authentication (docs/signing.md §8): key agreement inputs and outputs, MACed frames in order, and frames a receiver must refuse",
  version: 1,
  macDomain: "agentmesh-mac-v1",
  keyInfoLabel: "agentmesh-frame-keys-v1",
  clientId,
  serverId,
  clientCertificatePublicKeySpkiHex: hex(createPublicKey(clientCertificateKey).export({ format: "der", type: "spki" })),
  serverCertificatePublicKeySpkiHex: hex(createPublicKey(serverCertificateKey).export({ format: "der", type: "spki" })),
  clientEphemeralPrivateHex: hex(seed("client ephemeral")),
  clientEphemeralPublicHex: hex(clientEphemeralPublic),
  serverEphemeralPrivateHex: hex(seed("server ephemeral")),
  serverEphemeralPublicHex: hex(serverEphemeralPublic),
  clientKeyShareHex: hex(clientKeyShare),
  serverKeyShareHex: hex(serverKeyShare),
  sharedSecretHex: hex(sharedSecret),
  transcriptHashHex: hex(keys.transcriptHash),
  sessionIdHex: hex(keys.sessionId),
  clientToServerKeyHex: hex(keys.clientToServerKey),
  serverToClientKeyHex: hex(keys.serverToClientKey),
  /** Receiver clock for every frame check. */
  nowMs: baseMs + 1000,
  frames,
  invalid,
  replyMacDomain: "agentmesh-rpl-v1",
  replyFrames,
  invalidReplies,
};
writeFileSync(outputPath, `${JSON.stringify(vectors, null, 2)}\n`);
process.stdout.write(`wrote ${outputPath}\n`);
