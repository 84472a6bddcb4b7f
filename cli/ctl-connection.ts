import { existsSync } from "node:fs";
import { join } from "node:path";
import { type ChannelCredentials, type ServiceError, credentials, status } from "@grpc/grpc-js";
import type { Command } from "commander";
import { MeshIdentity } from "../sdk/ts/src/client/mesh-identity.js";
import { envOption } from "./options.js";

export interface ConnectionOptions {
  server: string;
  output: "table" | "json";
  credentialsDir: string;
  caCert?: string;
  cert?: string;
  key?: string;
  plaintext?: boolean;
}

export const adminFiles = { cert: "admin-cert.pem", key: "admin-key.pem", ca: "ca.pem" } as const;

export function addConnectionOptions(command: Command): Command {
  return command
    .addOption(envOption("--server <address>", "AGENTMESH_SERVER", "control-plane address host:port", "127.0.0.1:7420"))
    .addOption(envOption("-o, --output <format>", "AGENTMESH_OUTPUT", "table | json", "table"))
    .addOption(envOption("--credentials-dir <dir>", "AGENTMESH_CREDENTIALS_DIR", "where ctl init-admin wrote admin-cert.pem, admin-key.pem, ca.pem", join(".agentmesh", "admin")))
    .addOption(envOption("--ca-cert <file>", "AGENTMESH_CA_CERT", "trust bundle PEM (overrides the credentials dir)"))
    .addOption(envOption("--cert <file>", "AGENTMESH_CERT", "client certificate PEM (overrides the credentials dir)"))
    .addOption(envOption("--key <file>", "AGENTMESH_KEY", "client private key PEM (overrides the credentials dir)"))
    .addOption(envOption("--plaintext", "AGENTMESH_PLAINTEXT", "talk plaintext to a server in --insecure-dev mode"));
}

/** mTLS with the admin credentials (flags, or the credentials dir); plaintext only when asked. */
export async function channelCredentials(options: ConnectionOptions): Promise<{ credentials: ChannelCredentials; identity?: MeshIdentity }> {
  if (options.plaintext) return { credentials: credentials.createInsecure() };
  const files = {
    certFile: options.cert ?? join(options.credentialsDir, adminFiles.cert),
    keyFile: options.key ?? join(options.credentialsDir, adminFiles.key),
    caFile: options.caCert ?? join(options.credentialsDir, adminFiles.ca),
  };
  const missing = Object.values(files).filter((file) => !existsSync(file));
  if (missing.length > 0) {
    throw new Error(`no credentials (${missing.join(", ")} missing): run 'agentmesh ctl init-admin' on the server host, or pass --plaintext for a dev server`);
  }
  const identity = await MeshIdentity.fromFiles(files);
  return { credentials: identity.channelCredentials(), identity };
}

/** One line for the operator, naming the gRPC status; never a stack trace. */
export function describeRpcError(error: unknown): string {
  const serviceError = error as Partial<ServiceError>;
  if (typeof serviceError.code === "number") {
    return `error: ${serviceError.details ?? serviceError.message} (${statusName(serviceError.code)})`;
  }
  return `error: ${error instanceof Error ? error.message : String(error)}`;
}

function statusName(code: number): string {
  return status[code] ?? String(code);
}
