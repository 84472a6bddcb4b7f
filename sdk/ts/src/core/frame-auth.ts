import { type KeyObject, createHmac, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, timingSafeEqual } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { type CallFrame, CallFrame_Kind } from "../gen/agentmesh/v1/agent.js";
import { SignedEnvelope } from "../gen/agentmesh/v1/types.js";
import type { Clock } from "./clock.js";
import { MeshError } from "./mesh-error.js";
import type { NonceCache } from "./nonce-cache.js";
import { defaultSignatureWindowMs, envelopeCanonicalBytes, sha256, verifyEnvelope } from "./signing.js";
import type { PeerVerifier, VerifiedPeer } from "./tls/peer-verifier.js";
import type { SignerKeys } from "./tls/signer-keys.js";

/**
 * Authenticated tunnel frames without a public-key operation per call
 * (docs/signing.md §8): one signed X25519 key agreement when a tunnel stream
 * opens, then an HMAC-SHA256 and a strictly increasing sequence number on every
 * OPEN frame from the caller, and on every DATA and END frame the receiver answers with.
 */

/** Metadata key of the key shares: the caller's in its stream headers, the receiver's in its response headers. */
export const keyShareMetadataKey = "agentmesh-key-share-bin";
export const keyShareMethod = "/agentmesh.v1.PeerService/Tunnel";
export const clientKeySharePayloadType = "agentmesh.tunnel.client-key-share.v1";
export const serverKeySharePayloadType = "agentmesh.tunnel.server-key-share.v1";
/** The `alg` of a frame authenticated with the tunnel's key. */
export const frameMacAlg = "HS256";
export const frameMacDomain = "agentmesh-mac-v1";
export const frameKeyInfoLabel = "agentmesh-frame-keys-v1";
/** The domain of a reply frame's MAC input (receiver → caller, docs/signing.md §8.5). */
export const replyMacDomain = "agentmesh-rpl-v1";
const macBytes = 32;
const x25519PublicKeyBytes = 32;
const sessionIdBytes = 8;

/** Reasons a frame or a key share is refused (MeshError("unauthenticated")). */
export const frameFailure = {
  noSession: "no tunnel key for this stream",
  badNonce: "frame nonce malformed",
  otherTunnel: "frame from another tunnel",
  signerMismatch: "signer mismatch",
  audienceMismatch: "audience mismatch",
  methodMismatch: "method mismatch",
  payloadTypeMismatch: "payload type mismatch",
  timestampOutsideWindow: "timestamp outside window",
  badMac: "frame MAC invalid",
  sequenceReplayed: "frame sequence replayed or reordered",
  peerCertificateExpired: "peer certificate expired",
  peerCertificateRevoked: "peer certificate revoked",
  badKeyShare: "key share invalid",
  transcriptMismatch: "key share transcript mismatch",
  replyNotAuthenticated: "reply frame not authenticated",
} as const;

function reject(reason: string): never {
  throw new MeshError("unauthenticated", reason);
}

/** What both sides derive from one key agreement. */
export interface FrameKeys {
  /** SHA-256(client key share bytes || server key share bytes). */
  transcriptHash: Buffer;
  /** First 8 bytes of the transcript hash: names the tunnel in every frame nonce. */
  sessionId: Buffer;
  clientToServerKey: Buffer;
  serverToClientKey: Buffer;
}

function lengthPrefixed(value: string): Buffer {
  const bytes = Buffer.from(value, "utf8");
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32BE(bytes.length, 0);
  return Buffer.concat([length, bytes]);
}

/**
 * HKDF-SHA256(ikm = X25519 shared secret, salt = transcript hash,
 * info = "agentmesh-frame-keys-v1" || lp(client id) || lp(server id) || transcript hash), 64 bytes:
 * the first 32 authenticate caller → receiver frames, the last 32 receiver → caller.
 */
