import { existsSync } from "node:fs";
import { connect as tlsConnect } from "node:tls";
import { join } from "node:path";
import { Channel, type ChannelCredentials, type ChannelOptions, connectivityState, credentials } from "@grpc/grpc-js";
import type { Command } from "commander";
import { MeshIdentity } from "../sdk/ts/src/client/mesh-identity.js";
import { CliError } from "./cli-error.js";
import { adminFiles, credentialsDirEnv, describeCredentialsDir, legacyCredentialsHint, resolveCredentialsDir } from "./credentials.js";
import { envOption, logLevelOption, normalizeServerAddress } from "./options.js";

export interface ConnectionOptions {
  /** One address, or several replicas' (the first that answers is used). */
  server: string | string[];
  output: "table" | "json";
  credentialsDir?: string;
  caCert?: string;
  cert?: string;
  key?: string;
  plaintext?: boolean;
  logLevel?: string;
}

/** How ctl talks to the server: the address, and either plaintext or the admin identity (and where it came from). */
export interface Connection {
  /** The address calls go to: the first of `addresses` until ctlAction finds the first that answers. */
  address: string;
  addresses: string[];
  plaintext: boolean;
  credentials: ChannelCredentials;
  /** Where the admin credentials came from, for failure messages; undefined in plaintext. */
  credentialsDescription?: string;
  identity?: MeshIdentity;
}

/** `--server a --server b,c` → [a, b, c]; the default (a string, not yet parsed) is replaced, not added to. */
function collectServerAddresses(value: string, previous: string | string[]): string[] {
  return [...(Array.isArray(previous) ? previous : []), ...value.split(",").map(normalizeServerAddress)];
}

/** The addresses in ConnectionOptions.server, normalized (programs pass one string). */
export function serverAddresses(options: Pick<ConnectionOptions, "server">): string[] {
  const given = (Array.isArray(options.server) ? options.server : [options.server]).flatMap((server) => server.split(","));
  return given.map(normalizeServerAddress);
}

export function addConnectionOptions(command: Command): Command {
  return command
    .addOption(
      envOption(
        "--server <address>",
        "AGENTMESH_SERVER",
        "control-plane address host[:port] (port 7420 when omitted); for replicas repeat it or give a,b: ctl uses the first that answers",
        "127.0.0.1:7420",
      ).argParser(collectServerAddresses),
    )
    .addOption(envOption("-o, --output <format>", "AGENTMESH_OUTPUT", "table | json", "table").choices(["table", "json"]))
    .addOption(
      envOption(
        "--credentials-dir <dir>",
        credentialsDirEnv,
        "admin credentials (admin-cert.pem, admin-key.pem, ca.pem); default $XDG_CONFIG_HOME/agentmesh/admin or ~/.config/agentmesh/admin",
      ),
    )
    .addOption(envOption("--ca-cert <file>", "AGENTMESH_CA_CERT", "trust bundle PEM (overrides the credentials dir)"))
    .addOption(envOption("--cert <file>", "AGENTMESH_CERT", "client certificate PEM (overrides the credentials dir)"))
    .addOption(envOption("--key <file>", "AGENTMESH_KEY", "client private key PEM (overrides the credentials dir)"))
    .addOption(envOption("--plaintext", "AGENTMESH_PLAINTEXT", "talk plaintext to a server in --insecure-dev mode"))
    .addOption(logLevelOption());
}

/**
 * The connection a ctl command uses: plaintext when asked, otherwise mTLS with
 * the admin credentials, looked up as kubectl finds its config: --cert/--key/--ca-cert,
 * then --credentials-dir, then AGENTMESH_CREDENTIALS_DIR, then the per-user default.
 */
export function openConnection(command: Command): Promise<Connection> {
  const options = command.optsWithGlobals() as ConnectionOptions;
  return connectionFor(options, command.getOptionValueSourceWithGlobals("credentialsDir"));
}

/**
 * The same for programs (benches, the demo): `credentialsSource` is commander's
 * source of `credentialsDir` ("cli", "env"), so that messages say where it came from.
 */
