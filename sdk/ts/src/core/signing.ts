import { hash, randomFillSync, sign, verify } from "node:crypto";
import type { KeyObject, X509Certificate } from "node:crypto";
import type { SignedEnvelope } from "../gen/agentmesh/v1/types.js";
import type { Clock } from "./clock.js";
import { MeshError } from "./mesh-error.js";
import type { NonceCache } from "./nonce-cache.js";
import { spiffeIdsFromCertificate } from "./spiffe-id.js";

/** Domain-separation prefix of every signed byte string (docs/signing.md). */
export const signatureDomain = "agentmesh-sig-v1";
export const nonceLengthBytes = 16;
export const defaultSignatureWindowMs = 30_000;

/** The `alg` of a SignedEnvelope (docs/signing.md §3). */
export type SignatureAlg = "ES256" | "Ed25519";
export const signatureAlgs: readonly SignatureAlg[] = ["ES256", "Ed25519"];

/**
 * The short reasons verifyEnvelope gives, in the order it checks them. They are
 * the MeshError("unauthenticated") messages callers see, and the test vectors name them.
 */
export const verifyFailure = {
  unsupportedAlg: "unsupported signature algorithm",
  badNonceLength: "nonce must be 16 bytes",
  signerMismatch: "signer mismatch",
  audienceMismatch: "audience mismatch",
  methodMismatch: "method mismatch",
  payloadTypeMismatch: "payload type mismatch",
  timestampOutsideWindow: "timestamp outside window",
  badSignature: "signature invalid",
  replayedNonce: "nonce replayed",
} as const;
/** One of the reasons of {@link verifyFailure}. */
export type VerifyFailureReason = (typeof verifyFailure)[keyof typeof verifyFailure];

/** Everything the signature covers besides the payload itself. */
export interface CanonicalFields {
  signer: string;
  audience: string;
  method: string;
  payloadType: string;
  issuedAtMs: number;
  nonce: Uint8Array;
  /** SHA-256 of the exact payload bytes as sent. */
  payloadSha256: Uint8Array;
}

const prefixBytes = Buffer.from(signatureDomain, "utf8");
const maxUint64Safe = Number.MAX_SAFE_INTEGER;

/** The §2 canonical bytes of an envelope's fields (what its signature, or a frame MAC, covers). */
export function envelopeCanonicalBytes(envelope: Pick<SignedEnvelope, "signer" | "audience" | "method" | "payloadType" | "issuedAtMs" | "nonce" | "payload">): Buffer {
  return canonicalBytes({
    signer: envelope.signer,
    audience: envelope.audience,
    method: envelope.method,
    payloadType: envelope.payloadType,
    issuedAtMs: envelope.issuedAtMs,
    nonce: envelope.nonce,
    payloadSha256: sha256(envelope.payload),
  });
}

/**
 * "agentmesh-sig-v1" || lp(signer) || lp(audience) || lp(method) || lp(payload_type)
 * || u64be(issued_at_ms) || lp(nonce) || lp(sha256(payload)), lp = u32be length + bytes.
 */
export function canonicalBytes(fields: CanonicalFields): Buffer {
  if (!Number.isInteger(fields.issuedAtMs) || fields.issuedAtMs < 0 || fields.issuedAtMs > maxUint64Safe) {
    throw new MeshError("invalidArgument", "issuedAtMs must be a non-negative integer");
  }
  const signerLength = Buffer.byteLength(fields.signer, "utf8");
  const audienceLength = Buffer.byteLength(fields.audience, "utf8");
  const methodLength = Buffer.byteLength(fields.method, "utf8");
  const payloadTypeLength = Buffer.byteLength(fields.payloadType, "utf8");
  const total =
    prefixBytes.length +
    4 * 6 +
    signerLength +
    audienceLength +
    methodLength +
    payloadTypeLength +
    8 +
    fields.nonce.byteLength +
    fields.payloadSha256.byteLength;
  // One allocation and sequential writes: this runs on every Invoke.
  const out = Buffer.allocUnsafe(total);
  let offset = prefixBytes.copy(out, 0);
  offset = writeLengthPrefixedString(out, offset, fields.signer, signerLength);
  offset = writeLengthPrefixedString(out, offset, fields.audience, audienceLength);
  offset = writeLengthPrefixedString(out, offset, fields.method, methodLength);
  offset = writeLengthPrefixedString(out, offset, fields.payloadType, payloadTypeLength);
  // u64 as two u32 halves: exact for every safe integer and cheaper than BigInt.
  offset = out.writeUInt32BE(Math.floor(fields.issuedAtMs / 0x1_0000_0000), offset);
  offset = out.writeUInt32BE(fields.issuedAtMs >>> 0, offset);
  offset = writeLengthPrefixedBytes(out, offset, fields.nonce);
  writeLengthPrefixedBytes(out, offset, fields.payloadSha256);
  return out;
}

