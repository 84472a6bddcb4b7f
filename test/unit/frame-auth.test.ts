// Tunnel frame authentication (docs/signing.md §8): the vectors every SDK checks
// byte for byte, the receiver's refusals (forged MAC, replayed or reordered
// sequence, a key or nonce from another tunnel, a frame after the caller's
// certificate expired or was revoked), the caller's refusals of reply frames
// (the same, in the other direction), and the signed key agreement on real
// mesh certificates.
import { createPrivateKey, createPublicKey } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { PeerCertificate } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import {
  type FrameKeys,
  FrameOpener,
  FrameSealer,
  type KeyAgreementOptions,
  acceptKeyAgreement,
  clientKeySharePayloadType,
  deriveFrameKeys,
  frameFailure,
  frameMac,
  keyShareMethod,
  macCanonicalBytes,
  rawX25519PublicKey,
  replyMac,
  replyMacHeader,
  serverKeySharePayloadType,
  startKeyAgreement,
  x25519SharedSecret,
} from "../../sdk/ts/src/core/frame-auth.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { sha256, verifyEnvelope } from "../../sdk/ts/src/core/signing.js";
import { PeerVerifier, normalizeSerial } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignerKeys } from "../../sdk/ts/src/core/tls/signer-keys.js";
import { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type CallFrame, CallFrame_Kind } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { dataFrame, endFrame } from "../../sdk/ts/src/core/dataplane/frames.js";
import { type MeshCa, loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { type MintedIdentity, mintIdentity, signerFor, spiffe } from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";

interface VectorFrame {
  sequence: number;
  alg: string;
  signer: string;
  audience: string;
  method: string;
  payloadType: string;
  issuedAtMs: number;
  payloadHex: string;
  nonceHex: string;
  macCanonicalHex: string;
  macHex: string;
}
interface VectorReply {
  macSequence: number;
  callId: number;
  kind: string;
  kindNumber: number;
  sequence: number;
  end: boolean;
  refusedBeforeDelivery: boolean;
  statusCode: number;
  statusMessage: string;
  contentType: string;
  instanceId: string;
  version: string;
  payloadHex: string;
  macInputHex: string;
  macHex: string;
}
interface Vectors {
  clientId: string;
  serverId: string;
  clientCertificatePublicKeySpkiHex: string;
  serverCertificatePublicKeySpkiHex: string;
  clientEphemeralPrivateHex: string;
  clientEphemeralPublicHex: string;
  serverEphemeralPrivateHex: string;
  serverEphemeralPublicHex: string;
  clientKeyShareHex: string;
  serverKeyShareHex: string;
  sharedSecretHex: string;
  transcriptHashHex: string;
  sessionIdHex: string;
  clientToServerKeyHex: string;
  serverToClientKeyHex: string;
  nowMs: number;
  frames: VectorFrame[];
  invalid: Array<{ name: string; expectedError: string; frame: VectorFrame }>;
  replyFrames: VectorReply[];
  invalidReplies: Array<{ name: string; expectedError: string; frame: VectorReply }>;
}

const vectors = JSON.parse(readFileSync(join(import.meta.dirname, "..", "vectors", "frame-auth.json"), "utf8")) as Vectors;
const bytes = (text: string) => Buffer.from(text, "hex");
const x25519Private = (raw: string) => createPrivateKey({ key: Buffer.concat([bytes("302e020100300506032b656e04220420"), bytes(raw)]), format: "der", type: "pkcs8" });
const invokeMethod = "/agentmesh.v1.AgentService/Invoke";
const invocationType = "agentmesh.v1.Invocation";

function envelopeOf(frame: VectorFrame): SignedEnvelope {
  return {
    payload: bytes(frame.payloadHex),
    signer: frame.signer,
    alg: frame.alg,
    signature: bytes(frame.macHex),
    issuedAtMs: frame.issuedAtMs,
    nonce: bytes(frame.nonceHex),
    audience: frame.audience,
    method: frame.method,
    payloadType: frame.payloadType,
    signerChain: [],
  };
}

function replyOf(reply: VectorReply): CallFrame {
  const frame = reply.kindNumber === CallFrame_Kind.KIND_END ? endFrame(reply.callId) : dataFrame(reply.callId, Buffer.alloc(0));
  expect(CallFrame_Kind[frame.kind]).toBe(reply.kind);
  return {
    ...frame,
    macSequence: reply.macSequence,
    sequence: reply.sequence,
    end: reply.end,
    refusedBeforeDelivery: reply.refusedBeforeDelivery,
    statusCode: reply.statusCode,
    statusMessage: reply.statusMessage,
    contentType: reply.contentType,
    instanceId: reply.instanceId,
    version: reply.version,
    payload: bytes(reply.payloadHex),
    mac: bytes(reply.macHex),
  };
}

function refusal(action: () => void): string {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).kind).toBe("unauthenticated");
    return (error as MeshError).message;
  }
  return "accepted";
}

