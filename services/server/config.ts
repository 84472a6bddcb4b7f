import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";

export type ServerStore = "embedded" | "postgres";

/** Everything `agentmesh server` can be told, after parsing flags and env. */
export interface ServerConfig {
  host: string;
  port: number;
  httpHost: string;
  httpPort: number;
  dataDir: string;
  /** embedded: SQLite in dataDir (the default, durable with no database server); postgres: shared by replicas. */
  store: ServerStore;
  postgresUrl?: string;
  /** Schema holding agentmesh's tables in PostgreSQL. */
  postgresSchema: string;
  /** Wake-ups and shared coordination between replicas (with --store postgres). */
  redisUrl?: string;
  /** With --store postgres and --redis-url: the leader's lease; another replica takes over reconciling this long after the leader dies, and a replica whose liveness lease (same length) lapses has its instances taken over. */
  leaderLeaseMs: number;
  /** Revisions of state history kept for Watch resumes before compaction. */
  stateRetainRevisions: number;
  /** After a restart, how long the reconciler waits for sidecars to report their instances (no flag: tests shorten it). */
  adoptGraceMs: number;
  trustDomain: string;
  serverId: string;
  insecureDev: boolean;
  logLevel: string;
  heartbeatTimeoutMultiplier: number;
  reconnectGraceMs: number;
  detectorSweepMs: number;
  shutdownGraceMs: number;
  maxMessageBytes: number;
  maxInstancesPerStream: number;
  /** Operator CA (root or intermediate) instead of the one generated in dataDir. */
  caCertFile?: string;
  caKeyFile?: string;
  certTtlMs: number;
  maxCertTtlMs: number;
  /** Extra DNS names / IPs for the server certificate (how clients dial it). */
  serverNames: string[];
  identityRatePerSecond: number;
  identityBurst: number;
  identityMaxInFlight: number;
  /** Open streams (Connect, Watch) per identity, counted apart from unary calls in flight. */
  identityMaxStreams: number;
  maxConcurrentStreams: number;
  /** A stream (Connect, Watch) must send its first message within this, or it is ended with DEADLINE_EXCEEDED. */
  firstMessageTimeoutMs: number;
  /** A connection must finish its TLS handshake within this (absolute, not idle time), or it is closed. */
  tlsHandshakeTimeoutMs: number;
  maxInstancesPerIdentity: number;
  /** Capabilities whose calls through OrchestratorService.Invoke are signed one by one (audited by the receiving sidecar) instead of MACed on the tunnel. */
  signedCapabilities: string[];
  auditFsync: boolean;
  /** Refusals are audited by sampling window (services/identity/refusal-auditor.ts). */
  auditSampleIntervalMs: number;
  /** Denials one authenticated identity may write individually per sampling window. */
  auditDenialsPerIdentity: number;
  /** While the audit log cannot be written, how often to try again. */
  auditRetryIntervalMs: number;
  /** Alert rules and receivers (YAML text); defaults apply when absent. */
  alertsConfigText?: string;
  /** Extra Alertmanager-format webhook receivers. */
  alertWebhooks: string[];
  reconcileIntervalMs: number;
  /** A managed or unmanaged instance no sidecar session reports, out of routing this long, is replaced (if managed) and deregistered. */
  lostInstanceTimeoutMs: number;
  /** How long Stop/Drain/RestartAgent wait for the sidecar's CommandResult beyond the grace (no flag: tests shorten it). */
  commandResultSlackMs: number;
  /**
   * Connections are retired (HTTP/2 GOAWAY) after this long, so a client shows a
   * renewed certificate on a new connection; 0 = a quarter of --cert-ttl.
   */
  maxConnectionAgeMs: number;
}

