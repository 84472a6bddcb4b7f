import { type KeyObject, X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import type { SignedEnvelope } from "../../gen/agentmesh/v1/types.js";
import { ExpiringCache } from "../expiring-cache.js";
import { MeshError } from "../mesh-error.js";
import { verifyFailure } from "../signing.js";
import { type PeerVerifier, normalizeSerial, verdictRetentionMs } from "./peer-verifier.js";

/** The identity an mTLS connection's handshake proved (its certificate already verified). */
export interface ConnectionIdentity {
  spiffeId: string;
  serial: string;
  publicKey: KeyObject;
}

export interface SignerKeysOptions {
  /** Checks an attached certificate as a TLS peer's would be checked: chain, validity, one SPIFFE ID. */
  verifier: PeerVerifier;
  /** Revocation of an attached certificate; absent where no revocation list is kept. */
  isRevoked?: (serial: string) => boolean;
  /** Parsed attached leaves kept at most (default 10,000); expired ones are dropped long before. */
  maxCachedLeaves?: number;
}

interface AttachedLeaf {
  presented: PeerCertificate;
  serial: string;
}

const defaultMaxCachedLeaves = 10_000;

/**
 * Which key must have signed an envelope that arrived on an mTLS connection
 * (docs/signing.md §5). A sender signs with its current key; after a renewal
 * that is a new key while a connection opened earlier still shows the previous
 * certificate, so the sender attaches its current chain (`signer_chain`, leaf
 * first). The rule, used alike by the server (registrations, Hello) and the
 * sidecars (every tunnel call):
 *
 * - no attached leaf, or the connection's own certificate attached: the
 *   connection's key;
 * - another attached leaf: its key, if it chains to the trust bundle, is within
 *   its validity now, is not revoked and names the same SPIFFE ID as the
 *   connection. Anything else is refused (`UNAUTHENTICATED`), before any
 *   signature is checked.
 *
 * The connection's certificate itself stays the caller's authentication: the
 * caller checks it (chain, validity) before asking for a key.
 */
export class SignerKeys {
  private readonly attached: ExpiringCache<AttachedLeaf>;

  constructor(private readonly options: SignerKeysOptions) {
    this.attached = new ExpiringCache(options.maxCachedLeaves ?? defaultMaxCachedLeaves);
  }

  /** Parsed leaves held (bounded by the senders' certificates still valid, not by every renewal seen). */
  get cachedLeaves(): number {
    return this.attached.size;
  }

  keyFor(envelope: Pick<SignedEnvelope, "signerChain">, connection: ConnectionIdentity, nowMs: number): KeyObject {
    const leafDer = envelope.signerChain[0];
    if (leafDer === undefined || leafDer.length === 0) return connection.publicKey;
    const leaf = this.parsed(leafDer, nowMs);
    // The connection's own certificate: nothing more to check (a forged leaf with a
    // copied serial gains nothing, the connection's key is what is returned).
    if (leaf.serial === connection.serial) return connection.publicKey;
    const verified = this.options.verifier.verify(leaf.presented, nowMs);
    if (verified.spiffeId.uri !== connection.spiffeId) throw new MeshError("unauthenticated", verifyFailure.signerMismatch);
    if (this.options.isRevoked?.(verified.serial)) throw new MeshError("unauthenticated", "signer certificate revoked");
    return verified.publicKey;
  }

  /**
   * The attached leaf as a TLS peer certificate. Parsing costs more than the
   * signature check itself, and a sender attaches the same leaf to every envelope
   * until it renews, so parsed leaves are kept; chain, validity and revocation are
   * still checked on every envelope. A leaf is forgotten once it has expired (it
   * can no longer verify anything), so renewals do not pile up.
   */
  private parsed(leafDer: Uint8Array, nowMs: number): AttachedLeaf {
    const key = Buffer.from(leafDer.buffer, leafDer.byteOffset, leafDer.byteLength).toString("base64");
    let leaf = this.attached.get(key, nowMs);
    if (!leaf) {
      let certificate: X509Certificate;
      try {
        certificate = new X509Certificate(leafDer);
      } catch {
        throw new MeshError("unauthenticated", "signer certificate unreadable");
      }
      leaf = {
        presented: { raw: Buffer.from(leafDer), fingerprint256: certificate.fingerprint256 } as PeerCertificate,
        serial: normalizeSerial(certificate.serialNumber),
      };
      const notAfterMs = Date.parse(certificate.validTo);
      this.attached.set(key, leaf, (Number.isFinite(notAfterMs) ? Math.max(notAfterMs, nowMs) : nowMs) + verdictRetentionMs, nowMs);
    }
    return leaf;
  }
}