function vectorKeys(): FrameKeys {
  return deriveFrameKeys(bytes(vectors.sharedSecretHex), vectors.clientId, vectors.serverId, bytes(vectors.clientKeyShareHex), bytes(vectors.serverKeyShareHex));
}

function opener(keys: FrameKeys, clock: ManualClock, extra: { peerNotAfterMs?: number; isRevoked?: (serial: string) => boolean } = {}): FrameOpener {
  return new FrameOpener({
    keys,
    peerId: vectors.clientId,
    selfId: vectors.serverId,
    peerSerial: "1f",
    peerNotAfterMs: extra.peerNotAfterMs ?? clock.nowMs() + 60 * 60_000,
    clock,
    isRevoked: extra.isRevoked,
  });
}

describe("frame authentication vectors (test/vectors/frame-auth.json)", () => {
  it("derives the ephemeral public keys, the shared secret, the transcript hash and both frame keys", () => {
    const clientPrivate = x25519Private(vectors.clientEphemeralPrivateHex);
    const serverPrivate = x25519Private(vectors.serverEphemeralPrivateHex);
    expect(rawX25519PublicKey(createPublicKey(clientPrivate)).toString("hex")).toBe(vectors.clientEphemeralPublicHex);
    expect(rawX25519PublicKey(createPublicKey(serverPrivate)).toString("hex")).toBe(vectors.serverEphemeralPublicHex);
    expect(x25519SharedSecret(clientPrivate, bytes(vectors.serverEphemeralPublicHex)).toString("hex")).toBe(vectors.sharedSecretHex);
    expect(x25519SharedSecret(serverPrivate, bytes(vectors.clientEphemeralPublicHex)).toString("hex")).toBe(vectors.sharedSecretHex);
    const keys = vectorKeys();
    expect(keys.transcriptHash.toString("hex")).toBe(vectors.transcriptHashHex);
    expect(keys.sessionId.toString("hex")).toBe(vectors.sessionIdHex);
    expect(keys.clientToServerKey.toString("hex")).toBe(vectors.clientToServerKeyHex);
    expect(keys.serverToClientKey.toString("hex")).toBe(vectors.serverToClientKeyHex);
  });

  it("key shares are signed envelopes carrying the ephemeral keys, the receiver's naming the caller's share", async () => {
    const clock = new ManualClock(1_700_000_000_000);
    const client = SignedEnvelope.decode(bytes(vectors.clientKeyShareHex));
    const server = SignedEnvelope.decode(bytes(vectors.serverKeyShareHex));
    expect(Buffer.from(client.payload).toString("hex")).toBe(vectors.clientEphemeralPublicHex);
    expect(Buffer.from(server.payload).toString("hex")).toBe(vectors.serverEphemeralPublicHex + sha256(bytes(vectors.clientKeyShareHex)).toString("hex"));
    const spki = (hex: string) => createPublicKey({ key: bytes(hex), format: "der", type: "spki" });
    await verifyEnvelope(client, { publicKey: spki(vectors.clientCertificatePublicKeySpkiHex), expectedSigner: vectors.clientId, expectedAudience: vectors.serverId, expectedMethod: keyShareMethod, expectedPayloadType: clientKeySharePayloadType, clock, nonceCache: new MemoryNonceCache({ clock }) });
    await verifyEnvelope(server, { publicKey: spki(vectors.serverCertificatePublicKeySpkiHex), expectedSigner: vectors.serverId, expectedAudience: vectors.clientId, expectedMethod: keyShareMethod, expectedPayloadType: serverKeySharePayloadType, clock, nonceCache: new MemoryNonceCache({ clock }) });
  });

  it("rebuilds each frame's MAC input and MAC byte for byte, accepts the frames in order and refuses a replay", () => {
    const keys = vectorKeys();
    const receiver = opener(keys, new ManualClock(vectors.nowMs));
    for (const frame of vectors.frames) {
      const envelope = envelopeOf(frame);
      expect(macCanonicalBytes(envelope).toString("hex")).toBe(frame.macCanonicalHex);
      expect(frameMac(keys.clientToServerKey, envelope).toString("hex")).toBe(frame.macHex);
      expect(refusal(() => receiver.open(envelope, invokeMethod, invocationType))).toBe("accepted");
    }
    expect(refusal(() => receiver.open(envelopeOf(vectors.frames[0] as VectorFrame), invokeMethod, invocationType))).toBe(frameFailure.sequenceReplayed);
  });

  it.each(vectors.invalid.map((entry) => [entry.name, entry] as const))("refuses %s", (_name, entry) => {
    const receiver = opener(vectorKeys(), new ManualClock(vectors.nowMs));
    expect(refusal(() => receiver.open(envelopeOf(entry.frame), invokeMethod, invocationType))).toBe(entry.expectedError);
  });
});