export const defaultServerConfig: ServerConfig = {
  host: "127.0.0.1",
  port: 7420,
  httpHost: "127.0.0.1",
  httpPort: 7421,
  dataDir: ".agentmesh",
  store: "embedded",
  postgresSchema: "agentmesh",
  stateRetainRevisions: 100_000,
  leaderLeaseMs: 3_000,
  adoptGraceMs: 10_000,
  trustDomain: "agentmesh.local",
  serverId: "server-1",
  insecureDev: false,
  logLevel: "info",
  heartbeatTimeoutMultiplier: 2,
  reconnectGraceMs: 1000,
  detectorSweepMs: 50,
  shutdownGraceMs: 4000,
  maxMessageBytes: 4 * 1024 * 1024,
  maxInstancesPerStream: 10_000,
  certTtlMs: 60 * 60_000,
  maxCertTtlMs: 24 * 60 * 60_000,
  serverNames: [],
  identityRatePerSecond: 2000,
  identityBurst: 4000,
  identityMaxInFlight: 512,
  identityMaxStreams: 64,
  maxConcurrentStreams: 1000,
  firstMessageTimeoutMs: 5000,
  tlsHandshakeTimeoutMs: 5000,
  maxInstancesPerIdentity: 10_000,
  signedCapabilities: [],
  auditFsync: false,
  auditSampleIntervalMs: 10_000,
  auditDenialsPerIdentity: 50,
  auditRetryIntervalMs: 1000,
  alertWebhooks: [],
  reconcileIntervalMs: 1000,
  lostInstanceTimeoutMs: 15_000,
  commandResultSlackMs: 20_000,
  maxConnectionAgeMs: 0,
};

const loopbackHosts = new Set(["127.0.0.1", "localhost", "::1"]);

/** Rejects configurations that would be unsafe or cannot work, with a message naming the setting. */
export function validateServerConfig(config: ServerConfig): void {
  if (config.insecureDev && !loopbackHosts.has(config.host)) {
    throw new MeshError("invalidArgument", "--insecure-dev serves plaintext and only binds 127.0.0.1; remove --host or the dev flag");
  }
  for (const [name, port] of [["--port", config.port], ["--http-port", config.httpPort]] as const) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new MeshError("invalidArgument", `${name}: must be 0-65535`);
  }
  if (!(config.heartbeatTimeoutMultiplier >= 1.5 && config.heartbeatTimeoutMultiplier <= 10)) {
    throw new MeshError("invalidArgument", "--heartbeat-timeout-multiplier: must be 1.5-10");
  }
  if (!(config.reconnectGraceMs >= 0 && config.reconnectGraceMs <= 600_000)) {
    throw new MeshError("invalidArgument", "--reconnect-grace-ms: must be 0-600000");
  }
  if (!(config.lostInstanceTimeoutMs >= 1000 && config.lostInstanceTimeoutMs <= 3_600_000)) {
    throw new MeshError("invalidArgument", "--lost-instance-timeout-ms: must be 1000-3600000");
  }
  if (!(config.certTtlMs >= 1000 && config.certTtlMs <= config.maxCertTtlMs)) {
    throw new MeshError("invalidArgument", "--cert-ttl: must be at least 1s and at most the maximum certificate lifetime");
  }
  if (!(config.maxConnectionAgeMs === 0 || (config.maxConnectionAgeMs >= 1000 && config.maxConnectionAgeMs <= config.certTtlMs / 2))) {
    throw new MeshError("invalidArgument", "--max-connection-age: must be at least 1s and at most half of --cert-ttl (0 = a quarter of --cert-ttl)");
  }
  for (const [name, value] of [
    ["--first-message-timeout", config.firstMessageTimeoutMs],
    ["--tls-handshake-timeout", config.tlsHandshakeTimeoutMs],
  ] as const) {
    if (!(Number.isInteger(value) && value >= 100 && value <= 600_000)) throw new MeshError("invalidArgument", `${name}: must be 100ms-10m`);
  }
  if (!(Number.isInteger(config.identityMaxStreams) && config.identityMaxStreams >= 0)) {
    throw new MeshError("invalidArgument", "--identity-max-streams: must be 0 (unlimited) or more");
  }
  if (!(config.auditSampleIntervalMs >= 10 && config.auditDenialsPerIdentity >= 1 && config.auditRetryIntervalMs >= 10)) {
    throw new MeshError("invalidArgument", "audit sampling: interval and retry at least 10 ms, at least one denial per identity");
  }
  if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(config.trustDomain)) {
    throw new MeshError("invalidArgument", "--trust-domain: must be a lowercase DNS name");
  }
  if (!["embedded", "postgres"].includes(config.store)) throw new MeshError("invalidArgument", "--store: must be embedded or postgres");
  if (config.store === "postgres" && !config.postgresUrl) throw new MeshError("invalidArgument", "--store postgres needs --postgres-url");
  if (config.store === "embedded" && (config.postgresUrl || config.redisUrl)) {
    throw new MeshError("invalidArgument", "--postgres-url and --redis-url need --store postgres");
  }
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(config.postgresSchema)) throw new MeshError("invalidArgument", "--postgres-schema: must be a lower-case identifier");
}