function writeLengthPrefixedString(out: Buffer, offset: number, value: string, length: number): number {
  const start = out.writeUInt32BE(length, offset);
  return start + out.write(value, start, length, "utf8");
}

function writeLengthPrefixedBytes(out: Buffer, offset: number, value: Uint8Array): number {
  const start = out.writeUInt32BE(value.byteLength, offset);
  out.set(value, start);
  return start + value.byteLength;
}

export function sha256(data: Uint8Array): Buffer {
  return hash("sha256", data, "buffer");
}

// Nonces come from a pool filled 256 at a time: one RNG call instead of one per
// envelope. Each refill allocates a new pool, so handed-out nonces never change.
const noncePoolBytes = 256 * 16;
let noncePool = Buffer.alloc(0);
let noncePoolOffset = 0;

function pooledRandomBytes(size: number): Uint8Array {
  if (noncePoolOffset + size > noncePool.length) {
    noncePool = randomFillSync(Buffer.allocUnsafeSlow(Math.max(noncePoolBytes, size)));
    noncePoolOffset = 0;
  }
  const bytes = noncePool.subarray(noncePoolOffset, noncePoolOffset + size);
  noncePoolOffset += size;
  return bytes;
}

/** The signature algorithm a key signs with, or undefined when agentmesh does not support it. */
export function algForKey(key: KeyObject): SignatureAlg | undefined {
  if (key.asymmetricKeyType === "ed25519") return "Ed25519";
  if (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1") return "ES256";
  return undefined;
}

const algByKey = new WeakMap<KeyObject, SignatureAlg | null>();

function cachedAlgForKey(key: KeyObject): SignatureAlg | undefined {
  let alg = algByKey.get(key);
  if (alg === undefined) {
    alg = algForKey(key) ?? null;
    algByKey.set(key, alg);
  }
  return alg ?? undefined;
}

/** What {@link signEnvelope} signs, for whom, and with which key. */
export interface SignEnvelopeInput {
  /** Exact bytes that will be sent; never re-encoded afterwards. */
  payload: Uint8Array;
  signer: string;
  audience: string;
  method: string;
  payloadType: string;
  /** Parse once (createPrivateKey) and reuse; P-256 signs ES256, Ed25519 signs Ed25519. */
  privateKey: KeyObject;
  clock: Clock;
  randomBytes?: (size: number) => Uint8Array;
  /** DER chain (leaf first) to attach when the receiver lacks it from mTLS. */
  signerChain?: Uint8Array[];
}

/**
 * Signs `payload` as docs/signing.md §4 says: a fresh 16-byte nonce, the clock's time,
 * the canonical bytes of §2, ES256 (IEEE P1363) or Ed25519 by the key's type.
 */
export function signEnvelope(input: SignEnvelopeInput): SignedEnvelope {
  const alg = cachedAlgForKey(input.privateKey);
  if (alg === undefined || input.privateKey.type !== "private") {
    throw new MeshError("invalidArgument", "signing key must be an ECDSA P-256 or Ed25519 private key");
  }
  const random = (input.randomBytes ?? pooledRandomBytes)(nonceLengthBytes);
  const nonce = Buffer.isBuffer(random) ? random : Buffer.from(random);
  if (nonce.length !== nonceLengthBytes) throw new MeshError("invalidArgument", "random source must give 16 bytes");
  const payload = Buffer.from(input.payload.buffer, input.payload.byteOffset, input.payload.byteLength);
  const issuedAtMs = input.clock.nowMs();
  const data = canonicalBytes({
    signer: input.signer,
    audience: input.audience,
    method: input.method,
    payloadType: input.payloadType,
    issuedAtMs,
    nonce,
    payloadSha256: sha256(payload),
  });
  return {
    payload,
    signer: input.signer,
    alg,
    signature: signCanonical(alg, data, input.privateKey),
    issuedAtMs,
    nonce,
    audience: input.audience,
    method: input.method,
    payloadType: input.payloadType,
    signerChain: (input.signerChain ?? []).map((der) => Buffer.from(der)),
  };
}

function signCanonical(alg: SignatureAlg, data: Buffer, key: KeyObject): Buffer {
  return alg === "ES256" ? sign("sha256", data, { key, dsaEncoding: "ieee-p1363" }) : sign(null, data, key);
}

const publicKeyByCertificate = new WeakMap<X509Certificate, KeyObject>();

/** The certificate's public key, parsed once per certificate object. */
function certificatePublicKey(certificate: X509Certificate): KeyObject {
  let key = publicKeyByCertificate.get(certificate);
  if (!key) {
    key = certificate.publicKey;
    publicKeyByCertificate.set(certificate, key);
  }
  return key;
}

/** The key to verify with and what the receiver expects (docs/signing.md §5). */
export interface VerifyEnvelopeOptions {
  /** The signer's key; give this or `certificate`. */
  publicKey?: KeyObject;
  /**
   * The signer's certificate (usually the mTLS peer's). Its single URI SAN must
   * equal `envelope.signer`, so a key can never sign for another identity.
   */
  certificate?: X509Certificate;
  /** The identity the envelope must come from, or a rule (e.g. sidecars allowed to forward). */
  expectedSigner: string | ((signer: string) => boolean);
  expectedAudience: string;
  expectedMethod: string;
  expectedPayloadType: string;
  clock: Clock;
  nonceCache: NonceCache;
  windowMs?: number;
}

function reject(reason: VerifyFailureReason): never {
  throw new MeshError("unauthenticated", reason);
}

function signerAccepted(envelope: SignedEnvelope, options: VerifyEnvelopeOptions): boolean {
  const expected = options.expectedSigner;
  if (typeof expected === "string" ? envelope.signer !== expected : !expected(envelope.signer)) return false;
  if (options.certificate) {
    const uris = spiffeIdsFromCertificate(options.certificate);
    return uris.length === 1 && uris[0] === envelope.signer;
  }
  return true;
}

function signatureValid(envelope: SignedEnvelope, key: KeyObject): boolean {
  const alg = envelope.alg as SignatureAlg;
  // A key of the other type must not be tried: the alg field names what was used.
  if (cachedAlgForKey(key) !== alg || envelope.signature.length !== 64) return false;
  const data = envelopeCanonicalBytes(envelope);
  try {
    return alg === "ES256"
      ? verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, envelope.signature)
      : verify(null, data, key, envelope.signature);
  } catch {
    return false;
  }
}