describe("reply frame vectors (receiver → caller)", () => {
  const callerSide = () => new FrameSealer(vectorKeys(), vectors.clientId, vectors.serverId, new ManualClock(vectors.nowMs));

  it("rebuilds each reply's MAC input and MAC byte for byte, accepts the replies in order and refuses a replay", () => {
    const keys = vectorKeys();
    const caller = callerSide();
    for (const reply of vectors.replyFrames) {
      const frame = replyOf(reply);
      expect(Buffer.concat([replyMacHeader(keys.sessionId, frame), frame.payload]).toString("hex")).toBe(reply.macInputHex);
      expect(replyMac(keys, frame).toString("hex")).toBe(reply.macHex);
      expect(refusal(() => caller.openReply(frame))).toBe("accepted");
    }
    expect(refusal(() => caller.openReply(replyOf(vectors.replyFrames[0] as VectorReply)))).toBe(frameFailure.sequenceReplayed);
  });

  it.each(vectors.invalidReplies.map((entry) => [entry.name, entry] as const))("refuses a reply with %s", (_name, entry) => {
    expect(refusal(() => callerSide().openReply(replyOf(entry.frame)))).toBe(entry.expectedError);
  });
});

describe("FrameOpener.sealReply → FrameSealer.openReply", () => {
  const clock = new ManualClock(1_700_000_000_000);

  it("numbers replies 1, 2, 3… in the order sealed and refuses one that arrives after a later one (reordered)", () => {
    const receiver = opener(vectorKeys(), clock);
    const caller = new FrameSealer(vectorKeys(), vectors.clientId, vectors.serverId, clock);
    const first = dataFrame(1, Buffer.from("a"), { end: true });
    const second = endFrame(2, 5, "not found");
    receiver.sealReply(first);
    receiver.sealReply(second);
    expect([first.macSequence, second.macSequence]).toEqual([1, 2]);
    expect(refusal(() => caller.openReply(second))).toBe("accepted");
    expect(refusal(() => caller.openReply(first))).toBe(frameFailure.sequenceReplayed);
  });

  it("a forged reply does not advance the sequence; the genuine one is accepted after it", () => {
    const receiver = opener(vectorKeys(), clock);
    const caller = new FrameSealer(vectorKeys(), vectors.clientId, vectors.serverId, clock);
    const genuine = dataFrame(1, Buffer.from("a"), { end: true });
    receiver.sealReply(genuine);
    expect(refusal(() => caller.openReply({ ...genuine, macSequence: 9, mac: genuine.mac }))).toBe(frameFailure.badMac);
    expect(refusal(() => caller.openReply(genuine))).toBe("accepted");
  });

  it("refuses replies once the receiver's certificate has expired or is revoked", () => {
    const expiring = new ManualClock(1_700_000_000_000);
    const revoked = new Set<string>();
    const receiver = opener(vectorKeys(), expiring);
    const caller = new FrameSealer(vectorKeys(), vectors.clientId, vectors.serverId, expiring, { serial: "2e", notAfterMs: 1_700_000_000_500, isRevoked: (serial) => revoked.has(serial) });
    const sealed = (callId: number) => {
      const frame = dataFrame(callId, Buffer.from("a"), { end: true });
      receiver.sealReply(frame);
      return frame;
    };
    expect(refusal(() => caller.openReply(sealed(1)))).toBe("accepted");
    revoked.add("2e");
    expect(refusal(() => caller.openReply(sealed(2)))).toBe(frameFailure.peerCertificateRevoked);
    revoked.clear();
    expiring.advance(500);
    expect(refusal(() => caller.openReply(sealed(3)))).toBe(frameFailure.peerCertificateExpired);
  });
});

