import type { KeyObject } from "node:crypto";
import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { NonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { verifyEnvelope } from "../../sdk/ts/src/core/signing.js";
import type { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import type { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { CallerIdentity } from "../server/call-context.js";
import type { RevocationList } from "./domain/revocations.js";

/** What signed requests to the control plane name as their audience. */
export function controlPlaneAudience(trustDomain: string): string {
  return `spiffe://${trustDomain}/server`;
}

const maxParsedLeaves = 10_000;

/** Checks a certificate a signer attaches (signer_chain), as the mTLS interceptor checks peers. */
export interface SignerChainCheck {
  verifier: PeerVerifier;
  revocations: RevocationList;
}

/**
 * Checks a signed request before anything decodes its payload: signed by the mTLS
 * peer's own key, for this control plane, this method and this message type,
 * fresh, and never seen before. Answers the payload bytes exactly as signed.
 */
export class EnvelopeOpener {
  private readonly presentedByDer = new Map<string, PeerCertificate>();

  constructor(
    private readonly trustDomain: string,
    private readonly nonceCache: NonceCache,
    private readonly clock: Clock,
    private readonly signerChain?: SignerChainCheck,
  ) {}

  /**
   * Without a caller key (plaintext dev mode) there is nothing to verify against,
   * so unsigned requests are accepted and undefined is answered.
   */
  async open(envelope: SignedEnvelope | undefined, caller: CallerIdentity, method: string, payloadType: string): Promise<Uint8Array | undefined> {
    if (!caller.publicKey) return undefined;
    if (!envelope) throw new MeshError("unauthenticated", "signed envelope required");
    await verifyEnvelope(envelope, {
      publicKey: this.signingKey(envelope, caller),
      expectedSigner: caller.spiffeId,
      expectedAudience: controlPlaneAudience(this.trustDomain),
      expectedMethod: method,
      expectedPayloadType: payloadType,
      clock: this.clock,
      nonceCache: this.nonceCache,
    });
    return envelope.payload;
  }

  /**
   * The mTLS peer's key, or the key of a newer certificate of the same identity
   * attached in signer_chain: a client that renewed (new key) keeps using its open
   * connection, whose handshake still shows the previous certificate.
   */
  private signingKey(envelope: SignedEnvelope, caller: CallerIdentity): KeyObject | undefined {
    const leafDer = envelope.signerChain[0];
    if (!leafDer || !this.signerChain || leafDer.length === 0) return caller.publicKey;
    const verified = this.signerChain.verifier.verify(this.presented(leafDer), this.clock.nowMs());
    if (verified.serial === caller.serial) return caller.publicKey;
    if (verified.spiffeId.uri !== caller.spiffeId) throw new MeshError("unauthenticated", "signer mismatch");
    if (this.signerChain.revocations.isRevoked({ serial: verified.serial })) throw new MeshError("unauthenticated", "signer certificate revoked");
    return verified.publicKey;
  }

  /**
   * The attached leaf as a TLS peer certificate. Parsing costs more than the
   * signature check itself, and a client attaches the same leaf to every envelope
   * until it renews, so parsed leaves are kept (chain, validity and revocation are
   * still checked on every call by the verifier).
   */
  private presented(leafDer: Uint8Array): PeerCertificate {
    const key = Buffer.from(leafDer.buffer, leafDer.byteOffset, leafDer.byteLength).toString("base64");
    let presented = this.presentedByDer.get(key);
    if (!presented) {
      let leaf: X509Certificate;
      try {
        leaf = new X509Certificate(leafDer);
      } catch {
        throw new MeshError("unauthenticated", "signer certificate unreadable");
      }
      presented = { raw: Buffer.from(leafDer), fingerprint256: leaf.fingerprint256 } as PeerCertificate;
      if (this.presentedByDer.size >= maxParsedLeaves) this.presentedByDer.clear();
      this.presentedByDer.set(key, presented);
    }
    return presented;
  }
}
