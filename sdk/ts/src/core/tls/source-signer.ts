import { type KeyObject, X509Certificate, createPrivateKey } from "node:crypto";
import type { SignedEnvelope } from "../../gen/agentmesh/v1/types.js";
import type { Clock } from "../clock.js";
import { signEnvelope } from "../signing.js";
import type { CertificateSource } from "./certificate-source.js";

/**
 * Signs envelopes with the current key of a CertificateSource, following its
 * renewals; the parsed key (and the chain in DER) is cached per certificate.
 */
export class SourceSigner {
  private cached: { serial: string; key: KeyObject; chainDer: Buffer[] } | undefined;

  constructor(
    private readonly source: CertificateSource,
    private readonly clock: Clock,
  ) {}

  /** `withChain` puts the signer's certificate chain in the envelope, for receivers that do not know it. */
  sign(payload: Uint8Array, method: string, payloadType: string, audience: string, withChain = false): SignedEnvelope {
    const identity = this.source.current;
    if (!identity) throw new Error("no certificate yet");
    if (this.cached?.serial !== identity.serial) {
      this.cached = {
        serial: identity.serial,
        key: createPrivateKey(identity.privateKeyPem),
        chainDer: identity.chainPem.map((pem) => new X509Certificate(pem).raw),
      };
    }
    return signEnvelope({
      payload,
      signer: identity.spiffeId,
      audience,
      method,
      payloadType,
      privateKey: this.cached.key,
      clock: this.clock,
      signerChain: withChain ? this.cached.chainDer : undefined,
    });
  }
}
