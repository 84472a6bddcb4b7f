import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { parseAlertsConfigText } from "../services/alerts/index.js";
import { type ServerConfig, defaultServerConfig, validateServerConfig } from "../services/server/config.js";
import { createLogger } from "../services/server/logger.js";
import { type RunningServer, startServer } from "../services/server/server.js";
import { invocation, serverBanner } from "./banner.js";
import { CliError, inContext } from "./cli-error.js";
import type { ListenEndpoint } from "./error-translation.js";
import { envDurationOption, envOption, isDebugLevel, logLevelOption, parseInteger, parseNumber } from "./options.js";
import { exitOnSignal } from "./shutdown.js";
import { ensureWritableDirectory } from "./writable-directory.js";

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
    .addOption(envOption("--data-dir <dir>", "AGENTMESH_DATA_DIR", "directory for what the server keeps on disk (CA, audit log, embedded state store)", defaults.dataDir))
    .addOption(envOption("--store <kind>", "AGENTMESH_STORE", "where durable state lives: embedded (SQLite in --data-dir) or postgres (shared by replicas)", defaults.store))
    .addOption(envOption("--postgres-url <url>", "AGENTMESH_POSTGRES_URL", "PostgreSQL connection URL (with --store postgres)"))
    .addOption(envOption("--postgres-schema <name>", "AGENTMESH_POSTGRES_SCHEMA", "schema holding agentmesh's tables", defaults.postgresSchema))
    .addOption(envOption("--redis-url <url>", "AGENTMESH_REDIS_URL", "Redis URL for wake-ups and coordination between replicas (with --store postgres)"))
    .addOption(envOption("--trust-domain <domain>", "AGENTMESH_TRUST_DOMAIN", "SPIFFE trust domain", defaults.trustDomain))
    .addOption(envOption("--server-id <id>", "AGENTMESH_SERVER_ID", "id of this replica", defaults.serverId))
    .addOption(envOption("--insecure-dev", "AGENTMESH_INSECURE_DEV", "plaintext gRPC on 127.0.0.1 only, no authentication (development)"))
    .addOption(logLevelOption(defaults.logLevel))
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
    .addOption(envDurationOption("--cert-ttl <duration>", "AGENTMESH_CERT_TTL", "lifetime of issued certificates", "1h"))
    .addOption(envDurationOption("--max-connection-age <duration>", "AGENTMESH_MAX_CONNECTION_AGE", "retire client connections after this long (0 = a quarter of --cert-ttl)", "0"))
    .addOption(envOption("--server-name <name...>", "AGENTMESH_SERVER_NAMES", "extra DNS names or IPs for the server certificate"))
    .addOption(envOption("--identity-rate <n>", "AGENTMESH_IDENTITY_RATE", "calls per second per identity", String(defaults.identityRatePerSecond)).argParser(parseNumber("--identity-rate", 0, 1e6)))
    .addOption(envOption("--identity-max-in-flight <n>", "AGENTMESH_IDENTITY_MAX_IN_FLIGHT", "concurrent calls per identity", String(defaults.identityMaxInFlight)).argParser(parseInteger("--identity-max-in-flight", 0, 1e6)))
    .addOption(envOption("--identity-max-streams <n>", "AGENTMESH_IDENTITY_MAX_STREAMS", "open streams (Connect, Watch) per identity, apart from calls in flight", String(defaults.identityMaxStreams)).argParser(parseInteger("--identity-max-streams", 0, 1e6)))
    .addOption(envOption("--audit-fsync", "AGENTMESH_AUDIT_FSYNC", "fdatasync the audit log and the embedded state store once per batch (survives power loss)"))
    .addOption(envDurationOption("--first-message-timeout <duration>", "AGENTMESH_FIRST_MESSAGE_TIMEOUT", "end a stream (Connect, Watch) whose first message does not arrive within this", "5s"))
    .addOption(envDurationOption("--tls-handshake-timeout <duration>", "AGENTMESH_TLS_HANDSHAKE_TIMEOUT", "close a connection that has not finished TLS within this", "5s"))
    .addOption(envOption("--max-instances-per-identity <n>", "AGENTMESH_MAX_INSTANCES_PER_IDENTITY", "registered instances per identity", String(defaults.maxInstancesPerIdentity)).argParser(parseInteger("--max-instances-per-identity", 1, 1e6)))
    .addOption(envOption("--sign-calls <capability...>", "AGENTMESH_SIGN_CALLS", "capabilities whose calls through Invoke are signed one by one (audited) instead of MACed on the tunnel"))
    .addOption(envOption("--alerts-config <file>", "AGENTMESH_ALERTS_CONFIG", "alert rules and receivers (YAML, see docs/alerts.md)"))
    .addOption(envOption("--alert-webhook <url...>", "AGENTMESH_ALERT_WEBHOOKS", "Alertmanager-format webhook receiver(s)"))
    .action(async (options: Record<string, unknown>, command: Command) => {
      const config = configFromOptions(options);
      try {
        validateServerConfig({ ...defaults, ...config });
      } catch (error) {
        // Flags that cannot work together or are out of range: the command line must change.
        throw CliError.usage(error instanceof Error ? error.message : String(error), error);
      }
      const log = createLogger(config.logLevel ?? defaults.logLevel);
      const dataDir = config.dataDir ?? defaults.dataDir;
      let running: RunningServer;
      try {
        if (typeof options.alertsConfig === "string") config.alertsConfigText = await readAlertsConfig(options.alertsConfig);
        await inContext({ kind: "directory", flag: "--data-dir", path: dataDir }, () => ensureWritableDirectory(dataDir));
        running = await inContext({ kind: "listen", endpoints: listenEndpoints(config) }, () =>
          // A leader that lost its lease has closed; exiting lets the supervisor restart it as a follower.
          startServer(config, { log, onLeadershipLost: () => process.exit(1) }),
        );
      } catch (error) {
        const failure = CliError.from(error);
        // The same line in the JSON log, for whoever reads logs rather than the terminal.
        log.error({ problem: failure.message, ...(isDebugLevel(config.logLevel) ? { err: error } : {}) }, "cannot start server");
        throw failure;
      }
      // Machine-readable line for scripts and tests that start the server on port 0.
      log.info({ grpcAddress: running.address, httpPort: running.httpPort }, "listening");
      if (process.stderr.isTTY) {
        process.stderr.write(
          serverBanner({
            grpcAddress: running.address,
            httpAddress: `${config.httpHost ?? defaults.httpHost}:${running.httpPort}`,
            mtls: running.security.tls !== undefined,
            dataDir,
            dataDirIsDefault: command.getOptionValueSource("dataDir") === "default",
            defaultPort: running.grpcPort === defaults.port,
            cli: invocation(),
          }),
        );
      }
      exitOnSignal(log, () => running.close(), EXIT_DEADLINE_MS);
    });
}

