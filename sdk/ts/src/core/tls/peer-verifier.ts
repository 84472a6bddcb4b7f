import { type KeyObject, X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { ExpiringCache } from "../expiring-cache.js";
import { MeshError } from "../mesh-error.js";
import { type SpiffeId, peerSpiffeId } from "../spiffe-id.js";
import { readAgentGrant } from "./agent-grant.js";

export interface VerifiedPeer {
  spiffeId: SpiffeId;
  /** Agent names the certificate grants (sidecar identities); see agent-grant.ts. */
  allowedAgentNames: string[];
  /** For verifying envelopes this peer signs. */
  publicKey: KeyObject;
  /** Lower-case hex without leading zeros. */
  serial: string;
  notBeforeMs: number;
  notAfterMs: number;
}

const CACHE_LIMIT = 10_000;
/**
 * A verdict stays cached this long past its certificate's notAfter (a refusal:
 * this long after it was made), so a caller still showing an expired
 * certificate costs a map lookup per call, not a chain check.
 */
export const verdictRetentionMs = 60_000;

/**
 * Verifies a TLS peer's certificate chain against the trust bundle and reads its
 * SPIFFE ID. Mesh ports ask for client certificates without letting TLS reject
 * them (a joining sidecar has none yet), so this is where "chained to the trust
 * bundle" is enforced. Chain checks are cached by fingerprint; validity is
 * checked on every call, so an expired certificate stops working mid-connection.
 * A cached verdict is dropped once its certificate has expired: every renewal
 * brings a new fingerprint, and the cache must not keep them all.
 */
export class PeerVerifier {
  private roots: X509Certificate[] = [];
  private readonly cache = new ExpiringCache<VerifiedPeer | MeshError>(CACHE_LIMIT);

  constructor(
    private readonly trustDomain: string,
    /** Trust roots plus the intermediates the mesh CA issues from. */
    trustBundlePem: readonly string[] = [],
    /** Revoked serials (a sidecar's, from Connect): such a certificate is refused as `peer certificate revoked`. */
    private readonly isRevoked?: (serial: string) => boolean,
  ) {
    this.setTrustBundle(trustBundlePem);
  }

  setTrustBundle(trustBundlePem: readonly string[]): void {
    this.roots = trustBundlePem.map((pem) => new X509Certificate(pem));
    this.cache.clear();
  }

  /** Chain verdicts held (for tests and metrics: bounded by the certificates still valid, not by those ever seen). */
  get cachedVerdicts(): number {
    return this.cache.size;
  }

  verify(peer: PeerCertificate | undefined, nowMs: number): VerifiedPeer {
    // grpc-js hides a certificate TLS could not verify (another CA, expired), so
    // "none" and "not valid" look alike here: the message covers both.
    if (!peer || !peer.raw || Object.keys(peer).length === 0) {
      throw new MeshError("unauthenticated", "valid client certificate required");
    }
    const key = peer.fingerprint256;
    let verdict = this.cache.get(key, nowMs);
    if (!verdict) {
      verdict = this.verifyChain(peer);
      const usefulUntilMs = verdict instanceof MeshError ? nowMs : Math.max(verdict.notAfterMs, nowMs);
      this.cache.set(key, verdict, usefulUntilMs + verdictRetentionMs, nowMs);
    }
    if (verdict instanceof MeshError) throw verdict;
    if (nowMs < verdict.notBeforeMs || nowMs >= verdict.notAfterMs) throw new MeshError("unauthenticated", "client certificate expired or not yet valid");
    if (this.isRevoked?.(verdict.serial)) throw new MeshError("unauthenticated", "peer certificate revoked");
    return verdict;
  }

  private verifyChain(peer: PeerCertificate): VerifiedPeer | MeshError {
    try {
      const leaf = new X509Certificate(peer.raw);
      if (leaf.ca) return new MeshError("unauthenticated", "client certificate is a CA");
      // grpc-js exposes only the leaf (not the presented chain), so the anchors hold
      // the roots and any intermediate the mesh CA signs with.
      if (!this.roots.some((anchor) => issuedBy(leaf, anchor))) {
        return new MeshError("unauthenticated", "client certificate not issued by the mesh CA");
      }
      return {
        spiffeId: peerSpiffeId(leaf, this.trustDomain),
        allowedAgentNames: readAgentGrant(leaf),
        publicKey: leaf.publicKey,
        serial: normalizeSerial(leaf.serialNumber),
        notBeforeMs: Date.parse(leaf.validFrom),
        notAfterMs: Date.parse(leaf.validTo),
      };
    } catch (error) {
      if (error instanceof MeshError) return error;
      return new MeshError("unauthenticated", "client certificate unreadable");
    }
  }
}

function issuedBy(certificate: X509Certificate, issuer: X509Certificate): boolean {
  return issuer.ca && certificate.checkIssued(issuer) && certificate.verify(issuer.publicKey);
}

/** A certificate serial as agentmesh compares them: lower-case hex without leading zeros. */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, "");
}