describe("FrameSealer → FrameOpener", () => {
  const clock = new ManualClock(1_700_000_000_000);
  const sealer = () => new FrameSealer(vectorKeys(), vectors.clientId, vectors.serverId, clock);

  it("numbers frames 1, 2, 3… and refuses one that arrives after a later one (reordered)", () => {
    const sending = sealer();
    const receiver = opener(vectorKeys(), clock);
    const first = sending.seal(Buffer.from("a"), invokeMethod, invocationType);
    const second = sending.seal(Buffer.from("b"), invokeMethod, invocationType);
    expect(first.nonce.readUInt32BE(12)).toBe(1);
    expect(second.nonce.readUInt32BE(12)).toBe(2);
    expect(refusal(() => receiver.open(second, invokeMethod, invocationType))).toBe("accepted");
    expect(refusal(() => receiver.open(first, invokeMethod, invocationType))).toBe(frameFailure.sequenceReplayed);
  });

  it("refuses a frame sealed with another tunnel's key, whether its nonce names that tunnel or this one", () => {
    const otherKeys = deriveFrameKeys(Buffer.alloc(32, 7), vectors.clientId, vectors.serverId, Buffer.from("other client share"), Buffer.from("other server share"));
    const foreign = new FrameSealer(otherKeys, vectors.clientId, vectors.serverId, clock).seal(Buffer.from("a"), invokeMethod, invocationType);
    expect(refusal(() => opener(vectorKeys(), clock).open(foreign, invokeMethod, invocationType))).toBe(frameFailure.otherTunnel);
    const relabelled = { ...foreign, nonce: Buffer.concat([vectorKeys().sessionId, foreign.nonce.subarray(8)]) };
    expect(refusal(() => opener(vectorKeys(), clock).open(relabelled, invokeMethod, invocationType))).toBe(frameFailure.badMac);
  });

  it("refuses a frame with a forged MAC, and does not let it advance the sequence", () => {
    const sending = sealer();
    const receiver = opener(vectorKeys(), clock);
    const genuine = sending.seal(Buffer.from("a"), invokeMethod, invocationType);
    const forged = { ...genuine, signature: Buffer.alloc(32, 1) };
    expect(refusal(() => receiver.open(forged, invokeMethod, invocationType))).toBe(frameFailure.badMac);
    expect(refusal(() => receiver.open(genuine, invokeMethod, invocationType))).toBe("accepted");
  });

  it("refuses frames once the caller's certificate has expired or is revoked", () => {
    const expiring = new ManualClock(1_700_000_000_000);
    const receiver = opener(vectorKeys(), expiring, { peerNotAfterMs: 1_700_000_000_500 });
    const sending = new FrameSealer(vectorKeys(), vectors.clientId, vectors.serverId, expiring);
    expect(refusal(() => receiver.open(sending.seal(Buffer.from("a"), invokeMethod, invocationType), invokeMethod, invocationType))).toBe("accepted");
    expiring.advance(500);
    expect(refusal(() => receiver.open(sending.seal(Buffer.from("b"), invokeMethod, invocationType), invokeMethod, invocationType))).toBe(frameFailure.peerCertificateExpired);
    const revoked = new Set<string>();
    const watching = opener(vectorKeys(), clock, { isRevoked: (serial) => revoked.has(serial) });
    const sender = sealer();
    expect(refusal(() => watching.open(sender.seal(Buffer.from("a"), invokeMethod, invocationType), invokeMethod, invocationType))).toBe("accepted");
    revoked.add("1f");
    expect(refusal(() => watching.open(sender.seal(Buffer.from("b"), invokeMethod, invocationType), invokeMethod, invocationType))).toBe(frameFailure.peerCertificateRevoked);
  });
});

