import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError, invalidArgument } from "../../sdk/ts/src/core/mesh-error.js";
import { formatSpiffeId, tryParseSpiffeId } from "../../sdk/ts/src/core/spiffe-id.js";
import type {
  CreateJoinTokenRequest,
  CreateJoinTokenResponse,
  IssueCertificateRequest,
  IssueCertificateResponse,
} from "../../sdk/ts/src/gen/agentmesh/v1/identity.js";
import type { CallerIdentity } from "../server/call-context.js";
import type { MeshCa } from "./domain/ca.js";
import type { JoinTokens } from "./domain/join-tokens.js";
import type { RevocationList } from "./domain/revocations.js";
import type { AuditSink } from "../../sdk/ts/src/core/audit-log.js";
import type { CertificateStore, IssuedCertificateRecord, RevocationRecord } from "./ports.js";
import type { RefusalAuditor } from "./refusal-auditor.js";

export interface IdentityAuthorityOptions {
  ca: MeshCa;
  joinTokens: JoinTokens;
  certificates: CertificateStore;
  revocations: RevocationList;
  /** Appends never reject (failures are counted by the log); audited RPCs wait for the write in the rpc wrapper. */
  audit: AuditSink;
  /** Refused join tokens come from callers without a certificate: sampled. */
  refusals: RefusalAuditor;
  clock: Clock;
  defaultTtlMs: number;
  maxTtlMs: number;
  onRevoked?: (records: RevocationRecord[]) => void;
  /** Certificates the CA issued without this server (ctl init-admin), recorded before each revocation. */
  offlineIssued?: () => Promise<IssuedCertificateRecord[]>;
}

const MAX_CSR_BYTES = 16 * 1024;

/**
 * The mesh CA as a service: first certificates for join tokens, renewals for
 * valid certificates, join tokens and revocations for admins — each audited.
 */
export class IdentityAuthority {
  constructor(private readonly options: IdentityAuthorityOptions) {}

  get trustDomain(): string {
    return this.options.ca.trustDomain;
  }

  trustBundle(): string[] {
    return this.options.ca.trustBundle();
  }

  async issueCertificate(request: IssueCertificateRequest, caller: CallerIdentity, requestId: string): Promise<IssueCertificateResponse> {
    if (request.csrPem === "") throw invalidArgument("csr_pem: required");
    if (request.csrPem.length > MAX_CSR_BYTES) throw invalidArgument(`csr_pem: over ${MAX_CSR_BYTES} bytes`);
    if (request.spiffeId === "") throw invalidArgument("spiffe_id: required");
    const requested = tryParseSpiffeId(request.spiffeId);
    if (!requested) throw invalidArgument("spiffe_id: not a SPIFFE ID");
    if (requested.trustDomain !== this.trustDomain) throw invalidArgument("spiffe_id: outside the trust domain");
    const ttlMs = request.ttlSeconds === 0 ? this.options.defaultTtlMs : request.ttlSeconds * 1000;
    if (ttlMs > this.options.maxTtlMs) throw invalidArgument(`ttl_seconds: at most ${this.options.maxTtlMs / 1000}`);
    // A bad CSR must not spend a join token.
    await this.options.ca.verifyCsr(request.csrPem);

    let allowedAgentNames: string[];
    let action: string;
    let actor: string;
    if (request.joinToken !== "") {
      if (requested.kind === "server" || requested.kind === "admin") {
        throw new MeshError("denied", "join tokens cannot issue server or admin identities");
      }
      const grant = await this.options.joinTokens.consume(request.joinToken, { requestedSpiffeId: requested.uri }).catch((error: unknown) => {
        // The caller has no certificate yet: what it claims is all there is to key the sample by.
        const reason = error instanceof MeshError ? error.message : "join token refused";
        this.options.refusals.record({ actor: requested.uri, authenticated: false, action: "join_token.use", target: requested.uri, reason, requestId });
        throw error;
      });
      allowedAgentNames = requested.kind === "agent" ? [requested.name] : grant.allowedAgentNames;
      action = "cert.issue";
      actor = requested.uri;
      this.audit({ actor, action: "join_token.use", target: grant.tokenId, outcome: "success", requestId, details: { usesLeft: grant.usesLeft } });
    } else if (caller.spiffeId !== "") {
      // Renewal: the same identity, the same grant; never a new name.
      if (caller.spiffeId !== requested.uri) throw new MeshError("denied", "a certificate renews only its own SPIFFE ID");
      allowedAgentNames = caller.isAdmin ? [] : [...caller.allowedAgentNames];
      action = "cert.renew";
      actor = caller.spiffeId;
    } else {
      throw new MeshError("unauthenticated", "join token or client certificate required");
    }
    const issued = await this.options.ca.issueCertificate({ csrPem: request.csrPem, spiffeId: requested.uri, ttlMs, allowedAgentNames });
    await this.options.certificates.recordIssued({
      serial: issued.serial,
      spiffeId: issued.spiffeId,
      issuedAtMs: this.options.clock.nowMs(),
      notAfterMs: issued.expiresAtMs,
    });
    this.audit({ actor, action, target: issued.spiffeId, outcome: "success", requestId, details: { serial: issued.serial, expiresAtMs: issued.expiresAtMs } });
    return {
      certificateChainPem: issued.chainPem,
      trustBundlePem: this.trustBundle(),
      expiresAtMs: issued.expiresAtMs,
      serial: issued.serial,
      spiffeId: issued.spiffeId,
      allowedAgentNames,
    };
  }

  async createJoinToken(request: CreateJoinTokenRequest, caller: CallerIdentity, requestId: string): Promise<CreateJoinTokenResponse> {
    const created = await this.options.joinTokens.create({
      allowedAgentNames: request.allowedAgentNames,
      host: request.host,
      maxUses: request.maxUses === 0 ? undefined : request.maxUses,
      ttlMs: request.ttlSeconds === 0 ? undefined : request.ttlSeconds * 1000,
      createdBy: caller.spiffeId,
    });
    this.audit({
      actor: caller.spiffeId,
      action: "join_token.create",
      target: formatSpiffeId({ trustDomain: this.trustDomain, kind: "sidecar", name: request.host }),
      outcome: "success",
      requestId,
      details: { tokenId: created.tokenId, allowedAgentNames: request.allowedAgentNames, maxUses: request.maxUses || 1 },
    });
    return { token: created.token, expiresAtMs: created.expiresAtMs, tokenId: created.tokenId };
  }

  async revoke(target: string, reason: string, caller: CallerIdentity, requestId: string): Promise<number> {
    if (target.trim() === "") throw invalidArgument("target: required");
    if (reason.length > 200) throw invalidArgument("reason: longer than 200 characters");
    await this.recordOfflineIssued();
    const records = await this.options.revocations.revoke(target, { reason: reason || "revoked by admin", revokedBy: caller.spiffeId });
    for (const record of records) {
      this.audit({ actor: caller.spiffeId, action: "cert.revoke", target: record.spiffeId, outcome: "success", requestId, details: { serial: record.serial, reason: record.reason } });
    }
    if (records.length > 0) this.options.onRevoked?.(records);
    return records.length;
  }

  private async recordOfflineIssued(): Promise<void> {
    for (const record of (await this.options.offlineIssued?.()) ?? []) {
      if (!(await this.options.certificates.get(record.serial))) await this.options.certificates.recordIssued(record);
    }
  }

  private audit(event: Parameters<AuditSink["append"]>[0]): void {
    void this.options.audit.append(event);
  }
}
