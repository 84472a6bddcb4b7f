// Test PKI and mTLS plumbing for the security tests and the security bench:
// identities minted by a server's CA (or a foreign one), hand-built certificates
// the CA would never issue, raw gRPC clients over exactly the credentials a test
// wants, and snapshots proving that a refused call changed nothing.
import { type KeyObject, X509Certificate, createPrivateKey, randomBytes } from "node:crypto";
import type { webcrypto } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { PeerCertificate } from "node:tls";
import {
  type CallOptions,
  type ChannelCredentials,
  type Client,
  Metadata,
  type ServiceError,
  credentials as grpcCredentials,
  makeGenericClientConstructor,
} from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { expect } from "vitest";
import type { EnvelopeSigner } from "../../sdk/ts/src/client/mesh-identity.js";
import { type Clock, systemClock } from "../../sdk/ts/src/core/clock.js";
import { generateKeyAndCsr } from "../../sdk/ts/src/core/csr.js";
import { signEnvelope } from "../../sdk/ts/src/core/signing.js";
import { spiffeIdsFromCertificate, tryParseSpiffeId } from "../../sdk/ts/src/core/spiffe-id.js";
import { subtle, x509 } from "../../sdk/ts/src/core/x509-setup.js";
import {
  type CreateJoinTokenResponse,
  IdentityServiceClient,
  type IssueCertificateResponse,
} from "../../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { OrchestratorServiceClient } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegisterRequest, RegistryServiceClient } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { AgentManifest, SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { AuditEntry } from "../../sdk/ts/src/core/audit-log.js";
import { type MeshCa, caCertFileName, caKeyFileName, loadOrCreateCa } from "../../services/identity/domain/ca.js";
import type { ServerConfig } from "../../services/server/config.js";
import { type RunningServer, type ServerDependencies, startServer } from "../../services/server/server.js";
import type { Logger } from "pino";
import { logSink } from "./log-sink.js";
import { tempDir } from "./processes.js";

export const registerMethod = "/agentmesh.v1.RegistryService/Register";
export const registerPayloadType = "agentmesh.v1.RegisterRequest";
export const connectMethod = "/agentmesh.v1.OrchestratorService/Connect";

/** A certificate and its key, as a client presents them. */
export interface MintedIdentity {
  spiffeId: string;
  chainPem: string[];
  privateKeyPem: string;
  privateKey: KeyObject;
  serial: string;
  certificate: X509Certificate;
}

export function spiffe(trustDomain: string, kind: "agent" | "sidecar" | "server" | "admin", name: string): string {
  return `spiffe://${trustDomain}/${kind}/${name}`;
}

/** An identity issued by `ca` exactly as the server would issue it (not recorded: revoke needs a joined identity). */
export async function mintIdentity(
  ca: MeshCa,
  spiffeId: string,
  options: { ttlMs?: number; allowedAgentNames?: string[]; clock?: Clock } = {},
): Promise<MintedIdentity> {
  const { csrPem, privateKeyPem, privateKey } = await generateKeyAndCsr(spiffeId);
  const issued = await ca.issueCertificate({
    csrPem,
    spiffeId,
    ttlMs: options.ttlMs ?? 60 * 60_000,
    allowedAgentNames: options.allowedAgentNames,
    clock: options.clock,
  });
  return { spiffeId, chainPem: issued.chainPem, privateKeyPem, privateKey, serial: issued.serial, certificate: new X509Certificate(issued.chainPem[0] ?? "") };
}

/** A second, unrelated CA (its own key, in its own temp dir). */
export function foreignCa(trustDomain: string, clock: Clock = systemClock): Promise<MeshCa> {
  return loadOrCreateCa({ dataDir: tempDir("agentmesh-foreign-ca-"), trustDomain, clock });
}

/** The server CA's certificate and key as written in its data dir. */
export async function readCaFiles(dataDir: string): Promise<{ certPem: string; keyPem: string }> {
  const [certPem, keyPem] = await Promise.all([readFile(join(dataDir, caCertFileName), "utf8"), readFile(join(dataDir, caKeyFileName), "utf8")]);
  return { certPem, keyPem };
}

/**
 * A leaf the mesh CA would never issue (several URI SANs, any trust domain),
 * signed with the CA's real key, so only the SAN checks can refuse it.
 */
