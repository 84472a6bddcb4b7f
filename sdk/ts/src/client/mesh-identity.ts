import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { type ChannelCredentials, Metadata, type ServiceError, credentials as grpcCredentials, status } from "@grpc/grpc-js";
import type { PeerCertificate } from "node:tls";
import type { Clock } from "../core/clock.js";
import { systemClock } from "../core/clock.js";
import { generateKeyAndCsr } from "../core/csr.js";
import { parseSpiffeId, spiffeIdsFromCertificate, tryParseSpiffeId } from "../core/spiffe-id.js";
import { CertificateRenewer } from "../core/tls/certificate-renewer.js";
import { CertificateSource, type IdentityMaterial } from "../core/tls/certificate-source.js";
import { meshChannelCredentials } from "../core/tls/channel-credentials.js";
import { SourceSigner } from "../core/tls/source-signer.js";
import { IdentityServiceClient, type IssueCertificateResponse } from "../gen/agentmesh/v1/identity.js";
import type { SignedEnvelope } from "../gen/agentmesh/v1/types.js";

/** Signs messages with the current certificate's key (renewals included). */
export interface EnvelopeSigner {
  readonly spiffeId: string;
  sign(payload: Uint8Array, method: string, payloadType: string, audience: string): SignedEnvelope;
}

/** How {@link MeshIdentity.join} obtains the first certificate (docs/protocol.md, "Joining"). */
export interface JoinOptions {
  /**
   * Control-plane address, host:port, or several replicas': a certificate request
   * that cannot reach one (UNAVAILABLE, DEADLINE_EXCEEDED) goes to the next, and the
   * one that answered is asked first next time.
   */
  address: string | readonly string[];
  /** The trust bundle that verifies the server on first contact (the mesh CA certificate). */
  trustBundlePem: string;
  spiffeId: string;
  /** Spent on the first certificate; unused when `resume` is given. */
  joinToken: string;
  /**
   * A certificate of `spiffeId` this component obtained before (it kept it across a
   * restart): the first certificate is a renewal of it over mTLS, without a token.
   */
  resume?: IdentityMaterial;
  ttlSeconds?: number;
  clock?: Clock;
  onRenewError?: (error: unknown, retryInMs: number) => void;
  /** Called after each renewal, once the new certificate is in `source`. */
  onRenewed?: (identity: IdentityMaterial) => void;
}

/**
 * One component's mesh identity (sidecar, SDK direct mode, ctl): its key never
 * leaves the process; certificates come from the mesh CA, first with a join
 * token, then renewed over mTLS at half-life and swapped in without dropping
 * connections.
 */
export class MeshIdentity implements EnvelopeSigner {
  readonly source = new CertificateSource();
  readonly trustDomain: string;
  private renewer: CertificateRenewer | undefined;
  private readonly signer: SourceSigner;
  /** Index of the address that answered last (JoinOptions.address). */
  private preferredAddress = 0;

  private constructor(
    readonly spiffeId: string,
    clock: Clock,
  ) {
    this.trustDomain = parseSpiffeId(spiffeId).trustDomain;
    this.signer = new SourceSigner(this.source, clock);
  }

  /** Joins with a token (or renews a certificate obtained before), then keeps the certificate renewed. */
  static async join(options: JoinOptions): Promise<MeshIdentity> {
    const identity = new MeshIdentity(options.spiffeId, options.clock ?? systemClock);
    identity.source.setTrustBundle(splitPem(options.trustBundlePem));
    let useToken = options.resume === undefined;
    identity.renewer = new CertificateRenewer({
      source: identity.source,
      issue: async () => {
        const joinToken = useToken ? options.joinToken : "";
        useToken = false;
        return identity.requestFromAny(typeof options.address === "string" ? [options.address] : options.address, joinToken, options.ttlSeconds ?? 0);
      },
      onError: options.onRenewError,
      onRenewed: options.onRenewed,
    });
    // A resumed certificate is renewed at once: the answer proves the server still accepts it
    // (same CA, not revoked) before anything is built on it, and the lifetime starts afresh.
    if (options.resume) identity.source.setIdentity(options.resume);
    await identity.renewer.start();
    return identity;
  }

