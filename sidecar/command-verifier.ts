import { X509Certificate } from "node:crypto";
import type { Clock } from "../sdk/ts/src/core/clock.js";
import { MeshError } from "../sdk/ts/src/core/mesh-error.js";
import type { NonceCache } from "../sdk/ts/src/core/nonce-cache.js";
import { verifyEnvelope } from "../sdk/ts/src/core/signing.js";
import { peerSpiffeId } from "../sdk/ts/src/core/spiffe-id.js";
import type { CertificateSource } from "../sdk/ts/src/core/tls/certificate-source.js";
import { Command } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";

const commandMethod = "/agentmesh.v1.OrchestratorService/Connect";
const commandType = "agentmesh.v1.Command";

/**
 * Lifecycle commands are signed by the server that sent them, with its
 * certificate in the envelope: the certificate must chain to our trust bundle
 * and name a server of our trust domain; then the usual signature, audience,
 * freshness and replay checks. Answers the command exactly as signed.
 */
export async function verifyCommand(command: Command, options: { source: CertificateSource; selfSpiffeId: string; trustDomain: string; clock: Clock; nonceCache: NonceCache }): Promise<Command> {
  const envelope = command.envelope;
  if (!envelope) throw new MeshError("unauthenticated", "command is not signed");
  const leafDer = envelope.signerChain[0];
  if (!leafDer) throw new MeshError("unauthenticated", "command carries no signer certificate");
  const leaf = new X509Certificate(leafDer);
  const anchors = options.source.trustBundle.map((pem) => new X509Certificate(pem));
  const nowMs = options.clock.nowMs();
  const chained = anchors.some((anchor) => anchor.ca && leaf.checkIssued(anchor) && leaf.verify(anchor.publicKey));
  if (!chained || nowMs < Date.parse(leaf.validFrom) || nowMs >= Date.parse(leaf.validTo)) {
    throw new MeshError("unauthenticated", "command signer certificate not trusted");
  }
  const signer = peerSpiffeId(leaf, options.trustDomain);
  if (signer.kind !== "server") throw new MeshError("unauthenticated", "commands come only from servers");
  await verifyEnvelope(envelope, {
    certificate: leaf,
    expectedSigner: signer.uri,
    expectedAudience: options.selfSpiffeId,
    expectedMethod: commandMethod,
    expectedPayloadType: commandType,
    clock: options.clock,
    nonceCache: options.nonceCache,
  });
  return Command.decode(envelope.payload);
}
