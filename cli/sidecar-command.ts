import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import type { Command } from "commander";
import { parseDeploymentYaml } from "../services/orchestrator/deployment-yaml.js";
import { createLogger } from "../services/server/logger.js";
import type { LocalAgentSpec, SidecarConfig } from "../sidecar/config.js";
import { defaultSidecarConfig } from "../sidecar/config.js";
import { Sidecar, specFromStart } from "../sidecar/sidecar.js";
import { sidecarBanner } from "./banner.js";
import { CliError, inContext } from "./cli-error.js";
import type { ListenEndpoint } from "./error-translation.js";
import { envOption, isDebugLevel, logLevelOption, normalizeServerAddress, parseInteger } from "./options.js";
import { exitOnSignal } from "./shutdown.js";
import { ensureWritableDirectory } from "./writable-directory.js";

const EXIT_DEADLINE_MS = 15_000;

/** Agents of one --manifest file (the deployment YAML format; `replicas` local instances each, unmanaged). */
function agentsFromManifestText(text: string): LocalAgentSpec[] {
  const specs: LocalAgentSpec[] = [];
  for (const deployment of parseDeploymentYaml(text)) {
    const spec = specFromStart({ deployment: "", instanceId: "", manifest: deployment.manifest, process: deployment.process, restartPolicy: deployment.restartPolicy });
    for (let replica = 0; replica < Math.max(1, deployment.replicas); replica += 1) specs.push({ ...spec, instanceId: undefined });
  }
  return specs;
}