export async function forgeCertificate(options: {
  caCertPem: string;
  caKeyPem: string;
  uris: string[];
  notBeforeMs?: number;
  notAfterMs?: number;
}): Promise<MintedIdentity> {
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const caKeyDer = createPrivateKey(options.caKeyPem).export({ type: "pkcs8", format: "der" });
  const signingKey = await subtle.importKey("pkcs8", caKeyDer, { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  const caCertificate = new x509.X509Certificate(options.caCertPem);
  const nowMs = Date.now();
  const serial = `4${randomBytes(15).toString("hex")}`;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: "CN=forged, O=agentmesh",
    issuer: caCertificate.subjectName,
    notBefore: new Date(options.notBeforeMs ?? nowMs - 60_000),
    notAfter: new Date(options.notAfterMs ?? nowMs + 60 * 60_000),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    publicKey: keys.publicKey,
    signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(options.uris.map((value) => ({ type: "url" as const, value }))),
      await x509.AuthorityKeyIdentifierExtension.create(caCertificate),
    ],
  });
  const privateKey = createPrivateKey({ key: Buffer.from(await subtle.exportKey("pkcs8", keys.privateKey)), format: "der", type: "pkcs8" });
  const chainPem = [leaf.toString("pem")];
  return {
    spiffeId: options.uris[0] ?? "",
    chainPem,
    privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    privateKey,
    serial,
    certificate: new X509Certificate(chainPem[0] ?? ""),
  };
}

/** A CA made by hand: its certificate (as @peculiar/x509 sees it) and its key pair. */
export interface HandMadeCa {
  certificate: x509.X509Certificate;
  keys: webcrypto.CryptoKeyPair;
}

/**
 * A self-signed CA with the subject `subject` and a key of its own. With the mesh
 * CA's subject (`CN=agentmesh CA <trust domain>, O=agentmesh`) it is the impostor
 * OpenSSL cannot tell from the mesh CA by name alone.
 */
export async function handMadeCa(subject: string): Promise<HandMadeCa> {
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const nowMs = Date.now();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: `5${randomBytes(15).toString("hex")}`,
    name: subject,
    notBefore: new Date(nowMs - 60_000),
    notAfter: new Date(nowMs + 60 * 60_000),
    signingAlgorithm: algorithm,
    keys,
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  return { certificate, keys };
}

/** A client leaf for `uri` issued by `ca`, without an authority key identifier (so only the issuer name points at a CA). */
export async function leafWithoutKeyIdentifier(ca: HandMadeCa, uri: string): Promise<MintedIdentity> {
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = (await subtle.generateKey(algorithm, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const nowMs = Date.now();
  const serial = `6${randomBytes(15).toString("hex")}`;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: "CN=impostor, O=agentmesh",
    issuer: ca.certificate.subjectName,
    notBefore: new Date(nowMs - 60_000),
    notAfter: new Date(nowMs + 60 * 60_000),
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: uri }]),
    ],
  });
  const privateKey = createPrivateKey({ key: Buffer.from(await subtle.exportKey("pkcs8", keys.privateKey)), format: "der", type: "pkcs8" });
  const chainPem = [leaf.toString("pem")];
  return { spiffeId: uri, chainPem, privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), privateKey, serial, certificate: new X509Certificate(chainPem[0] ?? "") };
}

/**
 * TLS credentials trusting `trustBundlePem` and checking the server by SPIFFE ID;
 * presenting `identity` when given, no client certificate otherwise.
 */
export function mtlsCredentials(trustBundlePem: readonly string[], identity?: Pick<MintedIdentity, "chainPem" | "privateKeyPem">): ChannelCredentials {
  const trustDomain = trustDomainOfBundle(trustBundlePem);
  return grpcCredentials.createSsl(
    Buffer.from(trustBundlePem.join("\n")),
    identity ? Buffer.from(identity.privateKeyPem) : null,
    identity ? Buffer.from(identity.chainPem.join("\n")) : null,
    {
      checkServerIdentity: (_host: string, certificate: PeerCertificate) => {
        const ids = spiffeIdsFromCertificate(new X509Certificate(certificate.raw));
        const id = ids.length === 1 ? tryParseSpiffeId(ids[0] as string) : undefined;
        if (id && id.kind === "server" && (trustDomain === undefined || id.trustDomain === trustDomain)) return undefined;
        return new Error("peer is not a mesh server");
      },
    },
  );
}

function trustDomainOfBundle(bundlePem: readonly string[]): string | undefined {
  const subject = bundlePem[0] ? new X509Certificate(bundlePem[0]).subject : "";
  return /CN=agentmesh CA (\S+)/.exec(subject)?.[1];
}

/**
 * Every channel gets its own connection (a local subchannel pool), so a test's
 * credentials are never served by another test client's handshake; the fixed
 * TLS name keeps Node from using an IP address as SNI.
 */
export const channelOptions = { "grpc.ssl_target_name_override": "agentmesh-server", "grpc.use_local_subchannel_pool": 1 } as const;

