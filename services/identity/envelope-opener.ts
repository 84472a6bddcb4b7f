import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { NonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { verifyEnvelope } from "../../sdk/ts/src/core/signing.js";
import type { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { CallerIdentity } from "../server/call-context.js";

/** What signed requests to the control plane name as their audience. */
export function controlPlaneAudience(trustDomain: string): string {
  return `spiffe://${trustDomain}/server`;
}

/**
 * Checks a signed request before anything decodes its payload: signed by the mTLS
 * peer's own key, for this control plane, this method and this message type,
 * fresh, and never seen before. Answers the payload bytes exactly as signed.
 */
export class EnvelopeOpener {
  constructor(
    private readonly trustDomain: string,
    private readonly nonceCache: NonceCache,
    private readonly clock: Clock,
  ) {}

  /**
   * Without a caller key (plaintext dev mode) there is nothing to verify against,
   * so unsigned requests are accepted and undefined is answered.
   */
  async open(envelope: SignedEnvelope | undefined, caller: CallerIdentity, method: string, payloadType: string): Promise<Uint8Array | undefined> {
    if (!caller.publicKey) return undefined;
    if (!envelope) throw new MeshError("unauthenticated", "signed envelope required");
    await verifyEnvelope(envelope, {
      publicKey: caller.publicKey,
      expectedSigner: caller.spiffeId,
      expectedAudience: controlPlaneAudience(this.trustDomain),
      expectedMethod: method,
      expectedPayloadType: payloadType,
      clock: this.clock,
      nonceCache: this.nonceCache,
    });
    return envelope.payload;
  }
}