export function addSidecarCommand(program: Command): void {
  const defaults = defaultSidecarConfig;
  program
    .command("sidecar")
    .description("run beside agents: identity, supervision, signed data plane")
    .addOption(envOption("--server <address...>", "AGENTMESH_SERVER", "control-plane address host[:port], port 7420 when omitted; for replicas give several (repeated, or a,b): the sidecar uses the first that answers and moves to the next when it loses it", ["127.0.0.1:7420"] as never))
    .addOption(envOption("--host <name>", "AGENTMESH_HOST_NAME", "this host's name: the identity is spiffe://<td>/sidecar/<host>", hostname()))
    .addOption(envOption("--trust-domain <domain>", "AGENTMESH_TRUST_DOMAIN", "SPIFFE trust domain", defaults.trustDomain))
    .addOption(envOption("--join-token <token>", "AGENTMESH_JOIN_TOKEN", "one-time token from 'ctl join-token'"))
    .addOption(envOption("--ca-cert <file>", "AGENTMESH_CA_CERT", "mesh CA certificate (trust bundle) PEM"))
    .addOption(envOption("--cert <file>", "AGENTMESH_CERT", "existing sidecar certificate PEM (instead of a join token)"))
    .addOption(envOption("--key <file>", "AGENTMESH_KEY", "its private key PEM"))
    .addOption(envOption("--manifest <file...>", "AGENTMESH_MANIFEST", "agents to run here (deployment YAML format; unmanaged)"))
    .addOption(envOption("--capacity <n>", "AGENTMESH_CAPACITY", "managed agents the orchestrator may place here", "0").argParser(parseInteger("--capacity", 0, 10_000)))
    .addOption(envOption("--inbound-host <host>", "AGENTMESH_INBOUND_HOST", "bind address of the mTLS inbound port", defaults.inboundHost))
    .addOption(envOption("--inbound-port <port>", "AGENTMESH_INBOUND_PORT", "mTLS port other sidecars call", String(defaults.inboundPort)).argParser(parseInteger("--inbound-port", 0, 65535)))
    .addOption(envOption("--advertise-address <host:port>", "AGENTMESH_ADVERTISE_ADDRESS", "address other sidecars dial (default: inbound host:port)"))
    .addOption(envOption("--local-port <port>", "AGENTMESH_LOCAL_PORT", "plaintext port on 127.0.0.1 for local agents", String(defaults.localPort)).argParser(parseInteger("--local-port", 0, 65535)))
    .addOption(envOption("--http-host <host>", "AGENTMESH_SIDECAR_HTTP_HOST", "bind address of the HTTP port", defaults.httpHost))
    .addOption(envOption("--http-port <port>", "AGENTMESH_SIDECAR_HTTP_PORT", "HTTP port for /metrics, /healthz, /readyz (0 = ephemeral)", String(defaults.httpPort)).argParser(parseInteger("--http-port", 0, 65535)))
    .addOption(envOption("--data-dir <dir>", "AGENTMESH_SIDECAR_DATA_DIR", "the sidecar's certificate (kept across restarts) and audit log", defaults.dataDir))
    .addOption(envOption("--default-deny", "AGENTMESH_DEFAULT_DENY", "refuse invocations no --allow rule permits"))
    .addOption(envOption("--allow <rule...>", "AGENTMESH_ALLOW", "<spiffe-id glob>=<capability glob>, e.g. spiffe://agentmesh.local/sidecar/*=text.*"))
    .addOption(envOption("--sign-calls <capability...>", "AGENTMESH_SIGN_CALLS", "capabilities whose calls are signed one by one (audited) instead of MACed on the tunnel"))
    .addOption(envOption("--insecure-dev", "AGENTMESH_INSECURE_DEV", "plaintext and unsigned, loopback only (development)"))
    .addOption(logLevelOption())
    .action(async (options: Record<string, unknown>) => {
      const list = (value: unknown): string[] => (Array.isArray(value) ? value.map(String) : typeof value === "string" ? value.split(",") : []);
      const manifests = list(options.manifest);
      const config: SidecarConfig = {
        ...defaults,
        servers: list(options.server).flatMap((server) => server.split(",")).map((server) => normalizeServerAddress(server)),
        host: String(options.host),
        trustDomain: String(options.trustDomain),
        joinToken: options.joinToken as string | undefined,
        caCertFile: options.caCert as string | undefined,
        certFile: options.cert as string | undefined,
        keyFile: options.key as string | undefined,
        insecureDev: Boolean(options.insecureDev),
        signedCapabilities: list(options.signCalls).filter((name) => name !== ""),
        inboundHost: String(options.inboundHost),
        inboundPort: Number(options.inboundPort),
        advertiseAddress: options.advertiseAddress as string | undefined,
        localPort: Number(options.localPort),
        httpHost: String(options.httpHost),
        httpPort: Number(options.httpPort),
        capacity: Number(options.capacity),
        dataDir: String(options.dataDir),
        agents: [],
        defaultDeny: Boolean(options.defaultDeny),
        allowRules: list(options.allow),
      };
      if (config.insecureDev && config.inboundHost !== "127.0.0.1") config.inboundHost = "127.0.0.1";
      const log = createLogger(String(options.logLevel));
      let sidecar: Sidecar;
      try {
        for (const path of manifests) config.agents.push(...(await agentsFromManifest(path)));
        await inContext({ kind: "directory", flag: "--data-dir", path: config.dataDir }, () => ensureWritableDirectory(config.dataDir));
        sidecar = await inContext(
          [
            { kind: "listen", endpoints: sidecarEndpoints(config) },
            { kind: "rpc", target: { address: config.servers[0] ?? "", plaintext: config.insecureDev, role: "sidecar", credentials: sidecarCredentials(config) } },
          ],
          () => Sidecar.start(config, log),
        );
      } catch (error) {
        const failure = CliError.from(error);
        log.error({ problem: failure.message, ...(isDebugLevel(options.logLevel) ? { err: error } : {}) }, "cannot start sidecar");
        throw failure;
      }
      // Machine-readable line for scripts and tests that use port 0.
      log.info({ inboundAddress: sidecar.inboundAddress, inboundBound: sidecar.inboundBindAddress, localAddress: sidecar.localAddress, httpAddress: sidecar.httpAddress, spiffeId: sidecar.spiffeId }, "sidecar listening");
      if (process.stderr.isTTY) {
        process.stderr.write(
          sidecarBanner({
            spiffeId: sidecar.spiffeId,
            mtls: !config.insecureDev,
            inboundBound: sidecar.inboundBindAddress,
            inboundAdvertised: sidecar.inboundAddress,
            localAddress: sidecar.localAddress,
            dataDir: config.dataDir,
            agents: config.agents.length,
            capacity: config.capacity,
          }),
        );
      }
      exitOnSignal(log, () => sidecar.close(), EXIT_DEADLINE_MS);
    });
}

/** Agents from one --manifest file, the file named in any failure. */
async function agentsFromManifest(path: string): Promise<LocalAgentSpec[]> {
  const text = await inContext({ kind: "readFile", flag: "--manifest", path }, () => readFile(path, "utf8"));
  try {
    return agentsFromManifestText(text);
  } catch (error) {
    throw CliError.failed(`--manifest ${path}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
}

function sidecarEndpoints(config: SidecarConfig): ListenEndpoint[] {
  return [
    { hostFlag: "--inbound-host", portFlag: "--inbound-port", host: config.inboundHost, port: config.inboundPort },
    { hostFlag: "--local-port", portFlag: "--local-port", host: "127.0.0.1", port: config.localPort },
    { hostFlag: "--http-host", portFlag: "--http-port", host: config.httpHost, port: config.httpPort },
  ];
}

function sidecarCredentials(config: SidecarConfig): string | undefined {
  if (config.insecureDev) return undefined;
  if (config.certFile) return `--cert ${config.certFile}, --key ${config.keyFile ?? "(missing)"}, --ca-cert ${config.caCertFile ?? "(missing)"}`;
  return `--join-token, --ca-cert ${config.caCertFile ?? "(missing)"}`;
}
