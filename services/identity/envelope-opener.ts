import type { KeyObject } from "node:crypto";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { NonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { verifyEnvelope } from "../../sdk/ts/src/core/signing.js";
import type { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignerKeys } from "../../sdk/ts/src/core/tls/signer-keys.js";
import type { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { CallerIdentity } from "../server/call-context.js";
import type { RevocationList } from "./domain/revocations.js";

/** What signed requests to the control plane name as their audience. */
export function controlPlaneAudience(trustDomain: string): string {
  return `spiffe://${trustDomain}/server`;
}

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
  private readonly signerKeys: SignerKeys | undefined;

  constructor(
    private readonly trustDomain: string,
    private readonly nonceCache: NonceCache,
    private readonly clock: Clock,
    signerChain?: SignerChainCheck,
  ) {
    // A client that renewed (new key) keeps using its open connection, whose
    // handshake still shows the previous certificate: the rule is shared with the
    // sidecars' tunnels (SignerKeys).
    this.signerKeys = signerChain
      ? new SignerKeys({ verifier: signerChain.verifier, isRevoked: (serial) => signerChain.revocations.isRevoked({ serial }) })
      : undefined;
  }

  /**
   * Without a caller key (plaintext dev mode) there is nothing to verify against,
   * so unsigned requests are accepted and undefined is answered.
   */
  async open(envelope: SignedEnvelope | undefined, caller: CallerIdentity, method: string, payloadType: string): Promise<Uint8Array | undefined> {
    const connectionKey = caller.publicKey;
    if (!connectionKey) return undefined;
    if (!envelope) throw new MeshError("unauthenticated", "signed envelope required");
    await verifyEnvelope(envelope, {
      publicKey: this.signingKey(envelope, caller, connectionKey),
      expectedSigner: caller.spiffeId,
      expectedAudience: controlPlaneAudience(this.trustDomain),
      expectedMethod: method,
      expectedPayloadType: payloadType,
      clock: this.clock,
      nonceCache: this.nonceCache,
    });
    return envelope.payload;
  }

  private signingKey(envelope: SignedEnvelope, caller: CallerIdentity, connectionKey: KeyObject): KeyObject {
    if (!this.signerKeys || caller.serial === undefined) return connectionKey;
    return this.signerKeys.keyFor(envelope, { spiffeId: caller.spiffeId, serial: caller.serial, publicKey: connectionKey }, this.clock.nowMs());
  }
}
