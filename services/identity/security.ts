import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type ServerCredentials, experimental } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { generateKeyAndCsr } from "../../sdk/ts/src/core/csr.js";
import { MemoryNonceCache, type NonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { formatSpiffeId } from "../../sdk/ts/src/core/spiffe-id.js";
import { CertificateRenewer } from "../../sdk/ts/src/core/tls/certificate-renewer.js";
import { CertificateSource, type IdentityMaterial } from "../../sdk/ts/src/core/tls/certificate-source.js";
import { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { MemoryCertificateStore } from "./adapters/memory-certificate-store.js";
import { MemoryJoinTokenStore } from "./adapters/memory-join-token-store.js";
import { MemoryRevocationStore } from "./adapters/memory-revocation-store.js";
import { readOfflineIssued } from "./adapters/offline-issued-file.js";
import { type AuditMark, type AuditSink, type AuditSinkState, type AuditStats, FileAuditLog } from "../../sdk/ts/src/core/audit-log.js";
import { type MeshCa, loadOrCreateCa, splitPemCertificates } from "./domain/ca.js";
import { JoinTokens } from "./domain/join-tokens.js";
import { RevocationList } from "./domain/revocations.js";
import { EnvelopeOpener } from "./envelope-opener.js";
import { IdentityAuthority } from "./identity-authority.js";
import { IdentityLimits, type SharedRateLimit } from "./identity-limits.js";
import { type MtlsAuth, createMtlsAuth } from "./mtls-auth.js";
import type { CertificateStore, JoinTokenStore, RevocationRecord, RevocationStore } from "./ports.js";
import { type Refusal, RefusalAuditor } from "./refusal-auditor.js";

export interface SecurityOptions {
  dataDir: string;
  trustDomain: string;
  serverId: string;
  insecureDev: boolean;
  caCertFile?: string;
  caKeyFile?: string;
  certTtlMs: number;
  maxCertTtlMs: number;
  /** Names and addresses clients dial the server by (go into its certificate for grpcurl). */
  serverDnsNames: string[];
  serverIpAddresses: string[];
  identityRatePerSecond: number;
  identityBurst: number;
  identityMaxInFlight: number;
  identityMaxStreams: number;
  auditFsync: boolean;
  /** Sampling window for refusals (refusal-auditor.ts). */
  auditSampleIntervalMs: number;
  auditDenialsPerIdentity: number;
  /** While the audit log cannot be written, how often to try again. */
  auditRetryIntervalMs: number;
  clock: Clock;
  log: Logger;
  onLimitRejected: (limit: string) => void;
  onRevoked: (records: RevocationRecord[]) => void;
  /** Every refusal, audited individually (`written`) or only counted. */
  onRefusal?: (refusal: Refusal, written: boolean) => void;
  /** The audit log turned unwritable or writable again. */
  onAuditStateChange?: (state: AuditSinkState) => void;
  /**
   * Replay cache for signed requests. Replicas pass one shared by all of them (Redis),
   * so a request replayed to another replica is refused; absent: an in-process cache,
   * answered synchronously (the embedded default's hot path does no I/O for it).
   */
  nonceCache?: NonceCache;
  /** Replicas: the per-identity call rate is shared by all of them (Redis), not per process. */
  sharedRateLimit?: SharedRateLimit;
  /**
   * The server's audit log when it lives in the state store (PostgreSQL: one chain for
   * every replica); absent: the file `<data-dir>/audit.log`, its head signed by the CA.
   */
  auditLog?: ServerAuditLog;
  /** Where certificate records, revocations and join tokens live (the state store); memory when absent (tests). */
  stores?: { certificates: CertificateStore; revocations: RevocationStore; joinTokens: JoinTokenStore };
}

/** What the server needs of its audit log: the file (embedded) and the PostgreSQL table (replicas) both are one. */
export interface ServerAuditLog extends AuditSink {
  /** Newest entry this process appended. */
  readonly head: { seq: number; hash: string };
  /** False while audited actions must be refused up front. */
  readonly writable: boolean;
  readonly stats: Readonly<AuditStats>;
  mark(): AuditMark;
  /** Resolves once what was appended is stored; rejects UNAVAILABLE if something since `mark` was not. */
  flushed(mark?: AuditMark): Promise<void>;
  /** The newest `limit` entries as stored lines, oldest first. */
  tail(limit: number): Promise<string[]>;
  close(): Promise<void>;
}

/** Everything identity the server needs: CA, audit, signatures, and (unless dev mode) mTLS. */
export interface Security {
  ca: MeshCa;
  audit: ServerAuditLog;
  /**
   * The same log for fire-and-forget events: a failed append is counted by the log
   * (and the state change logged once), never one error line per event.
   */
  backgroundAudit: AuditSink;
  refusals: RefusalAuditor;
  authority: IdentityAuthority;
  revocations: RevocationList;
  opener: EnvelopeOpener;
  /** Checks a certificate against the mesh CA as the mTLS interceptor does (for credentials that arrive outside TLS). */
  verifier: PeerVerifier;
  /** Absent in plaintext dev mode. */
  tls?: { credentials: ServerCredentials; auth: MtlsAuth; source: CertificateSource; renewer: CertificateRenewer };
  close(): Promise<void>;
}

export async function createSecurity(options: SecurityOptions): Promise<Security> {
  const log = options.log.child({ component: "identity" });
  const ca = await loadCa(options);
  const audit = options.auditLog ?? (await openAudit(options, ca, log));
  const backgroundAudit: AuditSink = { append: (event) => audit.append(event).catch(() => undefined) };
  const refusals = new RefusalAuditor({
    audit: backgroundAudit,
    clock: options.clock,
    intervalMs: options.auditSampleIntervalMs,
    perIdentityPerInterval: options.auditDenialsPerIdentity,
    maxKeys: 256,
    onRefusal: options.onRefusal,
  });
  const certificates = options.stores?.certificates ?? new MemoryCertificateStore();
  const revocations = new RevocationList({ certificates, store: options.stores?.revocations ?? new MemoryRevocationStore(), clock: options.clock });
  await revocations.load();
  const joinTokens = new JoinTokens({ store: options.stores?.joinTokens ?? new MemoryJoinTokenStore(), clock: options.clock, trustDomain: options.trustDomain });
  const authority = new IdentityAuthority({
    ca,
    joinTokens,
    certificates,
    revocations,
    audit: backgroundAudit,
    refusals,
    clock: options.clock,
    defaultTtlMs: options.certTtlMs,
    maxTtlMs: options.maxCertTtlMs,
    onRevoked: options.onRevoked,
    offlineIssued: () => readOfflineIssued(options.dataDir, options.clock.nowMs()),
  });
  const anchors = [...new Set([...ca.trustBundle(), ...splitPemCertificates(ca.certificatePem)])];
  // One verifier (and chain cache) for mTLS peers and for certificates attached to envelopes.
  const verifier = new PeerVerifier(options.trustDomain, anchors);
  const opener = new EnvelopeOpener(options.trustDomain, options.nonceCache ?? new MemoryNonceCache({ clock: options.clock }), options.clock, { verifier, revocations });
  const security: Security = {
    ca,
    audit,
    backgroundAudit,
    refusals,
    authority,
    revocations,
    opener,
    verifier,
    close: async () => {
      security.tls?.renewer.stop();
      refusals.close();
      await audit.close();
    },
  };
  if (options.insecureDev) return security;

  const source = new CertificateSource();
  source.setTrustBundle(anchors);
  const spiffeId = formatSpiffeId({ trustDomain: options.trustDomain, kind: "server", name: options.serverId });
  const renewer = new CertificateRenewer({
    source,
    issue: async (): Promise<IdentityMaterial> => {
      const { csrPem, privateKeyPem } = await generateKeyAndCsr(spiffeId);
      const issued = await ca.issueCertificate({
        csrPem,
        spiffeId,
        ttlMs: options.certTtlMs,
        dnsNames: options.serverDnsNames,
        ipAddresses: options.serverIpAddresses,
      });
      await certificates.recordIssued({ serial: issued.serial, spiffeId, issuedAtMs: options.clock.nowMs(), notAfterMs: issued.expiresAtMs });
      return { ...issued, privateKeyPem };
    },
    onRenewed: (identity) => log.info({ serial: identity.serial, expiresAtMs: identity.expiresAtMs }, "server certificate renewed"),
    onError: (error, retryInMs) => log.error({ err: error, retryInMs }, "server certificate renewal failed"),
  });
  await renewer.start();
  // The identity provider comes first (grpc-js names the parameters the other way round).
  const credentials = experimental.createCertificateProviderServerCredentials(source, source, false);
  const auth = createMtlsAuth({
    verifier,
    revocations,
    clock: options.clock,
    refusals,
    log,
    limits: new IdentityLimits(
      { ratePerSecond: options.identityRatePerSecond, burst: options.identityBurst, maxInFlight: options.identityMaxInFlight, maxStreams: options.identityMaxStreams },
      options.clock,
      options.sharedRateLimit ? { limiter: options.sharedRateLimit, onUnavailable: sharedRateUnavailable(options.clock, log) } : undefined,
    ),
    onLimitRejected: options.onLimitRejected,
  });
  security.tls = { credentials, auth, source, renewer };
  return security;
}

/** Logs that the shared rate limit could not answer (the local one decides meanwhile), at most every 10 s. */
function sharedRateUnavailable(clock: Clock, log: Logger): (error: unknown) => void {
  let lastLoggedMs = Number.NEGATIVE_INFINITY;
  return (error) => {
    const nowMs = clock.nowMs();
    if (nowMs - lastLoggedMs < 10_000) return;
    lastLoggedMs = nowMs;
    log.warn({ err: error }, "shared per-identity rate limit unavailable: this replica's own limit applies until it answers");
  };
}

/**
 * The server's audit log, its head record signed by the CA key (any root of the
 * trust bundle is accepted for an older head, so a CA rotation keeps verifying).
 * What open() repaired is logged here; the entry it wrote says the same.
 */
async function openAudit(options: SecurityOptions, ca: MeshCa, log: Logger): Promise<FileAuditLog> {
  const publicKeys = [ca.certificate.publicKey, ...ca.trustBundle().map((pem) => new X509Certificate(pem).publicKey)];
  const audit = await FileAuditLog.open({
    path: join(options.dataDir, "audit.log"),
    clock: options.clock,
    durability: options.auditFsync ? "fsync" : "write",
    headKeys: { sign: (data) => ca.sign(data), publicKeys },
    retryIntervalMs: options.auditRetryIntervalMs,
    onStateChange: (state) => {
      // Once per change, with the file system's own error: one line, not one per refused append.
      if (!state.writable) log.error({ err: state.error }, "audit log cannot be written: refusing audited actions and reporting not ready until it can");
      else log.warn({ droppedEntries: audit.stats.droppedEntries }, "audit log writable again: an audit.gap entry records what was lost");
      options.onAuditStateChange?.(state);
    },
  });
  const { truncatedTailBytes, headRecreated, entriesPastHead } = audit.recovery;
  if (truncatedTailBytes > 0) log.warn({ truncatedTailBytes }, "audit log ended in a torn write: cut back to its last complete entry");
  if (headRecreated) log.warn({ entries: audit.head.seq }, "audit log had no head record: wrote a new one (truncation before now cannot be ruled out)");
  if (entriesPastHead > 0) log.info({ entriesPastHead }, "audit log had entries after its head record (written just before a stop): head moved forward");
  return audit;
}

async function loadCa(options: SecurityOptions): Promise<MeshCa> {
  if (options.caCertFile || options.caKeyFile) {
    if (!options.caCertFile || !options.caKeyFile) throw new Error("--ca-cert and --ca-key go together");
    const [certPem, keyPem] = await Promise.all([readFile(options.caCertFile, "utf8"), readFile(options.caKeyFile, "utf8")]);
    return loadOrCreateCa({ certPem, keyPem, trustDomain: options.trustDomain, clock: options.clock, maxLeafTtlMs: options.maxCertTtlMs });
  }
  return loadOrCreateCa({ dataDir: options.dataDir, trustDomain: options.trustDomain, clock: options.clock, maxLeafTtlMs: options.maxCertTtlMs });
}