export function deriveFrameKeys(sharedSecret: Uint8Array, clientId: string, serverId: string, clientKeyShare: Uint8Array, serverKeyShare: Uint8Array): FrameKeys {
  const transcriptHash = sha256(Buffer.concat([clientKeyShare, serverKeyShare]));
  const info = Buffer.concat([Buffer.from(frameKeyInfoLabel, "utf8"), lengthPrefixed(clientId), lengthPrefixed(serverId), transcriptHash]);
  const okm = Buffer.from(hkdfSync("sha256", sharedSecret, transcriptHash, info, 64));
  return { transcriptHash, sessionId: transcriptHash.subarray(0, sessionIdBytes), clientToServerKey: okm.subarray(0, 32), serverToClientKey: okm.subarray(32, 64) };
}

/** The §2 canonical bytes of the envelope fields, under the domain "agentmesh-mac-v1" instead of "agentmesh-sig-v1". */
export function macCanonicalBytes(envelope: Pick<SignedEnvelope, "signer" | "audience" | "method" | "payloadType" | "issuedAtMs" | "nonce" | "payload">): Buffer {
  const bytes = envelopeCanonicalBytes(envelope);
  bytes.write(frameMacDomain, 0, "utf8");
  return bytes;
}

export function frameMac(key: Uint8Array, envelope: Parameters<typeof macCanonicalBytes>[0]): Buffer {
  return createHmac("sha256", key).update(macCanonicalBytes(envelope)).digest();
}

function writeUint64(buffer: Buffer, value: number, offset: number): void {
  buffer.writeUInt32BE(Math.floor(value / 0x1_0000_0000), offset);
  buffer.writeUInt32BE(value >>> 0, offset + 4);
}

function writeLengthPrefixed(buffer: Buffer, value: string, offset: number): number {
  const length = buffer.write(value, offset + 4, "utf8");
  buffer.writeUInt32BE(length, offset);
  return offset + 4 + length;
}

/** Whether a frame from the receiver carries a reply MAC on a keyed stream: DATA and END do, PONG does not. */
export function isReplyFrame(frame: Pick<CallFrame, "kind">): boolean {
  return frame.kind === CallFrame_Kind.KIND_DATA || frame.kind === CallFrame_Kind.KIND_END;
}

/** The fields of a DATA or END frame its reply MAC covers. */
export type ReplyMacFields = Pick<
  CallFrame,
  "macSequence" | "callId" | "kind" | "sequence" | "end" | "refusedBeforeDelivery" | "statusCode" | "statusMessage" | "contentType" | "instanceId" | "version" | "payload"
>;

/**
 * The reply MAC input of docs/signing.md §8.5 up to and including the payload's
 * length prefix; the payload bytes follow it as they are, unhashed.
 */
export function replyMacHeader(sessionId: Uint8Array, frame: ReplyMacFields): Buffer {
  const strings = [frame.statusMessage, frame.contentType, frame.instanceId, frame.version];
  let size = 16 + 8 + 8 + 8 + 4 + 8 + 1 + 4 + 4;
  for (const value of strings) size += 4 + Buffer.byteLength(value, "utf8");
  const header = Buffer.allocUnsafe(size);
  header.write(replyMacDomain, 0, "latin1");
  header.set(sessionId.subarray(0, sessionIdBytes), 16);
  writeUint64(header, frame.macSequence, 24);
  writeUint64(header, frame.callId, 32);
  header.writeUInt32BE(frame.kind, 40);
  writeUint64(header, frame.sequence, 44);
  header.writeUInt8((frame.end ? 1 : 0) | (frame.refusedBeforeDelivery ? 2 : 0), 52);
  header.writeInt32BE(frame.statusCode, 53);
  let offset = 57;
  for (const value of strings) offset = writeLengthPrefixed(header, value, offset);
  header.writeUInt32BE(frame.payload.length, offset);
  return header;
}

/** HMAC-SHA256(k_s2c, reply MAC input): the MAC of a DATA or END frame from the receiver. */
export function replyMac(keys: Pick<FrameKeys, "sessionId" | "serverToClientKey">, frame: ReplyMacFields): Buffer {
  return createHmac("sha256", keys.serverToClientKey).update(replyMacHeader(keys.sessionId, frame)).update(frame.payload).digest();
}