describe("signed key agreement on mesh certificates", () => {
  const trustDomain = "mesh.test";
  const hostA = spiffe(trustDomain, "sidecar", "host-a");
  const hostB = spiffe(trustDomain, "sidecar", "host-b");
  let caDir: string;
  let ca: MeshCa;
  let identityA: MintedIdentity;
  let identityB: MintedIdentity;
  const clock = new ManualClock(Date.now());
  const presented = (identity: MintedIdentity) => ({ raw: identity.certificate.raw, fingerprint256: identity.certificate.fingerprint256 }) as PeerCertificate;

  beforeAll(async () => {
    caDir = tempDir("agentmesh-frame-auth-");
    ca = await loadOrCreateCa({ dataDir: caDir, trustDomain, clock: new ManualClock(Date.now()) });
    identityA = await mintIdentity(ca, hostA);
    identityB = await mintIdentity(ca, hostB);
  });
  afterAll(() => rmSync(caDir, { recursive: true, force: true }));

  function side(identity: MintedIdentity): KeyAgreementOptions {
    const verifier = new PeerVerifier(trustDomain, [ca.certificatePem]);
    return { selfId: identity.spiffeId, signer: signerFor(identity, clock), verifier, signerKeys: new SignerKeys({ verifier }), clock, nonceCache: new MemoryNonceCache({ clock }) };
  }

  it("agrees on keys: the caller's frames open on the receiver, as the caller's identity", async () => {
    const share = startKeyAgreement(side(identityA), hostB);
    const accepted = await acceptKeyAgreement(side(identityB), share.bytes, presented(identityA));
    const sealer = await share.finish(accepted.bytes, presented(identityB));
    expect(accepted.opener.peerId).toBe(hostA);
    expect(refusal(() => accepted.opener.open(sealer.seal(Buffer.from("x"), invokeMethod, invocationType), invokeMethod, invocationType))).toBe("accepted");
  });

  it("the caller refuses a receiver that is not the sidecar it meant to reach", async () => {
    const share = startKeyAgreement(side(identityA), spiffe(trustDomain, "sidecar", "host-c"));
    // host-b cannot even accept it: the share names host-c as its audience.
    await expect(acceptKeyAgreement(side(identityB), share.bytes, presented(identityA))).rejects.toThrow("audience mismatch");
    const honest = startKeyAgreement(side(identityA), hostB);
    const answer = await acceptKeyAgreement(side(identityB), honest.bytes, presented(identityA));
    const misdirected = startKeyAgreement(side(identityA), spiffe(trustDomain, "sidecar", "host-c"));
    await expect(misdirected.finish(answer.bytes, presented(identityB))).rejects.toThrow(frameFailure.signerMismatch);
  });

  it("a receiver's key share answers one stream only, and a caller's key share is accepted once", async () => {
    const receiver = side(identityB);
    const first = startKeyAgreement(side(identityA), hostB);
    const second = startKeyAgreement(side(identityA), hostB);
    const answerToFirst = await acceptKeyAgreement(receiver, first.bytes, presented(identityA));
    await expect(second.finish(answerToFirst.bytes, presented(identityB))).rejects.toThrow(frameFailure.transcriptMismatch);
    await expect(acceptKeyAgreement(receiver, first.bytes, presented(identityA))).rejects.toThrow("nonce replayed");
  });

  it("refuses the key agreement of a peer whose certificate is revoked, on either side", async () => {
    const revoked = (identity: MintedIdentity) => (serial: string) => serial === normalizeSerial(identity.serial);
    const share = startKeyAgreement(side(identityA), hostB);
    await expect(acceptKeyAgreement({ ...side(identityB), isRevoked: revoked(identityA) }, share.bytes, presented(identityA))).rejects.toThrow(frameFailure.peerCertificateRevoked);
    const caller = startKeyAgreement({ ...side(identityA), isRevoked: revoked(identityB) }, hostB);
    const answer = await acceptKeyAgreement(side(identityB), caller.bytes, presented(identityA));
    await expect(caller.finish(answer.bytes, presented(identityB))).rejects.toThrow(frameFailure.peerCertificateRevoked);
  });

  it("a key share signed by a key other than the connection's certificate is refused", async () => {
    const impostor = { ...side(identityA), signer: signerFor({ spiffeId: hostA, privateKey: identityB.privateKey }, clock) };
    const share = startKeyAgreement(impostor, hostB);
    await expect(acceptKeyAgreement(side(identityB), share.bytes, presented(identityA))).rejects.toThrow("signature invalid");
  });
});