  /** Loads a certificate and key written earlier (for example by `ctl init-admin`); no renewal. */
  static async fromFiles(files: { certFile: string; keyFile: string; caFile: string }): Promise<MeshIdentity> {
    const [certPem, keyPem, caPem] = await Promise.all([readFile(files.certFile, "utf8"), readFile(files.keyFile, "utf8"), readFile(files.caFile, "utf8")]);
    const chainPem = splitPem(certPem);
    const leaf = new X509Certificate(chainPem[0] ?? "");
    const [spiffeId] = spiffeIdsFromCertificate(leaf);
    if (!spiffeId || !tryParseSpiffeId(spiffeId)) throw new Error(`${files.certFile}: no SPIFFE ID`);
    const identity = new MeshIdentity(spiffeId, systemClock);
    identity.source.setTrustBundle(splitPem(caPem));
    const material: IdentityMaterial = {
      chainPem,
      privateKeyPem: keyPem,
      notBeforeMs: Date.parse(leaf.validFrom),
      expiresAtMs: Date.parse(leaf.validTo),
      serial: leaf.serialNumber.toLowerCase(),
      spiffeId,
    };
    identity.source.setIdentity(material);
    return identity;
  }

  /** mTLS credentials for dialing the control plane (the server is checked by SPIFFE ID). */
  channelCredentials(expectedKind: "server" | "sidecar" = "server"): ChannelCredentials {
    return meshChannelCredentials(this.source, this.trustDomain, expectedKind);
  }

  sign(payload: Uint8Array, method: string, payloadType: string, audience: string): SignedEnvelope {
    // The chain travels along: after a renewal the key is new, but an open connection
    // still shows the server the previous certificate from its handshake.
    return this.signer.sign(payload, method, payloadType, audience, true);
  }

  close(): void {
    this.renewer?.stop();
  }

  /** A refused or failed request is final; only a replica that could not be reached is tried past. */
  private async requestFromAny(addresses: readonly string[], joinToken: string, ttlSeconds: number): Promise<IdentityMaterial> {
    let lastError: unknown = new Error("no control-plane address");
    for (let attempt = 0; attempt < addresses.length; attempt += 1) {
      const index = (this.preferredAddress + attempt) % addresses.length;
      try {
        const material = await this.requestCertificate(addresses[index] as string, joinToken, ttlSeconds);
        this.preferredAddress = index;
        return material;
      } catch (error) {
        const code = (error as Partial<ServiceError>).code;
        if (code !== status.UNAVAILABLE && code !== status.DEADLINE_EXCEEDED) throw error;
        lastError = error;
      }
    }
    throw lastError;
  }

  private async requestCertificate(address: string, joinToken: string, ttlSeconds: number): Promise<IdentityMaterial> {
    const { csrPem, privateKeyPem } = await generateKeyAndCsr(this.spiffeId);
    // The first certificate comes over server-authenticated TLS; renewals over mTLS with the current one.
    const channel = joinToken !== "" ? bootstrapCredentials(this.source.trustBundle, this.trustDomain) : this.channelCredentials();
    const client = new IdentityServiceClient(address, channel, { "grpc.ssl_target_name_override": "agentmesh-server" });
    try {
      const response = await new Promise<IssueCertificateResponse>((resolve, reject) =>
        client.issueCertificate(
          { csrPem, joinToken, spiffeId: this.spiffeId, ttlSeconds },
          new Metadata(),
          { deadline: new Date(Date.now() + 15_000) },
          (error: ServiceError | null, response: IssueCertificateResponse) => (error ? reject(error) : resolve(response)),
        ),
      );
      if (response.trustBundlePem.length > 0) this.source.setTrustBundle(response.trustBundlePem);
      const leaf = new X509Certificate(response.certificateChainPem[0] ?? "");
      return {
        chainPem: response.certificateChainPem,
        privateKeyPem,
        notBeforeMs: Date.parse(leaf.validFrom),
        expiresAtMs: response.expiresAtMs,
        serial: response.serial,
        spiffeId: response.spiffeId,
      };
    } finally {
      client.close();
    }
  }
}

/** TLS that verifies the server by SPIFFE ID but presents no client certificate (joining). */
function bootstrapCredentials(trustBundlePem: readonly string[], trustDomain: string): ChannelCredentials {
  return grpcCredentials.createSsl(Buffer.from(trustBundlePem.join("\n")), null, null, {
    checkServerIdentity: (_host: string, certificate: PeerCertificate) => {
      const ids = spiffeIdsFromCertificate(new X509Certificate(certificate.raw));
      const id = ids.length === 1 ? tryParseSpiffeId(ids[0] as string) : undefined;
      return id && id.trustDomain === trustDomain && id.kind === "server" ? undefined : new Error("peer is not a mesh server");
    },
  });
}

export function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((block) => `${block}\n`) ?? [];
}