/** The frame nonce: session id (8 bytes) || u64be(sequence). */
export function frameNonce(sessionId: Uint8Array, sequence: number): Buffer {
  const nonce = Buffer.allocUnsafe(16);
  nonce.set(sessionId.subarray(0, sessionIdBytes), 0);
  nonce.writeUInt32BE(Math.floor(sequence / 0x1_0000_0000), 8);
  nonce.writeUInt32BE(sequence >>> 0, 12);
  return nonce;
}

/** The certificate a key share was checked with: frames stop being accepted when it expires or is revoked. */
export interface PeerCertificateState {
  /** Lower-case hex without leading zeros (normalizeSerial). */
  serial: string;
  notAfterMs: number;
  isRevoked?: (serial: string) => boolean;
}

/**
 * The caller's side of one tunnel stream: numbers and MACs its OPEN frames, and
 * checks the MAC and sequence of every DATA and END frame the receiver answers with.
 */
export class FrameSealer {
  private sequence = 0;
  private lastReplySequence = 0;

  constructor(
    readonly keys: FrameKeys,
    /** Our SPIFFE ID (the envelope's signer). */
    readonly selfId: string,
    /** The receiving sidecar's SPIFFE ID, proved by its key share. */
    readonly peerId: string,
    private readonly clock: Clock,
    /** The receiver's certificate; without it replies are not checked for expiry or revocation. */
    readonly peerCertificate?: PeerCertificateState,
  ) {}

  /**
   * Checks a DATA or END frame from the receiver in the order of docs/signing.md
   * §8.5 (MAC, sequence, the receiver's certificate); throws
   * MeshError("unauthenticated", reason) at the first failure. Only an accepted
   * frame advances the sequence.
   */
  openReply(frame: CallFrame): void {
    if (frame.mac.length !== macBytes) reject(frameFailure.replyNotAuthenticated);
    if (!timingSafeEqual(frame.mac, replyMac(this.keys, frame))) reject(frameFailure.badMac);
    if (frame.macSequence <= this.lastReplySequence) reject(frameFailure.sequenceReplayed);
    const certificate = this.peerCertificate;
    if (certificate) {
      if (this.clock.nowMs() >= certificate.notAfterMs) reject(frameFailure.peerCertificateExpired);
      if (certificate.isRevoked?.(certificate.serial)) reject(frameFailure.peerCertificateRevoked);
    }
    this.lastReplySequence = frame.macSequence;
  }

  /** An envelope like a signed one, with alg HS256, the frame nonce and the MAC as its signature. */
  seal(payload: Uint8Array, method: string, payloadType: string): SignedEnvelope {
    this.sequence += 1;
    const envelope: SignedEnvelope = {
      payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload),
      signer: this.selfId,
      alg: frameMacAlg,
      signature: Buffer.alloc(0),
      issuedAtMs: this.clock.nowMs(),
      nonce: frameNonce(this.keys.sessionId, this.sequence),
      audience: this.peerId,
      method,
      payloadType,
      signerChain: [],
    };
    envelope.signature = frameMac(this.keys.clientToServerKey, envelope);
    return envelope;
  }
}

export interface FrameOpenerOptions {
  keys: FrameKeys;
  /** The caller's SPIFFE ID, proved by its key share and its mTLS certificate. */
  peerId: string;
  selfId: string;
  /** The caller's certificate: frames stop being accepted when it expires or is revoked. */
  peerSerial: string;
  peerNotAfterMs: number;
  clock: Clock;
  isRevoked?: (serial: string) => boolean;
  windowMs?: number;
}

/** The receiver's side of one tunnel stream: checks each OPEN frame's MAC and sequence, and MACs the DATA and END frames it answers with. */
export class FrameOpener {
  private lastSequence = 0;
  private lastReplySequence = 0;

  constructor(private readonly options: FrameOpenerOptions) {}

  get peerId(): string {
    return this.options.peerId;
  }

  get peerSerial(): string {
    return this.options.peerSerial;
  }

  /** Numbers and MACs a DATA or END frame to the caller (docs/signing.md §8.5); call it in the order frames are written. */
  sealReply(frame: CallFrame): void {
    this.lastReplySequence += 1;
    frame.macSequence = this.lastReplySequence;
    frame.mac = replyMac(this.options.keys, frame);
  }

