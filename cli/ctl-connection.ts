import { readFileSync } from "node:fs";
import { type ChannelCredentials, type ServiceError, credentials } from "@grpc/grpc-js";
import type { Command } from "commander";
import { envOption } from "./options.js";

export interface ConnectionOptions {
  server: string;
  output: "table" | "json";
  caCert?: string;
  cert?: string;
  key?: string;
}

export function addConnectionOptions(command: Command): Command {
  return command
    .addOption(envOption("--server <address>", "AGENTMESH_SERVER", "control-plane address host:port", "127.0.0.1:7420"))
    .addOption(envOption("-o, --output <format>", "AGENTMESH_OUTPUT", "table | json", "table"))
    .addOption(envOption("--ca-cert <file>", "AGENTMESH_CA_CERT", "trust bundle PEM (mTLS)"))
    .addOption(envOption("--cert <file>", "AGENTMESH_CERT", "client certificate PEM (mTLS)"))
    .addOption(envOption("--key <file>", "AGENTMESH_KEY", "client private key PEM (mTLS)"));
}

/** mTLS when certificate files are given; plaintext for a dev-mode server otherwise. */
export function channelCredentials(options: ConnectionOptions): ChannelCredentials {
  if (options.cert && options.key && options.caCert) {
    return credentials.createSsl(readFileSync(options.caCert), readFileSync(options.key), readFileSync(options.cert));
  }
  return credentials.createInsecure();
}

/** One line for the operator, naming the gRPC status; never a stack trace. */
export function describeRpcError(error: unknown): string {
  const serviceError = error as Partial<ServiceError>;
  if (typeof serviceError.code === "number") {
    return `error: ${serviceError.details ?? serviceError.message} (${statusName(serviceError.code)})`;
  }
  return `error: ${error instanceof Error ? error.message : String(error)}`;
}

const statusNames = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

function statusName(code: number): string {
  return statusNames[code] ?? String(code);
}
