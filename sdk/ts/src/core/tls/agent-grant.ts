import { X509Certificate } from "node:crypto";

/**
 * The agent names a sidecar identity may act for travel in its certificate, so a
 * server that restarted (or another replica) knows them from the certificate
 * alone — the way Kubernetes carries a client's groups in its subject (O=).
 * Each name is one `OU=agent:<name>` of the subject; names are DNS labels or `*`,
 * so they need no escaping.
 */
const prefix = "agent:";

/** Subject RDNs to append: `OU=agent:a, OU=agent:b`. */
export function agentGrantSubject(allowedAgentNames: readonly string[]): string {
  return [...new Set(allowedAgentNames)]
    .sort()
    .map((name) => `OU=${prefix}${name}`)
    .join(", ");
}

/** The names a certificate grants; empty when it grants none. */
export function readAgentGrant(certificate: X509Certificate | Buffer): string[] {
  const parsed = certificate instanceof X509Certificate ? certificate : new X509Certificate(certificate);
  const names: string[] = [];
  for (const line of parsed.subject.split("\n")) {
    if (line.startsWith(`OU=${prefix}`)) names.push(line.slice(`OU=${prefix}`.length));
  }
  return names;
}
