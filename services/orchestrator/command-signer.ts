import { type KeyObject, X509Certificate, createPrivateKey } from "node:crypto";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { signEnvelope } from "../../sdk/ts/src/core/signing.js";
import type { CertificateSource } from "../../sdk/ts/src/core/tls/certificate-source.js";
import { Command } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";

export const commandMethod = "/agentmesh.v1.OrchestratorService/Connect";
export const commandType = "agentmesh.v1.Command";

/**
 * Signs lifecycle commands with the server's current certificate key. The
 * envelope carries the certificate chain, so a sidecar verifies the command
 * against its trust bundle without knowing which replica sent it.
 */
export class CommandSigner {
  private cached: { serial: string; key: KeyObject; chainDer: Buffer[] } | undefined;

  constructor(
    private readonly source: CertificateSource,
    private readonly clock: Clock,
  ) {}

  sign(command: Command, audience: string): Command {
    const identity = this.source.current;
    if (!identity) throw new Error("server has no certificate yet");
    if (this.cached?.serial !== identity.serial) {
      this.cached = {
        serial: identity.serial,
        key: createPrivateKey(identity.privateKeyPem),
        chainDer: identity.chainPem.map((pem) => new X509Certificate(pem).raw),
      };
    }
    const payload = Command.encode({ ...command, envelope: undefined }).finish();
    const envelope = signEnvelope({
      payload,
      signer: identity.spiffeId,
      audience,
      method: commandMethod,
      payloadType: commandType,
      privateKey: this.cached.key,
      clock: this.clock,
      signerChain: this.cached.chainDer,
    });
    return { ...command, envelope };
  }
}
