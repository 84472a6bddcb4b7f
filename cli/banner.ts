import { homedir } from "node:os";
import { basename, relative } from "node:path";
import { credentialsDirEnv, defaultCredentialsDir } from "./credentials.js";

/**
 * How the operator runs this CLI, for commands the banner suggests:
 * `agentmesh` when installed, `node bin/agentmesh.js` from a checkout.
 */
export function invocation(script = process.argv[1] ?? "agentmesh", cwd = process.cwd()): string {
  if (basename(script) === "agentmesh") return "agentmesh";
  const path = relative(cwd, script);
  return `node ${path.startsWith("..") ? script : path}`;
}

export interface ServerBannerInput {
  grpcAddress: string;
  httpAddress: string;
  mtls: boolean;
  /** As given on the command line (relative stays relative: the operator runs the next command from here). */
  dataDir: string;
  dataDirIsDefault: boolean;
  defaultPort: boolean;
  cli: string;
  env?: NodeJS.ProcessEnv;
}

/** `~/…` for paths under the home directory, so the banner stays short. */
function tildify(path: string): string {
  const home = homedir();
  return path === home || path.startsWith(`${home}/`) ? `~${path.slice(home.length)}` : path;
}

/**
 * The short human summary `agentmesh server` prints on stderr when it is a
 * terminal: where it listens, where its state is, how to get admin credentials
 * and what to run next. Logs stay JSON on stdout either way.
 */
export function serverBanner(input: ServerBannerInput): string {
  const env = input.env ?? process.env;
  const server = input.defaultPort ? "" : ` --server ${input.grpcAddress}`;
  const credentialsDir = env[credentialsDirEnv] ?? tildify(defaultCredentialsDir(env));
  const lines = input.mtls
    ? [
        "agentmesh server is running (mTLS)",
        `  gRPC      ${input.grpcAddress}`,
        `  metrics   http://${input.httpAddress}/metrics   (/healthz, /readyz)`,
        `  data dir  ${input.dataDir}   (CA, audit log)`,
        `  admin     ${input.cli} ctl init-admin${input.dataDirIsDefault ? "" : ` --data-dir ${input.dataDir}`}`,
        `            writes admin credentials to ${credentialsDir}, where ctl finds them`,
        `  next      ${input.cli} ctl${server} agents`,
      ]
    : [
        "agentmesh server is running (INSECURE DEV MODE: plaintext, no authentication, 127.0.0.1 only)",
        `  gRPC      ${input.grpcAddress}`,
        `  metrics   http://${input.httpAddress}/metrics   (/healthz, /readyz)`,
        `  data dir  ${input.dataDir}   (CA, audit log)`,
        "  admin     no credentials needed: pass --plaintext to ctl",
        `  next      ${input.cli} ctl --plaintext${server} agents`,
      ];
  return `${[...lines, "JSON logs follow on stdout. Ctrl-C stops the server."].join("\n")}\n`;
}

export interface SidecarBannerInput {
  spiffeId: string;
  mtls: boolean;
  /** What the inbound port is bound to (the real port, also with --inbound-port 0). */
  inboundBound: string;
  /** What other sidecars dial. */
  inboundAdvertised: string;
  localAddress: string;
  dataDir: string;
  agents: number;
  capacity: number;
}

/** The sidecar's counterpart of {@link serverBanner}: the addresses it really bound, on stderr when it is a terminal. */
export function sidecarBanner(input: SidecarBannerInput): string {
  const advertised = input.inboundAdvertised === input.inboundBound ? "" : `   (other sidecars dial ${input.inboundAdvertised})`;
  const lines = [
    input.mtls ? `agentmesh sidecar is running (mTLS) as ${input.spiffeId}` : "agentmesh sidecar is running (INSECURE DEV MODE: plaintext, unsigned, 127.0.0.1 only)",
    `  inbound   ${input.inboundBound}${advertised}`,
    `  local     ${input.localAddress}   (AGENTMESH_SIDECAR_ADDR for agents)`,
    `  data dir  ${input.dataDir}   (${input.mtls ? "certificate, " : ""}audit log)`,
    `  agents    ${input.agents} from --manifest, capacity ${input.capacity} for the orchestrator`,
  ];
  return `${[...lines, "JSON logs follow on stdout. Ctrl-C stops the sidecar."].join("\n")}\n`;
}