/**
 * Checks an envelope before its payload is decoded. Throws
 * MeshError("unauthenticated", reason) at the first failing check, in the order of
 * `verifyFailure`. The nonce is remembered only once the signature is good, so a
 * forged envelope cannot burn a legitimate sender's nonce.
 */
export async function verifyEnvelope(envelope: SignedEnvelope, options: VerifyEnvelopeOptions): Promise<void> {
  const key = options.publicKey ?? (options.certificate ? certificatePublicKey(options.certificate) : undefined);
  if (!key) throw new MeshError("invalidArgument", "verifyEnvelope needs a publicKey or certificate");
  if (!(signatureAlgs as readonly string[]).includes(envelope.alg)) reject(verifyFailure.unsupportedAlg);
  if (envelope.nonce.length !== nonceLengthBytes) reject(verifyFailure.badNonceLength);
  if (!signerAccepted(envelope, options)) reject(verifyFailure.signerMismatch);
  if (envelope.audience !== options.expectedAudience) reject(verifyFailure.audienceMismatch);
  if (envelope.method !== options.expectedMethod) reject(verifyFailure.methodMismatch);
  if (envelope.payloadType !== options.expectedPayloadType) reject(verifyFailure.payloadTypeMismatch);
  const windowMs = options.windowMs ?? defaultSignatureWindowMs;
  const skewMs = options.clock.nowMs() - envelope.issuedAtMs;
  if (!Number.isSafeInteger(envelope.issuedAtMs) || skewMs > windowMs || skewMs < -windowMs) {
    reject(verifyFailure.timestampOutsideWindow);
  }
  if (!signatureValid(envelope, key)) reject(verifyFailure.badSignature);
  const fresh = await options.nonceCache.checkAndRemember(envelope.signer, envelope.nonce, envelope.issuedAtMs);
  if (!fresh) reject(verifyFailure.replayedNonce);
}