function configFromOptions(options: Record<string, unknown>): Partial<ServerConfig> {
  return {
    host: options.host as string,
    port: Number(options.port),
    httpHost: options.httpHost as string,
    httpPort: Number(options.httpPort),
    dataDir: options.dataDir as string,
    store: options.store as ServerConfig["store"],
    postgresUrl: options.postgresUrl as string | undefined,
    postgresSchema: options.postgresSchema as string,
    redisUrl: options.redisUrl as string | undefined,
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
    certTtlMs: Number(options.certTtl),
    maxConnectionAgeMs: Number(options.maxConnectionAge),
    serverNames: (options.serverName as string[] | undefined) ?? [],
    identityRatePerSecond: Number(options.identityRate),
    identityBurst: Number(options.identityRate) * 2,
    identityMaxInFlight: Number(options.identityMaxInFlight),
    maxInstancesPerIdentity: Number(options.maxInstancesPerIdentity),
    signedCapabilities: (Array.isArray(options.signCalls) ? options.signCalls.map(String) : typeof options.signCalls === "string" ? options.signCalls.split(",") : []).filter((name) => name !== ""),
    identityMaxStreams: Number(options.identityMaxStreams),
    auditFsync: options.auditFsync === true || options.auditFsync === "true" || options.auditFsync === "1",
    firstMessageTimeoutMs: Number(options.firstMessageTimeout),
    tlsHandshakeTimeoutMs: Number(options.tlsHandshakeTimeout),
    alertWebhooks: Array.isArray(options.alertWebhook) ? options.alertWebhook.map(String) : typeof options.alertWebhook === "string" ? options.alertWebhook.split(",") : [],
  };
}

/** The file's text, with its content checked now: a bad rule is the file's problem, named with its path. */
async function readAlertsConfig(path: string): Promise<string> {
  const text = await inContext({ kind: "readFile", flag: "--alerts-config", path }, () => readFile(path, "utf8"));
  try {
    parseAlertsConfigText(text);
  } catch (error) {
    throw CliError.failed(`--alerts-config ${path}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
  return text;
}

function listenEndpoints(config: Partial<ServerConfig>): ListenEndpoint[] {
  return [
    { hostFlag: "--host", portFlag: "--port", host: config.host ?? defaultServerConfig.host, port: config.port ?? defaultServerConfig.port },
    { hostFlag: "--http-host", portFlag: "--http-port", host: config.httpHost ?? defaultServerConfig.httpHost, port: config.httpPort ?? defaultServerConfig.httpPort },
  ];
}
