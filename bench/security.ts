/**
 * bench:security — what identity and mTLS cost. Two servers run as child
 * processes (mTLS by default, and --insecure-dev plaintext) so their CPU is their
 * own; this process plays the clients.
 *
 *   npx tsx bench/security.ts            (or after npm run build: node dist/bench/security.js)
 *   ... --issue 400 --connections 200 --unary 3000 --sign 5000 --audit 20000
 *
 * Measures: certificate issuance (IssueCertificate with a many-use join token)
 * per second and p50/p99; a new mTLS connection + first signed Register p50/p99
 * (budget p99 < 50 ms); unary Discover latency plaintext vs mTLS on one open
 * channel (ratio); sign and verify per second and what they add to one signed
 * Register (budget p50 < 0.2 ms); audit append throughput.
 */
import { spawn } from "node:child_process";
import { type KeyObject, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { type PeerCertificate, connect as tlsConnect } from "node:tls";
import { parseArgs } from "node:util";
import { type CallOptions, type ChannelCredentials, Metadata, type ServiceError, credentials as grpcCredentials } from "@grpc/grpc-js";
import { systemClock } from "../sdk/ts/src/core/clock.js";
import { generateKeyAndCsr } from "../sdk/ts/src/core/csr.js";
import { MemoryNonceCache } from "../sdk/ts/src/core/nonce-cache.js";
import { signEnvelope, verifyEnvelope } from "../sdk/ts/src/core/signing.js";
import { spiffeIdsFromCertificate } from "../sdk/ts/src/core/spiffe-id.js";
import { PeerVerifier } from "../sdk/ts/src/core/tls/peer-verifier.js";
import { type CreateJoinTokenResponse, IdentityServiceClient, type IssueCertificateResponse } from "../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { type DiscoverResponse, RegisterRequest, type RegisterResponse, RegistryServiceClient } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { AgentManifest } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import { FileAuditLog } from "../sdk/ts/src/core/audit-log.js";
import { type MeshCa, loadOrCreateCa, splitPemCertificates } from "../services/identity/domain/ca.js";
import { RevocationList } from "../services/identity/domain/revocations.js";
import { MemoryCertificateStore } from "../services/identity/adapters/memory-certificate-store.js";
import { MemoryRevocationStore } from "../services/identity/adapters/memory-revocation-store.js";
import { EnvelopeOpener } from "../services/identity/envelope-opener.js";
import type { CallerIdentity } from "../services/server/call-context.js";
import { type BenchRow, cpuPercent, delay, percentile, printTable, round, sampleProcess } from "./bench-kit.js";

const { values: args } = parseArgs({
  options: {
    issue: { type: "string", default: "400" },
    "issue-concurrency": { type: "string", default: "8" },
    connections: { type: "string", default: "200" },
    unary: { type: "string", default: "3000" },
    sign: { type: "string", default: "5000" },
    audit: { type: "string", default: "20000" },
  },
});
const issueCount = Number(args.issue);
const issueConcurrency = Number(args["issue-concurrency"]);
const connectionCount = Number(args.connections);
const unaryCount = Number(args.unary);
const signCount = Number(args.sign);
const auditCount = Number(args.audit);

const trustDomain = "agentmesh.local";
const registerMethod = "/agentmesh.v1.RegistryService/Register";
const audience = `spiffe://${trustDomain}/server`;

const manifest: AgentManifest = {
  name: "bench-agent",
  version: "1.0.0",
  capabilities: [{ name: "bench.echo", version: "1.0.0", attributes: { lang: "en" } }],
  labels: { zone: "z1" },
  resources: undefined,
  healthPolicy: { heartbeatIntervalMs: 1000, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 },
  agentCardJson: "",
};

interface ServerChild {
  address: string;
  dataDir: string;
  pid: number;
  stop(): Promise<void>;
}

/** `agentmesh server` as a child process: from dist when built, through tsx from source. */
async function startServerChild(extraArgs: string[]): Promise<ServerChild> {
  const dataDir = mkdtempSync(join(tmpdir(), "agentmesh-bench-security-"));
  const fromSource = import.meta.url.endsWith(".ts");
  const cli = join(import.meta.dirname, "..", "cli", fromSource ? "main.ts" : "main.js");
  const logPath = join(dataDir, "server.log");
  const limits = ["--identity-rate", "1000000", "--identity-max-in-flight", "100000", "--max-instances-per-identity", "1000000"];
  const child = spawn(
    process.execPath,
    [...(fromSource ? ["--import", "tsx"] : []), cli, "server", "--port", "0", "--http-port", "0", "--data-dir", dataDir, ...limits, ...extraArgs],
    { stdio: ["ignore", openSync(logPath, "a"), "inherit"] },
  );
  let listening: { grpcAddress: string } | undefined;
  while (!listening) {
    if (child.exitCode !== null) throw new Error(`server exited; see ${logPath}`);
    const line = readFileSync(logPath, "utf8").split("\n").find((text) => text.includes('"msg":"listening"'));
    if (line) listening = JSON.parse(line) as { grpcAddress: string };
    else await delay(50);
  }
  return {
    address: listening.grpcAddress,
    dataDir,
    pid: child.pid as number,
    stop: () =>
      new Promise((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

interface Identity {
  spiffeId: string;
  chainPem: string[];
  privateKeyPem: string;
  privateKey: KeyObject;
  certificate: X509Certificate;
}

async function mint(ca: MeshCa, spiffeId: string, allowedAgentNames?: string[]): Promise<Identity> {
  const { csrPem, privateKeyPem, privateKey } = await generateKeyAndCsr(spiffeId);
  const issued = await ca.issueCertificate({ csrPem, spiffeId, ttlMs: 60 * 60_000, allowedAgentNames });
  return { spiffeId, chainPem: issued.chainPem, privateKeyPem, privateKey, certificate: new X509Certificate(issued.chainPem[0] ?? "") };
}

/** TLS to a mesh server, checked by SPIFFE ID; with a client certificate when given. */
function tlsCredentials(trustBundlePem: string[], identity?: Identity): ChannelCredentials {
  return grpcCredentials.createSsl(
    Buffer.from(trustBundlePem.join("")),
    identity ? Buffer.from(identity.privateKeyPem) : null,
    identity ? Buffer.from(identity.chainPem.join("")) : null,
    {
      checkServerIdentity: (_host: string, certificate: PeerCertificate) => {
        const [id] = spiffeIdsFromCertificate(new X509Certificate(certificate.raw));
        return id?.startsWith(`spiffe://${trustDomain}/server/`) ? undefined : new Error("not a mesh server");
      },
    },
  );
}

// A new connection per channel (no shared subchannel), and a fixed TLS name.
const tlsChannelOptions = { "grpc.ssl_target_name_override": "agentmesh-server", "grpc.use_local_subchannel_pool": 1 };

function unary<Response>(invoke: (metadata: Metadata, options: CallOptions, callback: (error: ServiceError | null, response: Response) => void) => unknown): Promise<Response> {
  return new Promise((resolve, reject) =>
    invoke(new Metadata(), { deadline: new Date(Date.now() + 10_000) }, (error, response) => (error ? reject(error) : resolve(response))),
  );
}

function signedRegister(identity: Identity, instanceId: string, withChain = true): RegisterRequest {
  const inner = RegisterRequest.fromPartial({ manifest, instanceId, host: "bench-host" });
  const envelope = signEnvelope({
    payload: RegisterRequest.encode(inner).finish(),
    signer: identity.spiffeId,
    audience,
    method: registerMethod,
    payloadType: "agentmesh.v1.RegisterRequest",
    privateKey: identity.privateKey,
    clock: systemClock,
    signerChain: withChain ? [identity.certificate.raw] : undefined,
  });
  return { ...RegisterRequest.fromPartial({}), envelope };
}

function stats(samplesMs: number[]): { p50Ms: number; p99Ms: number } {
  return { p50Ms: round(percentile(samplesMs, 0.5), 3), p99Ms: round(percentile(samplesMs, 0.99), 3) };
}

/** IssueCertificate with pre-generated CSRs: sequential for latency, concurrent for throughput. */
async function benchIssuance(server: ServerChild, ca: MeshCa, admin: Identity) {
  const trustBundle = ca.trustBundle();
  const adminClient = new IdentityServiceClient(server.address, tlsCredentials(trustBundle, admin), tlsChannelOptions);
  const { token } = await unary<CreateJoinTokenResponse>((metadata, options, callback) =>
    adminClient.createJoinToken({ host: "bench-host", allowedAgentNames: ["*"], maxUses: 100_000, ttlSeconds: 3600 }, metadata, options, callback),
  );
  adminClient.close();
  const total = issueCount * 2;
  const csrs = await Promise.all(Array.from({ length: total }, (_, index) => generateKeyAndCsr(`spiffe://${trustDomain}/agent/bench-${index}`)));
  const joiner = new IdentityServiceClient(server.address, tlsCredentials(trustBundle), tlsChannelOptions);
  const issue = (index: number) =>
    unary<IssueCertificateResponse>((metadata, options, callback) =>
      joiner.issueCertificate({ csrPem: csrs[index]?.csrPem ?? "", joinToken: token, spiffeId: `spiffe://${trustDomain}/agent/bench-${index}`, ttlSeconds: 0 }, metadata, options, callback),
    );
  for (let index = 0; index < 20; index += 1) await issue(index);
  const latencies: number[] = [];
  for (let index = 20; index < issueCount; index += 1) {
    const began = performance.now();
    await issue(index);
    latencies.push(performance.now() - began);
  }
  const before = sampleProcess(server.pid);
  const startedAt = performance.now();
  let next = issueCount;
  await Promise.all(
    Array.from({ length: issueConcurrency }, async () => {
      for (let index = next++; index < total; index = next++) await issue(index);
    }),
  );
  const seconds = (performance.now() - startedAt) / 1000;
  const serverCpu = cpuPercent(before, sampleProcess(server.pid));
  joiner.close();
  return { perSecond: round(issueCount / seconds, 1), concurrency: issueConcurrency, ...stats(latencies), serverCpuPercent: round(serverCpu, 1) };
}

/** A fresh connection (TCP + TLS 1.3 with client certificate) and a signed Register on it. */
async function benchNewConnection(server: ServerChild, agent: Identity, trustBundle: string[]) {
  const credentials = tlsCredentials(trustBundle, agent);
  const once = async (index: number) => {
    const began = performance.now();
    const client = new RegistryServiceClient(server.address, credentials, tlsChannelOptions);
    await unary<RegisterResponse>((metadata, options, callback) => client.register(signedRegister(agent, "bench-reconnect"), metadata, options, callback));
    const elapsed = performance.now() - began;
    client.close();
    return index >= 0 ? elapsed : 0;
  };
  for (let index = 0; index < 10; index += 1) await once(-1);
  const latencies: number[] = [];
  for (let index = 0; index < connectionCount; index += 1) latencies.push(await once(index));
  return stats(latencies);
}

/** The TLS 1.3 handshake alone (TCP + mTLS, ALPN h2), to see what part of a new connection is crypto. */
async function benchTlsHandshake(server: ServerChild, agent: Identity, trustBundle: string[]) {
  const [host, port] = [server.address.slice(0, server.address.lastIndexOf(":")), Number(server.address.slice(server.address.lastIndexOf(":") + 1))];
  const once = () =>
    new Promise<number>((resolve, reject) => {
      const began = performance.now();
      const socket = tlsConnect({
        host,
        port,
        ca: trustBundle.join(""),
        cert: agent.chainPem.join(""),
        key: agent.privateKeyPem,
        ALPNProtocols: ["h2"],
        servername: "agentmesh-server",
        checkServerIdentity: () => undefined,
      });
      socket.once("secureConnect", () => {
        const elapsed = performance.now() - began;
        socket.destroy();
        resolve(elapsed);
      });
      socket.once("error", reject);
    });
  for (let index = 0; index < 10; index += 1) await once();
  const latencies: number[] = [];
  for (let index = 0; index < connectionCount; index += 1) latencies.push(await once());
  return stats(latencies);
}

async function discoverLatencies(client: RegistryServiceClient): Promise<number[]> {
  const request = { capability: "bench.echo", versionRange: "^1", labelSelector: undefined, limit: 0, includeUnhealthy: false };
  const call = () => unary<DiscoverResponse>((metadata, options, callback) => client.discover(request, metadata, options, callback));
  for (let index = 0; index < 200; index += 1) await call();
  const samples: number[] = [];
  for (let index = 0; index < unaryCount; index += 1) {
    const began = performance.now();
    await call();
    samples.push(performance.now() - began);
  }
  return samples;
}

/** The same Discover on one open channel to each server, interleaved in rounds so load drift hits both alike. */
async function benchUnary(plain: ServerChild, secure: ServerChild, agent: Identity, trustBundle: string[]) {
  const plainClient = new RegistryServiceClient(plain.address, grpcCredentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
  const secureClient = new RegistryServiceClient(secure.address, tlsCredentials(trustBundle, agent), tlsChannelOptions);
  const plainSamples: number[] = [];
  const secureSamples: number[] = [];
  for (let round = 0; round < 3; round += 1) {
    plainSamples.push(...(await discoverLatencies(plainClient)));
    secureSamples.push(...(await discoverLatencies(secureClient)));
  }
  plainClient.close();
  secureClient.close();
  const plaintext = stats(plainSamples);
  const mtls = stats(secureSamples);
  return { plaintext, mtls, ratioP50: round(mtls.p50Ms / plaintext.p50Ms, 2), ratioP99: round(mtls.p99Ms / plaintext.p99Ms, 2) };
}

/** In process: sign (client side) and open (server side: checks, signature, nonce cache) a Register envelope. */
async function benchSignVerify(ca: MeshCa, agent: Identity) {
  const peer = { raw: agent.certificate.raw, fingerprint256: agent.certificate.fingerprint256 } as PeerCertificate;
  const anchors = [...ca.trustBundle(), ...splitPemCertificates(ca.certificatePem)];
  const verifier = new PeerVerifier(trustDomain, anchors);
  const verified = verifier.verify(peer, Date.now());
  const caller: CallerIdentity = { spiffeId: agent.spiffeId, serial: verified.serial, publicKey: verified.publicKey, isAdmin: false, allowedAgentNames: new Set(["bench-agent"]) };
  const revocations = new RevocationList({ certificates: new MemoryCertificateStore(), store: new MemoryRevocationStore(), clock: systemClock });
  const opener = new EnvelopeOpener(trustDomain, new MemoryNonceCache({ clock: systemClock }), systemClock, { verifier, revocations });
  const payload = RegisterRequest.encode(RegisterRequest.fromPartial({ manifest, host: "bench-host" })).finish();
  const sign = (withChain: boolean) =>
    signEnvelope({ payload, signer: agent.spiffeId, audience, method: registerMethod, payloadType: "agentmesh.v1.RegisterRequest", privateKey: agent.privateKey, clock: systemClock, signerChain: withChain ? [agent.certificate.raw] : undefined });

  // Both variants interleaved per iteration, so load drift on a shared machine hits them alike.
  const samples = { withoutChain: { signMs: [] as number[], openMs: [] as number[] }, withChain: { signMs: [] as number[], openMs: [] as number[] } };
  for (let index = 0; index < signCount + 200; index += 1) {
    for (const variant of ["withoutChain", "withChain"] as const) {
      let began = performance.now();
      const envelope = sign(variant === "withChain");
      const signed = performance.now() - began;
      began = performance.now();
      await opener.open(envelope, caller, registerMethod, "agentmesh.v1.RegisterRequest");
      const opened = performance.now() - began;
      if (index >= 200) {
        samples[variant].signMs.push(signed);
        samples[variant].openMs.push(opened);
      }
    }
  }
  const summarize = ({ signMs, openMs }: { signMs: number[]; openMs: number[] }) => {
    const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);
    const addedMs = signMs.map((value, index) => value + (openMs[index] ?? 0));
    return {
      signPerSecond: round(signMs.length / (sum(signMs) / 1000), 0),
      verifyPerSecond: round(openMs.length / (sum(openMs) / 1000), 0),
      signP50Ms: round(percentile(signMs, 0.5), 4),
      verifyP50Ms: round(percentile(openMs, 0.5), 4),
      addedP50Ms: round(percentile(addedMs, 0.5), 4),
      addedP99Ms: round(percentile(addedMs, 0.99), 4),
    };
  };
  // Raw primitive, without the opener's checks: what the curve itself costs.
  const envelope = sign(false);
  const nonceFree = { checkAndRemember: () => true };
  let began = performance.now();
  for (let index = 0; index < signCount; index += 1) {
    await verifyEnvelope(envelope, { publicKey: verified.publicKey, expectedSigner: agent.spiffeId, expectedAudience: audience, expectedMethod: registerMethod, expectedPayloadType: "agentmesh.v1.RegisterRequest", clock: systemClock, nonceCache: nonceFree });
  }
  const rawVerifyPerSecond = round(signCount / ((performance.now() - began) / 1000), 0);
  began = performance.now();
  for (let index = 0; index < signCount; index += 1) sign(false);
  const rawSignPerSecond = round(signCount / ((performance.now() - began) / 1000), 0);
  return { withoutChain: summarize(samples.withoutChain), withChain: summarize(samples.withChain), rawSignPerSecond, rawVerifyPerSecond, envelopeBytes: { withoutChain: sign(false).signature.length, chainBytes: agent.certificate.raw.length } };
}

/** Appends to a FileAuditLog as the server does (fire many, batched writes). */
async function benchAudit() {
  const measure = async (durability: "write" | "fsync", count: number) => {
    const dir = mkdtempSync(join(tmpdir(), "agentmesh-bench-audit-"));
    const log = await FileAuditLog.open({ path: join(dir, "audit.log"), clock: systemClock, durability });
    const began = performance.now();
    const pending: Array<Promise<void>> = [];
    for (let index = 0; index < count; index += 1) {
      pending.push(log.append({ actor: "spiffe://agentmesh.local/sidecar/bench", action: "agent.register", target: `instance-${index}`, outcome: "success", requestId: `r${index}`, details: { serial: "4f00aa", agentName: "bench-agent" } }));
    }
    await Promise.all(pending);
    const seconds = (performance.now() - began) / 1000;
    await log.close();
    // One at a time: the latency a single audited call waits for its entry.
    const single = await FileAuditLog.open({ path: join(dir, "single.log"), clock: systemClock, durability });
    const latencies: number[] = [];
    for (let index = 0; index < 500; index += 1) {
      const start = performance.now();
      await single.append({ actor: "a", action: "agent.register", target: "t", outcome: "success", requestId: "r" });
      latencies.push(performance.now() - start);
    }
    await single.close();
    return { entriesPerSecond: round(count / seconds, 0), singleAppend: stats(latencies) };
  };
  return { write: await measure("write", auditCount), fsync: await measure("fsync", Math.min(auditCount, 5000)) };
}

/** bench/results/<name>.json at the repository root, whether run from source (tsx) or from dist. */
function writeResults(name: string, data: unknown): string {
  let root = import.meta.dirname;
  while (!existsSync(join(root, "package.json")) && dirname(root) !== root) root = dirname(root);
  const path = join(root, "bench", "results", `${name}.json`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(data, null, 2)}\n`);
  return path;
}

async function main(): Promise<void> {
  const secure = await startServerChild([]);
  const plain = await startServerChild(["--insecure-dev"]);
  try {
    // The bench is the operator: it mints from the CA in the server's data dir, as `ctl init-admin` does.
    const ca = await loadOrCreateCa({ dataDir: secure.dataDir, trustDomain, clock: systemClock });
    const trustBundle = ca.trustBundle();
    const admin = await mint(ca, `spiffe://${trustDomain}/admin/bench`);
    const agent = await mint(ca, `spiffe://${trustDomain}/agent/bench-agent`);

    const issuance = await benchIssuance(secure, ca, admin);
    const newConnection = await benchNewConnection(secure, agent, trustBundle);
    const tlsHandshake = await benchTlsHandshake(secure, agent, trustBundle);
    const unaryLatency = await benchUnary(plain, secure, agent, trustBundle);
    const signing = await benchSignVerify(ca, agent);
    const audit = await benchAudit();

    const rows: BenchRow[] = [
      { metric: `certificate issuance (concurrency ${issuance.concurrency})`, value: issuance.perSecond, unit: "certs/s" },
      { metric: "certificate issuance p50 / p99", value: `${issuance.p50Ms} / ${issuance.p99Ms}`, unit: "ms" },
      { metric: "  server CPU while issuing", value: issuance.serverCpuPercent, unit: "% of a core" },
      { metric: "new mTLS connection + signed Register p50 / p99", value: `${newConnection.p50Ms} / ${newConnection.p99Ms}`, unit: "ms", budget: "p99 < 50", ok: newConnection.p99Ms < 50 },
      { metric: "  of which the TLS handshake alone p50 / p99", value: `${tlsHandshake.p50Ms} / ${tlsHandshake.p99Ms}`, unit: "ms" },
      { metric: "Discover on open channel, plaintext p50 / p99", value: `${unaryLatency.plaintext.p50Ms} / ${unaryLatency.plaintext.p99Ms}`, unit: "ms" },
      { metric: "Discover on open channel, mTLS p50 / p99", value: `${unaryLatency.mtls.p50Ms} / ${unaryLatency.mtls.p99Ms}`, unit: "ms" },
      { metric: "mTLS / plaintext ratio p50 / p99", value: `${unaryLatency.ratioP50} / ${unaryLatency.ratioP99}`, unit: "x" },
      { metric: "ES256 sign (signEnvelope)", value: signing.rawSignPerSecond, unit: "ops/s" },
      { metric: "ES256 verify (verifyEnvelope)", value: signing.rawVerifyPerSecond, unit: "ops/s" },
      { metric: "sign + server open, added to one Register p50 / p99", value: `${signing.withoutChain.addedP50Ms} / ${signing.withoutChain.addedP99Ms}`, unit: "ms", budget: "p50 < 0.2", ok: signing.withoutChain.addedP50Ms < 0.2 },
      { metric: "  same with signer_chain attached p50 / p99", value: `${signing.withChain.addedP50Ms} / ${signing.withChain.addedP99Ms}`, unit: "ms", budget: "p50 < 0.2", ok: signing.withChain.addedP50Ms < 0.2 },
      { metric: "audit append (write), batched", value: audit.write.entriesPerSecond, unit: "entries/s" },
      { metric: "audit append (write), one at a time p50 / p99", value: `${audit.write.singleAppend.p50Ms} / ${audit.write.singleAppend.p99Ms}`, unit: "ms" },
      { metric: "audit append (fsync), batched", value: audit.fsync.entriesPerSecond, unit: "entries/s" },
      { metric: "audit append (fsync), one at a time p50 / p99", value: `${audit.fsync.singleAppend.p50Ms} / ${audit.fsync.singleAppend.p99Ms}`, unit: "ms" },
    ];
    printTable("bench:security", rows);
    const path = writeResults("security", {
      bench: "security",
      date: new Date().toISOString(),
      node: process.version,
      parameters: { issueCount, issueConcurrency, connectionCount, unaryCount, signCount, auditCount },
      note: "servers are child processes; latencies measured by this process; sign/verify in process on a RegisterRequest payload",
      issuance,
      newConnection,
      tlsHandshake,
      unary: unaryLatency,
      signing,
      audit,
      rows,
    });
    process.stdout.write(`\nwrote ${path}\n`);
  } finally {
    await Promise.all([secure.stop(), plain.stop()]);
  }
}

await main();