export async function connectionFor(options: ConnectionOptions, credentialsSource: string | undefined = "cli"): Promise<Connection> {
  const addresses = serverAddresses(options);
  const address = addresses[0] as string;
  if (options.plaintext) return { address, addresses, plaintext: true, credentials: credentials.createInsecure() };
  const location = resolveCredentialsDir(options.credentialsDir, credentialsSource);
  const files = {
    certFile: options.cert ?? join(location.dir, adminFiles.cert),
    keyFile: options.key ?? join(location.dir, adminFiles.key),
    caFile: options.caCert ?? join(location.dir, adminFiles.ca),
  };
  const fromDir = options.cert === undefined || options.key === undefined || options.caCert === undefined;
  const flagged = [
    ["--cert", options.cert],
    ["--key", options.key],
    ["--ca-cert", options.caCert],
  ].flatMap(([flag, file]) => (file === undefined ? [] : [`${flag} ${file}`]));
  const description = [...(fromDir ? [describeCredentialsDir(location)] : []), ...flagged].join(", ");
  const missing = Object.values(files).filter((file) => !existsSync(file));
  if (missing.length === 3 && fromDir) {
    throw CliError.failed(
      `no admin credentials in ${description}: run 'agentmesh ctl init-admin' on the server host, pass --credentials-dir, or --plaintext for an --insecure-dev server${legacyCredentialsHint()}`,
    );
  }
  if (missing.length > 0) throw CliError.failed(`incomplete admin credentials: ${missing.join(", ")} missing (credentials: ${description})`);
  let identity: MeshIdentity;
  try {
    identity = await MeshIdentity.fromFiles(files);
  } catch (error) {
    throw CliError.failed(`cannot load the admin credentials ${description}: ${error instanceof Error ? error.message : String(error)}`, error);
  }
  const expiresAtMs = identity.source.current?.expiresAtMs ?? 0;
  if (expiresAtMs <= Date.now()) {
    identity.close();
    throw CliError.failed(`the admin certificate in ${description} expired at ${new Date(expiresAtMs).toISOString()}: run 'agentmesh ctl init-admin' for a new one`);
  }
  return { address, addresses, plaintext: false, credentials: identity.channelCredentials(), credentialsDescription: description, identity };
}

/** mTLS with the admin credentials, or plaintext when asked (benches and the demo dial with it). */
export async function channelCredentials(options: ConnectionOptions): Promise<{ credentials: ChannelCredentials; identity?: MeshIdentity }> {
  const connection = await connectionFor(options);
  return { credentials: connection.credentials, identity: connection.identity };
}

/**
 * Of several replicas, the first whose connection comes up (TLS included), trying
 * them in order; a refused or failed connection moves on at once, a silent one after
 * `timeoutMs`. Answers the first address when none comes up, so the call fails there
 * with the usual message. One address is answered without a probe.
 */
export async function firstReachable(connection: Connection, channelOptions: ChannelOptions, timeoutMs = 3000): Promise<string> {
  if (connection.addresses.length < 2) return connection.address;
  for (const address of connection.addresses) {
    if (await connects(address, connection.credentials, channelOptions, timeoutMs)) return address;
  }
  return connection.address;
}

function connects(address: string, channelCredentials: ChannelCredentials, channelOptions: ChannelOptions, timeoutMs: number): Promise<boolean> {
  const channel = new Channel(address, channelCredentials, channelOptions);
  const deadline = Date.now() + timeoutMs;
  return new Promise<boolean>((resolve) => {
    const check = (): void => {
      const state = channel.getConnectivityState(true);
      if (state === connectivityState.READY) return resolve(true);
      if (state === connectivityState.TRANSIENT_FAILURE || state === connectivityState.SHUTDOWN) return resolve(false);
      channel.watchConnectivityState(state, deadline, (error) => (error ? resolve(false) : check()));
    };
    check();
  }).finally(() => channel.close());
}

/**
 * Whether `address` answers a TLS handshake. Asked only after a plaintext call
 * failed, so that ctl can say "the server requires mTLS" instead of grpc-js'
 * "Failed to connect".
 */
export function probeTls(address: string, timeoutMs = 2000): Promise<boolean> {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!match) return Promise.resolve(false);
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: match[1], port: Number(match[2]), rejectUnauthorized: false, ALPNProtocols: ["h2"], servername: "agentmesh-server" });
    const done = (speaksTls: boolean) => {
      socket.destroy();
      resolve(speaksTls);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("secureConnect", () => done(true));
    // An alert from the server (it wants a client certificate, say) is TLS too.
    socket.once("error", (error: NodeJS.ErrnoException) => done(/^ERR_SSL_/.test(error.code ?? "") && error.code !== "ERR_SSL_WRONG_VERSION_NUMBER"));
  });
}
