import { type KeyObject, X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import type { SignedEnvelope } from "../../gen/agentmesh/v1/types.js";
import { MeshError } from "../mesh-error.js";
import { verifyFailure } from "../signing.js";
import { type PeerVerifier, normalizeSerial } from "./peer-verifier.js";

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
  /** Parsed attached leaves kept (default 10,000); the cache starts over beyond it. */
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
  private readonly attached = new Map<string, AttachedLeaf>();
  private readonly maxCachedLeaves: number;

  constructor(private readonly options: SignerKeysOptions) {
    this.maxCachedLeaves = options.maxCachedLeaves ?? defaultMaxCachedLeaves;
  }

  keyFor(envelope: Pick<SignedEnvelope, "signerChain">, connection: ConnectionIdentity, nowMs: number): KeyObject {
    const leafDer = envelope.signerChain[0];
    if (leafDer === undefined || leafDer.length === 0) return connection.publicKey;
    const leaf = this.parsed(leafDer);
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
   * still checked on every envelope.
   */
  private parsed(leafDer: Uint8Array): AttachedLeaf {
    const key = Buffer.from(leafDer.buffer, leafDer.byteOffset, leafDer.byteLength).toString("base64");
    let leaf = this.attached.get(key);
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
      if (this.attached.size >= this.maxCachedLeaves) this.attached.clear();
      this.attached.set(key, leaf);
    }
    return leaf;
  }
}
