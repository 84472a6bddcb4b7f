import type { Clock } from "../../sdk/ts/src/core/clock.js";
import type { CertificateSource } from "../../sdk/ts/src/core/tls/certificate-source.js";
import { SourceSigner } from "../../sdk/ts/src/core/tls/source-signer.js";
import { Command } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";

export const commandMethod = "/agentmesh.v1.OrchestratorService/Connect";
export const commandType = "agentmesh.v1.Command";

/**
 * Signs lifecycle commands with the server's current certificate key. The
 * envelope carries the certificate chain, so a sidecar verifies the command
 * against its trust bundle without knowing which replica sent it.
 */
export class CommandSigner {
  private readonly signer: SourceSigner;

  constructor(source: CertificateSource, clock: Clock) {
    this.signer = new SourceSigner(source, clock);
  }

  sign(command: Command, audience: string): Command {
    const payload = Command.encode({ ...command, envelope: undefined }).finish();
    return { ...command, envelope: this.signer.sign(payload, commandMethod, commandType, audience, true) };
  }
}
