import { type ChannelCredentials, experimental } from "@grpc/grpc-js";
import type { PeerCertificate } from "node:tls";
import { X509Certificate } from "node:crypto";
import { spiffeIdsFromCertificate, tryParseSpiffeId } from "../spiffe-id.js";
import type { CertificateSource } from "./certificate-source.js";

/**
 * mTLS channel credentials that follow a CertificateSource (renewals apply to new
 * connections) and check the server by SPIFFE ID, not host name: a server is
 * whoever holds `spiffe://<trust-domain>/<expectedKind>/…` (SPIFFE X509-SVID
 * verification), so clients can dial it by any address.
 */
export function meshChannelCredentials(source: CertificateSource, trustDomain: string, expectedKind: "server" | "sidecar" = "server"): ChannelCredentials {
  return experimental.createCertificateProviderChannelCredentials(source, source, {
    checkServerIdentity: (_host: string, certificate: PeerCertificate) => {
      try {
        const ids = spiffeIdsFromCertificate(new X509Certificate(certificate.raw));
        const id = ids.length === 1 ? tryParseSpiffeId(ids[0] as string) : undefined;
        if (id && id.trustDomain === trustDomain && id.kind === expectedKind) return undefined;
      } catch {
        // fall through to the refusal below
      }
      return new Error(`peer is not a ${expectedKind} of trust domain ${trustDomain}`);
    },
  });
}