const HealthClient = makeGenericClientConstructor(healthService, "Health");

export interface RawClients {
  registry: RegistryServiceClient;
  orchestrator: OrchestratorServiceClient;
  identity: IdentityServiceClient;
  health: Client & { check: (request: { service: string }, options: CallOptions, callback: (error: ServiceError | null, response: { status: string }) => void) => void };
  close(): void;
}

/** Generated clients on one connection with the given credentials. */
export function rawClients(address: string, credentials: ChannelCredentials, options: Record<string, string | number> = {}): RawClients {
  const merged = { ...channelOptions, ...options };
  const registry = new RegistryServiceClient(address, credentials, merged);
  // Same target, credentials and options: one channel and connection for all of them.
  const orchestrator = new OrchestratorServiceClient(address, credentials, { ...merged, channelOverride: registry.getChannel() });
  const identity = new IdentityServiceClient(address, credentials, { ...merged, channelOverride: registry.getChannel() });
  const health = new HealthClient(address, credentials, { ...merged, channelOverride: registry.getChannel() }) as unknown as RawClients["health"];
  return {
    registry,
    orchestrator,
    identity,
    health,
    close: () => registry.close(),
  };
}

type Callback<Response> = (error: ServiceError | null, response: Response) => void;

/** A unary call as a promise, always with a deadline so a test can never hang. */
export function call<Response>(
  invoke: (metadata: Metadata, options: CallOptions, callback: Callback<Response>) => unknown,
  timeoutMs = 5000,
): Promise<Response> {
  return new Promise((resolve, reject) =>
    invoke(new Metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (error, response) => (error ? reject(error) : resolve(response))),
  );
}

/** Awaits a call that must fail with `code`; answers the error for further checks. */
export async function expectCode(promise: Promise<unknown>, code: number): Promise<ServiceError> {
  const outcome = await promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error: error as ServiceError }),
  );
  if (outcome.ok) throw new Error(`expected status ${code}, but the call succeeded`);
  expect({ code: outcome.error.code, details: outcome.error.details }).toMatchObject({ code });
  return outcome.error;
}

/** An EnvelopeSigner for a minted identity, on the clock a test chooses (ManualClock for stale timestamps). */
export function signerFor(identity: Pick<MintedIdentity, "spiffeId" | "privateKey">, clock: Clock = systemClock): EnvelopeSigner {
  return {
    spiffeId: identity.spiffeId,
    sign: (payload, method, payloadType, audience) =>
      signEnvelope({ payload, signer: identity.spiffeId, audience, method, payloadType, privateKey: identity.privateKey, clock }),
  };
}

/** A signed RegisterRequest as MeshClient sends it: the inner request travels only inside the envelope. */
export function signedRegister(
  signer: EnvelopeSigner,
  trustDomain: string,
  agentManifest: AgentManifest,
  overrides: { instanceId?: string; method?: string; audience?: string; payloadType?: string } = {},
): { request: RegisterRequest; envelope: SignedEnvelope } {
  const inner = RegisterRequest.fromPartial({ manifest: agentManifest, instanceId: overrides.instanceId ?? "", host: "host-a" });
  const envelope = signer.sign(
    RegisterRequest.encode(inner).finish(),
    overrides.method ?? registerMethod,
    overrides.payloadType ?? registerPayloadType,
    overrides.audience ?? `spiffe://${trustDomain}/server`,
  );
  return { request: { ...RegisterRequest.fromPartial({}), envelope }, envelope };
}

/** What a refused call must leave untouched. */
export interface ServerSnapshot {
  instances: number;
  revision: number;
  auditSeq: number;
}

export function snapshot(server: RunningServer): ServerSnapshot {
  return { instances: server.registry.size, revision: server.registry.currentRevision, auditSeq: server.security.audit.head.seq };
}

/** Audit entries written after `seq` (flushed first). */
export async function auditSince(server: RunningServer, seq: number): Promise<AuditEntry[]> {
  const count = server.security.audit.head.seq - seq;
  if (count <= 0) return [];
  const lines = await server.security.audit.tail(count);
  return lines.map((line) => JSON.parse(line) as AuditEntry);
}

/**
 * Asserts the registry did not change and the audit log gained exactly the one
 * denial entry (with this action and outcome) since `before`.
 */
export async function expectOnlyDenialAudited(server: RunningServer, before: ServerSnapshot, action: string): Promise<AuditEntry> {
  expect(server.registry.size).toBe(before.instances);
  expect(server.registry.currentRevision).toBe(before.revision);
  // Denials are audited without waiting for the write; the entry is queued before the status goes out.
  const entries = await auditSince(server, before.auditSeq);
  expect(entries.map((entry) => ({ action: entry.action, outcome: entry.outcome }))).toEqual([{ action, outcome: "denied" }]);
  return entries[0] as AuditEntry;
}

