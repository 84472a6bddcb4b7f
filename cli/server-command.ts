import { mkdirSync, readFileSync } from "node:fs";
import type { Command } from "commander";
import { MeshError } from "../sdk/ts/src/core/mesh-error.js";
import { type ServerConfig, defaultServerConfig } from "../services/server/config.js";
import { createLogger } from "../services/server/logger.js";
import { startServer } from "../services/server/server.js";
import { parseDurationMs } from "./duration.js";
import { envOption, parseInteger, parseNumber } from "./options.js";
import { exitOnSignal } from "./shutdown.js";

// The process must be gone within 5 s of SIGTERM, whatever is still in flight.
const EXIT_DEADLINE_MS = 5000;

export function addServerCommand(program: Command): void {
  const defaults = defaultServerConfig;
  program
    .command("server")
    .description("run the control plane: registry, orchestrator, health, reflection and metrics")
    .addOption(envOption("--host <host>", "AGENTMESH_HOST", "gRPC bind address", defaults.host))
    .addOption(envOption("--port <port>", "AGENTMESH_PORT", "gRPC port (0 = any free port)", String(defaults.port)).argParser(parseInteger("--port", 0, 65535)))
    .addOption(envOption("--http-host <host>", "AGENTMESH_HTTP_HOST", "bind address of /metrics, /healthz, /readyz", defaults.httpHost))
    .addOption(envOption("--http-port <port>", "AGENTMESH_HTTP_PORT", "HTTP port for /metrics, /healthz, /readyz", String(defaults.httpPort)).argParser(parseInteger("--http-port", 0, 65535)))
    .addOption(envOption("--data-dir <dir>", "AGENTMESH_DATA_DIR", "directory for what the server keeps on disk (CA, audit log)", defaults.dataDir))
    .addOption(envOption("--role <role>", "AGENTMESH_ROLE", "all (registry and orchestrator alone need the shared PostgreSQL/Redis store, not built yet)", defaults.role))
    .addOption(envOption("--trust-domain <domain>", "AGENTMESH_TRUST_DOMAIN", "SPIFFE trust domain", defaults.trustDomain))
    .addOption(envOption("--server-id <id>", "AGENTMESH_SERVER_ID", "id of this replica", defaults.serverId))
    .addOption(envOption("--insecure-dev", "AGENTMESH_INSECURE_DEV", "plaintext gRPC on 127.0.0.1 only, no authentication (development)"))
    .addOption(envOption("--log-level <level>", "AGENTMESH_LOG_LEVEL", "trace | debug | info | warn | error", defaults.logLevel))
    .addOption(
      envOption("--heartbeat-timeout-multiplier <n>", "AGENTMESH_HEARTBEAT_TIMEOUT_MULTIPLIER", "intervals of silence before an agent is UNHEALTHY", String(defaults.heartbeatTimeoutMultiplier)).argParser(
        parseNumber("--heartbeat-timeout-multiplier", 1.5, 10),
      ),
    )
    .addOption(
      envOption("--reconnect-grace-ms <ms>", "AGENTMESH_RECONNECT_GRACE_MS", "time a lost sidecar stream has to come back", String(defaults.reconnectGraceMs)).argParser(
        parseInteger("--reconnect-grace-ms", 0, 600_000),
      ),
    )
    .addOption(
      envOption(
        "--lost-instance-timeout-ms <ms>",
        "AGENTMESH_LOST_INSTANCE_TIMEOUT_MS",
        "an instance no sidecar reports, out of routing this long, is replaced and deregistered",
        String(defaults.lostInstanceTimeoutMs),
      ).argParser(parseInteger("--lost-instance-timeout-ms", 1000, 3_600_000)),
    )
    .addOption(
      envOption("--max-message-bytes <bytes>", "AGENTMESH_MAX_MESSAGE_BYTES", "largest gRPC message accepted", String(defaults.maxMessageBytes)).argParser(
        parseInteger("--max-message-bytes", 1024, 64 * 1024 * 1024),
      ),
    )
    .addOption(envOption("--ca-cert <file>", "AGENTMESH_CA_CERT_FILE", "operator CA certificate PEM (root, or intermediate then its chain)"))
    .addOption(envOption("--ca-key <file>", "AGENTMESH_CA_KEY_FILE", "operator CA private key PEM"))
    .addOption(envOption("--cert-ttl <duration>", "AGENTMESH_CERT_TTL", "lifetime of issued certificates", "1h").argParser(parseDurationMs))
    .addOption(
      envOption("--max-connection-age <duration>", "AGENTMESH_MAX_CONNECTION_AGE", "retire client connections after this long (0 = a quarter of --cert-ttl)", "0").argParser((text) => (text === "0" ? 0 : parseDurationMs(text))),
    )
    .addOption(envOption("--server-name <name...>", "AGENTMESH_SERVER_NAMES", "extra DNS names or IPs for the server certificate"))
    .addOption(envOption("--identity-rate <n>", "AGENTMESH_IDENTITY_RATE", "calls per second per identity", String(defaults.identityRatePerSecond)).argParser(parseNumber("--identity-rate", 0, 1e6)))
    .addOption(envOption("--identity-max-in-flight <n>", "AGENTMESH_IDENTITY_MAX_IN_FLIGHT", "concurrent calls per identity", String(defaults.identityMaxInFlight)).argParser(parseInteger("--identity-max-in-flight", 0, 1e6)))
    .addOption(envOption("--audit-fsync", "AGENTMESH_AUDIT_FSYNC", "fdatasync the audit log once per batch (survives power loss)"))
    .addOption(envOption("--identity-max-streams <n>", "AGENTMESH_IDENTITY_MAX_STREAMS", "open streams (Connect, Watch) per identity, apart from calls in flight", String(defaults.identityMaxStreams)).argParser(parseInteger("--identity-max-streams", 0, 1e6)))
    .addOption(envOption("--first-message-timeout <duration>", "AGENTMESH_FIRST_MESSAGE_TIMEOUT", "end a stream (Connect, Watch) whose first message does not arrive within this", "5s").argParser(parseDurationMs))
    .addOption(envOption("--tls-handshake-timeout <duration>", "AGENTMESH_TLS_HANDSHAKE_TIMEOUT", "close a connection that has not finished TLS within this", "5s").argParser(parseDurationMs))
    .addOption(envOption("--max-instances-per-identity <n>", "AGENTMESH_MAX_INSTANCES_PER_IDENTITY", "registered instances per identity", String(defaults.maxInstancesPerIdentity)).argParser(parseInteger("--max-instances-per-identity", 1, 1e6)))
    .addOption(envOption("--alerts-config <file>", "AGENTMESH_ALERTS_CONFIG", "alert rules and receivers (YAML, see docs/alerts.md)"))
    .addOption(envOption("--alert-webhook <url...>", "AGENTMESH_ALERT_WEBHOOKS", "Alertmanager-format webhook receiver(s)"))
    .action(async (options: Record<string, unknown>) => {
      const config: Partial<ServerConfig> = {
        host: options.host as string,
        port: Number(options.port),
        httpHost: options.httpHost as string,
        httpPort: Number(options.httpPort),
        dataDir: options.dataDir as string,
        role: options.role as ServerConfig["role"],
        trustDomain: options.trustDomain as string,
        serverId: options.serverId as string,
        insecureDev: options.insecureDev === true || options.insecureDev === "true" || options.insecureDev === "1",
        logLevel: options.logLevel as string,
        heartbeatTimeoutMultiplier: Number(options.heartbeatTimeoutMultiplier),
        reconnectGraceMs: Number(options.reconnectGraceMs),
        lostInstanceTimeoutMs: Number(options.lostInstanceTimeoutMs),
        maxMessageBytes: Number(options.maxMessageBytes),
        caCertFile: options.caCert as string | undefined,
        caKeyFile: options.caKey as string | undefined,
        certTtlMs: typeof options.certTtl === "string" ? parseDurationMs(options.certTtl) : Number(options.certTtl),
        maxConnectionAgeMs: options.maxConnectionAge === "0" ? 0 : Number(options.maxConnectionAge),
        serverNames: (options.serverName as string[] | undefined) ?? [],
        identityRatePerSecond: Number(options.identityRate),
        identityBurst: Number(options.identityRate) * 2,
        identityMaxInFlight: Number(options.identityMaxInFlight),
        identityMaxStreams: Number(options.identityMaxStreams),
        auditFsync: options.auditFsync === true || options.auditFsync === "true" || options.auditFsync === "1",
        firstMessageTimeoutMs: typeof options.firstMessageTimeout === "string" ? parseDurationMs(options.firstMessageTimeout) : Number(options.firstMessageTimeout),
        tlsHandshakeTimeoutMs: typeof options.tlsHandshakeTimeout === "string" ? parseDurationMs(options.tlsHandshakeTimeout) : Number(options.tlsHandshakeTimeout),
        maxInstancesPerIdentity: Number(options.maxInstancesPerIdentity),
        alertsConfigText: options.alertsConfig ? readFileSync(String(options.alertsConfig), "utf8") : undefined,
        alertWebhooks: Array.isArray(options.alertWebhook) ? options.alertWebhook.map(String) : typeof options.alertWebhook === "string" ? options.alertWebhook.split(",") : [],
      };
      const log = createLogger(config.logLevel ?? "info");
      try {
        mkdirSync(config.dataDir ?? defaults.dataDir, { recursive: true, mode: 0o700 });
        const running = await startServer(config, { log });
        // Machine-readable line for scripts and tests that start the server on port 0.
        log.info({ grpcAddress: running.address, httpPort: running.httpPort }, "listening");
        exitOnSignal(log, () => running.close(), EXIT_DEADLINE_MS);
      } catch (error) {
        if (error instanceof MeshError || (error instanceof Error && /--ca-|CA /.test(error.message))) {
          log.error({ problem: error.message }, "cannot start server");
          process.exitCode = 2;
          return;
        }
        log.error({ err: error }, "cannot start server");
        process.exitCode = 1;
      }
    });
}