  /** Checks in the order of docs/signing.md §8.4; throws MeshError("unauthenticated", reason) at the first failure. */
  open(envelope: SignedEnvelope, expectedMethod: string, expectedPayloadType: string): void {
    const { options } = this;
    const nowMs = options.clock.nowMs();
    if (envelope.nonce.length !== 16) reject(frameFailure.badNonce);
    if (!timingSafeEqual(envelope.nonce.subarray(0, sessionIdBytes), options.keys.sessionId)) reject(frameFailure.otherTunnel);
    if (envelope.signer !== options.peerId) reject(frameFailure.signerMismatch);
    if (envelope.audience !== options.selfId) reject(frameFailure.audienceMismatch);
    if (envelope.method !== expectedMethod) reject(frameFailure.methodMismatch);
    if (envelope.payloadType !== expectedPayloadType) reject(frameFailure.payloadTypeMismatch);
    const windowMs = options.windowMs ?? defaultSignatureWindowMs;
    const skewMs = nowMs - envelope.issuedAtMs;
    if (!Number.isSafeInteger(envelope.issuedAtMs) || skewMs > windowMs || skewMs < -windowMs) reject(frameFailure.timestampOutsideWindow);
    const expected = frameMac(options.keys.clientToServerKey, envelope);
    if (envelope.signature.length !== expected.length || !timingSafeEqual(envelope.signature, expected)) reject(frameFailure.badMac);
    const sequence = envelope.nonce.readUInt32BE(8) * 0x1_0000_0000 + envelope.nonce.readUInt32BE(12);
    if (sequence <= this.lastSequence) reject(frameFailure.sequenceReplayed);
    if (nowMs >= options.peerNotAfterMs) reject(frameFailure.peerCertificateExpired);
    if (options.isRevoked?.(options.peerSerial)) reject(frameFailure.peerCertificateRevoked);
    this.lastSequence = sequence;
  }
}

// ---------------------------------------------------------------- key agreement

/** Signs key shares: the sidecar's MeshIdentity (EnvelopeSigner) fits. */
export interface KeyShareSigner {
  sign(payload: Uint8Array, method: string, payloadType: string, audience: string): SignedEnvelope;
}

export interface EphemeralKey {
  privateKey: KeyObject;
  /** Raw 32-byte X25519 public key. */
  publicKey: Buffer;
}

export function generateEphemeralKey(): EphemeralKey {
  const pair = generateKeyPairSync("x25519");
  return { privateKey: pair.privateKey, publicKey: rawX25519PublicKey(pair.publicKey) };
}

export function rawX25519PublicKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: "jwk" });
  return Buffer.from(String(jwk.x), "base64url");
}

export function x25519SharedSecret(privateKey: KeyObject, peerPublicKey: Uint8Array): Buffer {
  if (peerPublicKey.length !== x25519PublicKeyBytes) reject(frameFailure.badKeyShare);
  const publicKey = createPublicKey({ key: { kty: "OKP", crv: "X25519", x: Buffer.from(peerPublicKey).toString("base64url") }, format: "jwk" });
  return diffieHellman({ privateKey, publicKey });
}

function decodeKeyShare(bytes: Uint8Array): SignedEnvelope {
  try {
    return SignedEnvelope.decode(bytes);
  } catch {
    return reject(frameFailure.badKeyShare);
  }
}

export interface KeyAgreementOptions {
  selfId: string;
  signer: KeyShareSigner;
  verifier: PeerVerifier;
  signerKeys: SignerKeys;
  clock: Clock;
  nonceCache: NonceCache;
  isRevoked?: (serial: string) => boolean;
  /** Tests pin the ephemeral key; production draws a fresh one per stream. */
  ephemeralKey?: () => EphemeralKey;
}

function connectionOf(verified: VerifiedPeer) {
  return { spiffeId: verified.spiffeId.uri, serial: verified.serial, publicKey: verified.publicKey };
}

/** The caller's half: its key share for the stream headers, and how to finish once the receiver's arrives. */
export interface ClientKeyShare {
  bytes: Buffer;
  /** Verifies the receiver's key share against its mTLS certificate and derives the frame keys. */
  finish(serverKeyShare: Uint8Array, serverCertificate: PeerCertificate | undefined): Promise<FrameSealer>;
}