/** Sum of agentmesh_refusals_total over the series matching `labels`. */
export async function refusals(server: RunningServer, labels: Partial<Record<"action" | "authenticated" | "audit", string>>): Promise<number> {
  const metric = await server.metrics.refusals.get();
  return metric.values
    .filter((value) => Object.entries(labels).every(([name, wanted]) => value.labels[name as keyof typeof labels] === wanted))
    .reduce((sum, value) => sum + value.value, 0);
}

/** Value of agentmesh_limit_rejections_total{limit}. */
export async function limitRejections(server: RunningServer, limit: string): Promise<number> {
  const metric = await server.metrics.limitRejections.get();
  return metric.values.find((value) => value.labels.limit === limit)?.value ?? 0;
}

/** A server running mTLS with an admin identity ready to use. */
export interface SecureMesh {
  server: RunningServer;
  dataDir: string;
  trustDomain: string;
  trustBundle: string[];
  admin: MintedIdentity;
  adminClients: RawClients;
  /** Clients opened through `clientsFor`, closed by `close`. */
  opened: RawClients[];
  /** Raw clients presenting `identity` (or no certificate), closed with the mesh. */
  clientsFor(identity?: Pick<MintedIdentity, "chainPem" | "privateKeyPem">, options?: Record<string, string | number>): RawClients;
  /** A join token made by the admin over RPC. */
  joinToken(input: { host: string; agents: string[]; uses?: number; ttlSeconds?: number }): Promise<{ token: string; tokenId: string }>;
  close(): Promise<void>;
}

export async function startSecureMesh(
  overrides: Partial<ServerConfig> = {},
  log: Logger = logSink("silent").log,
  clock?: Clock,
  dependencies: Pick<ServerDependencies, "store"> = {},
): Promise<SecureMesh> {
  const dataDir = overrides.dataDir ?? tempDir();
  // One refusal-sampling window per test however slow the machine: which refusals are
  // written and which only counted never depends on timing (tests end windows by hand).
  const server = await startServer({ port: 0, httpPort: 0, dataDir, auditSampleIntervalMs: 3_600_000, ...overrides }, { log, clock, ...dependencies });
  const trustDomain = server.config.trustDomain;
  const trustBundle = server.security.ca.trustBundle();
  const admin = await mintIdentity(server.security.ca, spiffe(trustDomain, "admin", "operator"), { clock });
  const opened: RawClients[] = [];
  const clientsFor = (identity?: Pick<MintedIdentity, "chainPem" | "privateKeyPem">, options: Record<string, string | number> = {}) => {
    const clients = rawClients(server.address, mtlsCredentials(trustBundle, identity), options);
    opened.push(clients);
    return clients;
  };
  const adminClients = clientsFor(admin);
  return {
    server,
    dataDir,
    trustDomain,
    trustBundle,
    admin,
    adminClients,
    opened,
    clientsFor,
    joinToken: async ({ host, agents, uses = 1, ttlSeconds = 0 }) => {
      const response = await call<CreateJoinTokenResponse>((metadata, options, callback) =>
        adminClients.identity.createJoinToken({ host, allowedAgentNames: agents, maxUses: uses, ttlSeconds }, metadata, options, callback),
      );
      return { token: response.token, tokenId: response.tokenId };
    },
    close: async () => {
      for (const clients of opened.splice(0)) clients.close();
      await server.close();
    },
  };
}

/** IssueCertificate over TLS without a client certificate (joining), with a fresh key. */
export async function joinOverRpc(
  mesh: SecureMesh,
  spiffeId: string,
  joinToken: string,
  options: { ttlSeconds?: number; csrPem?: string } = {},
): Promise<{ response: IssueCertificateResponse; identity: MintedIdentity }> {
  const { csrPem, privateKeyPem, privateKey } = await generateKeyAndCsr(spiffeId);
  const clients = mesh.clientsFor();
  const response = await call<IssueCertificateResponse>((metadata, callOptions, callback) =>
    clients.identity.issueCertificate({ csrPem: options.csrPem ?? csrPem, joinToken, spiffeId, ttlSeconds: options.ttlSeconds ?? 0 }, metadata, callOptions, callback),
  );
  return {
    response,
    identity: {
      spiffeId,
      chainPem: response.certificateChainPem,
      privateKeyPem,
      privateKey,
      serial: response.serial,
      certificate: new X509Certificate(response.certificateChainPem[0] ?? ""),
    },
  };
}
