// Dashboard bearer tokens: a signed envelope (docs/signing.md) that an admin's ctl
// makes with its own certificate key, so no RPC and no server-side secret is
// needed, and a token dies with the admin certificate (expiry or revocation).
//
//   token   = base64url(agentmesh.v1.SignedEnvelope, protobuf), signer_chain = [admin leaf DER]
//   payload = UTF-8 JSON {"expiresAtMs": <epoch ms>}
//   audience = spiffe://<trust-domain>/server, method = "GET /dashboard",
//   payload_type = "agentmesh.dashboard.v1.TokenClaims"
//
// The server accepts it while: the leaf chains to the mesh CA, is valid now, is an
// `/admin/` identity of its trust domain and not revoked; the signature checks;
// it was issued at most `maxTokenTtlMs` ago (and not in the future); and now is
// before expiresAtMs, which may be at most `maxTokenTtlMs` after issue.
import { type KeyObject, X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { NonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { defaultSignatureWindowMs, signEnvelope, verifyEnvelope } from "../../sdk/ts/src/core/signing.js";
import { parseSpiffeId } from "../../sdk/ts/src/core/spiffe-id.js";
import type { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";

export const dashboardTokenMethod = "GET /dashboard";
export const dashboardTokenPayloadType = "agentmesh.dashboard.v1.TokenClaims";
export const maxTokenTtlMs = 12 * 60 * 60_000;
/** A token is a few hundred bytes of certificate plus the envelope; anything far larger is not one. */
const maxTokenChars = 8192;

export interface CreateDashboardTokenInput {
  /** The admin's SPIFFE ID (spiffe://<td>/admin/<name>). */
  spiffeId: string;
  privateKey: KeyObject;
  /** The admin certificate (leaf), DER. */
  leafDer: Uint8Array;
  ttlMs: number;
  clock: Clock;
}

/** What `ctl dashboard-token` prints: the token and when it stops working. */
export function createDashboardToken(input: CreateDashboardTokenInput): { token: string; expiresAtMs: number } {
  validateTokenTtlMs(input.ttlMs);
  const id = parseSpiffeId(input.spiffeId);
  if (id.kind !== "admin") throw new MeshError("invalidArgument", "dashboard tokens are signed with admin credentials (ctl init-admin)");
  const expiresAtMs = input.clock.nowMs() + input.ttlMs;
  const envelope = signEnvelope({
    payload: Buffer.from(JSON.stringify({ expiresAtMs }), "utf8"),
    signer: input.spiffeId,
    audience: tokenAudience(id.trustDomain),
    method: dashboardTokenMethod,
    payloadType: dashboardTokenPayloadType,
    privateKey: input.privateKey,
    clock: input.clock,
    signerChain: [input.leafDer],
  });
  return { token: Buffer.from(SignedEnvelope.encode(envelope).finish()).toString("base64url"), expiresAtMs };
}

export function validateTokenTtlMs(ttlMs: number): void {
  if (!Number.isInteger(ttlMs) || ttlMs < 1000 || ttlMs > maxTokenTtlMs) {
    throw new MeshError("invalidArgument", `token lifetime must be 1s-${maxTokenTtlMs / 3_600_000}h`);
  }
}

/** Who a verified token speaks for, and until when (the earlier of its expiry and its certificate's). */
export interface DashboardSession {
  spiffeId: string;
  serial: string;
  expiresAtMs: number;
}

export interface DashboardTokenVerifierOptions {
  trustDomain: string;
  /** The verifier the mTLS interceptor uses: chain to the mesh CA, validity, SPIFFE ID. */
  verifier: PeerVerifier;
  revocations: { isRevoked(query: { serial: string }): boolean };
  clock: Clock;
}

/**
 * A bearer token is presented again on every request until it expires, so nonces
 * are not remembered (the envelope signature still binds issue time and expiry).
 */
const reusableNonces: NonceCache = { checkAndRemember: () => true };

export class DashboardTokenVerifier {
  constructor(private readonly options: DashboardTokenVerifierOptions) {}

  /** Throws MeshError("unauthenticated") with a short reason; answers the session otherwise. */
  async verify(token: string): Promise<DashboardSession> {
    const envelope = decodeToken(token);
    const leafDer = envelope.signerChain[0];
    if (!leafDer || leafDer.length === 0) throw unauthenticated("token carries no certificate");
    const nowMs = this.options.clock.nowMs();
    const verified = this.options.verifier.verify(presented(leafDer), nowMs);
    if (verified.spiffeId.kind !== "admin") throw unauthenticated("token not signed by an admin identity");
    if (this.options.revocations.isRevoked({ serial: verified.serial })) throw unauthenticated("token certificate revoked");
    await verifyEnvelope(envelope, {
      publicKey: verified.publicKey,
      expectedSigner: verified.spiffeId.uri,
      expectedAudience: tokenAudience(this.options.trustDomain),
      expectedMethod: dashboardTokenMethod,
      expectedPayloadType: dashboardTokenPayloadType,
      clock: this.options.clock,
      nonceCache: reusableNonces,
      windowMs: maxTokenTtlMs,
    });
    // verifyEnvelope's window is symmetric; a token from the future is only clock skew.
    if (envelope.issuedAtMs > nowMs + defaultSignatureWindowMs) throw unauthenticated("token issued in the future");
    const expiresAtMs = readExpiry(envelope.payload);
    if (expiresAtMs <= envelope.issuedAtMs || expiresAtMs - envelope.issuedAtMs > maxTokenTtlMs) throw unauthenticated("token lifetime not allowed");
    if (nowMs >= expiresAtMs) throw unauthenticated("token expired");
    return { spiffeId: verified.spiffeId.uri, serial: verified.serial, expiresAtMs: Math.min(expiresAtMs, verified.notAfterMs) };
  }

  /** Whether a session verified earlier still holds now (expiry and revocation, no signature work). */
  stillValid(session: DashboardSession): boolean {
    return this.options.clock.nowMs() < session.expiresAtMs && !this.options.revocations.isRevoked({ serial: session.serial });
  }
}

function tokenAudience(trustDomain: string): string {
  return `spiffe://${trustDomain}/server`;
}

function unauthenticated(reason: string): MeshError {
  return new MeshError("unauthenticated", reason);
}

function decodeToken(token: string): SignedEnvelope {
  if (token.length === 0 || token.length > maxTokenChars || !/^[A-Za-z0-9_-]+$/.test(token)) throw unauthenticated("token malformed");
  const bytes = Buffer.from(token, "base64url");
  // Decoding is lenient (stray trailing characters are dropped): accept only the one spelling of the bytes.
  if (bytes.toString("base64url") !== token) throw unauthenticated("token malformed");
  try {
    return SignedEnvelope.decode(bytes);
  } catch {
    throw unauthenticated("token malformed");
  }
}

/** The leaf as the TLS peer shape PeerVerifier checks (the same as an mTLS client's). */
function presented(leafDer: Uint8Array): PeerCertificate {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(leafDer);
  } catch {
    throw unauthenticated("token certificate unreadable");
  }
  return { raw: Buffer.from(leafDer), fingerprint256: leaf.fingerprint256 } as PeerCertificate;
}

function readExpiry(payload: Uint8Array): number {
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload).toString("utf8"));
  } catch {
    throw unauthenticated("token malformed");
  }
  const expiresAtMs = (claims as { expiresAtMs?: unknown } | null)?.expiresAtMs;
  if (typeof expiresAtMs !== "number" || !Number.isSafeInteger(expiresAtMs)) throw unauthenticated("token malformed");
  return expiresAtMs;
}