/**
 * Starts a key agreement with the sidecar `peerId` (the audience of our key
 * share; its key share must be signed by that identity).
 */
export function startKeyAgreement(options: KeyAgreementOptions, peerId: string): ClientKeyShare {
  const ephemeral = (options.ephemeralKey ?? generateEphemeralKey)();
  const bytes = Buffer.from(SignedEnvelope.encode(options.signer.sign(ephemeral.publicKey, keyShareMethod, clientKeySharePayloadType, peerId)).finish());
  return {
    bytes,
    finish: async (serverKeyShare, serverCertificate) => {
      const nowMs = options.clock.nowMs();
      const verified = options.verifier.verify(serverCertificate, nowMs);
      if (verified.spiffeId.uri !== peerId) reject(frameFailure.signerMismatch);
      if (options.isRevoked?.(verified.serial)) reject(frameFailure.peerCertificateRevoked);
      const envelope = decodeKeyShare(serverKeyShare);
      await verifyEnvelope(envelope, {
        publicKey: options.signerKeys.keyFor(envelope, connectionOf(verified), nowMs),
        expectedSigner: peerId,
        expectedAudience: options.selfId,
        expectedMethod: keyShareMethod,
        expectedPayloadType: serverKeySharePayloadType,
        clock: options.clock,
        nonceCache: options.nonceCache,
      });
      if (envelope.payload.length !== x25519PublicKeyBytes + 32) reject(frameFailure.badKeyShare);
      // The receiver names the key share it answers: a share replayed from another stream cannot complete this one.
      if (!timingSafeEqual(envelope.payload.subarray(x25519PublicKeyBytes), sha256(bytes))) reject(frameFailure.transcriptMismatch);
      const shared = x25519SharedSecret(ephemeral.privateKey, envelope.payload.subarray(0, x25519PublicKeyBytes));
      const keys = deriveFrameKeys(shared, options.selfId, peerId, bytes, serverKeyShare);
      return new FrameSealer(keys, options.selfId, peerId, options.clock, { serial: verified.serial, notAfterMs: verified.notAfterMs, isRevoked: options.isRevoked });
    },
  };
}

/** The receiver's half: verifies the caller's key share (signed by its mTLS identity), answers with its own. */
export async function acceptKeyAgreement(
  options: KeyAgreementOptions,
  clientKeyShare: Uint8Array,
  clientCertificate: PeerCertificate | undefined,
): Promise<{ bytes: Buffer; opener: FrameOpener }> {
  const nowMs = options.clock.nowMs();
  const verified = options.verifier.verify(clientCertificate, nowMs);
  if (options.isRevoked?.(verified.serial)) reject(frameFailure.peerCertificateRevoked);
  const peerId = verified.spiffeId.uri;
  const envelope = decodeKeyShare(clientKeyShare);
  await verifyEnvelope(envelope, {
    publicKey: options.signerKeys.keyFor(envelope, connectionOf(verified), nowMs),
    expectedSigner: peerId,
    expectedAudience: options.selfId,
    expectedMethod: keyShareMethod,
    expectedPayloadType: clientKeySharePayloadType,
    clock: options.clock,
    nonceCache: options.nonceCache,
  });
  const ephemeral = (options.ephemeralKey ?? generateEphemeralKey)();
  const shared = x25519SharedSecret(ephemeral.privateKey, envelope.payload);
  const payload = Buffer.concat([ephemeral.publicKey, sha256(clientKeyShare)]);
  const bytes = Buffer.from(SignedEnvelope.encode(options.signer.sign(payload, keyShareMethod, serverKeySharePayloadType, peerId)).finish());
  const keys = deriveFrameKeys(shared, peerId, options.selfId, clientKeyShare, bytes);
  const opener = new FrameOpener({
    keys,
    peerId,
    selfId: options.selfId,
    peerSerial: verified.serial,
    peerNotAfterMs: verified.notAfterMs,
    clock: options.clock,
    isRevoked: options.isRevoked,
  });
  return { bytes, opener };
}
