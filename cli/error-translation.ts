import { existsSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { status } from "@grpc/grpc-js";

// The one file that knows how platform and library failures read: Node errno
// values and gRPC statuses (grpc-js folds socket and TLS errors into the text of an
// UNAVAILABLE status) become short phrases an operator can act on. connect-es keeps
// the same translation in one file (connect-node/src/node-error.ts); cli-error.ts
// is the converter that uses it.

const errnoPhrases: Record<string, string> = {
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOENT: "no such file or directory",
  ENOTDIR: "a part of the path is not a directory",
  EISDIR: "it is a directory",
  EEXIST: "it exists and is not a directory",
  EROFS: "read-only file system",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EMFILE: "too many open files",
  EADDRINUSE: "address already in use",
  EADDRNOTAVAIL: "address not available on this host",
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ETIMEDOUT: "timed out",
  ENOTFOUND: "host name not found",
  EAI_AGAIN: "host name lookup failed",
};

/** The errno code of a Node system error, or one named in a message (grpc-js reports bind failures as text). */
export function errnoOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && /^E[A-Z_]+$/.test(code)) return code;
  const message = error instanceof Error ? error.message : typeof error === "string" ? error : "";
  return /\b(?:listen|connect|bind|open|mkdir|access) (E[A-Z_]+)\b/.exec(message)?.[1];
}

export function errnoPhrase(code: string | undefined): string | undefined {
  return code === undefined ? undefined : errnoPhrases[code];
}

/** A socket a command listens on, named by the flags that set it. */
export interface ListenEndpoint {
  hostFlag: string;
  portFlag: string;
  host: string;
  port: number;
}

/** `cannot listen on 127.0.0.1:7420 (--port): address already in use; …`, or undefined when the error is not a listen failure. */
export function describeListenFailure(error: unknown, endpoints: readonly ListenEndpoint[]): string | undefined {
  const code = errnoOf(error);
  const message = error instanceof Error ? error.message : String(error);
  const isListen = (error as { syscall?: unknown }).syscall === "listen" || /\blisten E[A-Z]+|No address added/.test(message);
  if (!isListen || code === undefined) return undefined;
  const failedPort = (error as { port?: unknown }).port;
  const endpoint =
    endpoints.find((candidate) => failedPort === candidate.port || message.includes(`:${candidate.port}`) && candidate.port !== 0) ??
    (endpoints.length === 1 ? endpoints[0] : undefined);
  const address = endpoint ? `${endpoint.host}:${endpoint.port}` : (/(\S+:\d+)\]?$/.exec(message)?.[1] ?? "the address");
  const flag = endpoint ? ` (${endpoint.portFlag})` : "";
  const portFlag = endpoint?.portFlag ?? "port";
  switch (code) {
    case "EADDRINUSE":
      return `cannot listen on ${address}${flag}: address already in use; stop the process using it or choose another ${portFlag}`;
    case "EACCES":
      return `cannot listen on ${address}${flag}: permission denied; ports below 1024 need privileges, choose another ${portFlag}`;
    case "EADDRNOTAVAIL":
      return `cannot listen on ${address}${endpoint ? ` (${endpoint.hostFlag})` : ""}: address not available on this host; use one of its addresses, or 0.0.0.0`;
    default:
      return `cannot listen on ${address}${flag}: ${errnoPhrase(code) ?? code}`;
  }
}

/** `cannot read --alerts-config missing.yaml: no such file or directory`. */
export function describeFileFailure(error: unknown, flag: string, path: string): string | undefined {
  const code = errnoOf(error);
  if (code === undefined) return undefined;
  return `cannot read ${flag} ${path}: ${errnoPhrase(code) ?? code}`;
}

/**
 * A directory the process must write to (a data dir). Root ignores permission
 * bits, so the failures seen in practice are a file in the way, a read-only
 * mount and, for other users, EACCES.
 */
export function describeDirectoryFailure(error: unknown, flag: string, path: string): string | undefined {
  const code = errnoOf(error);
  if (code === undefined) return undefined;
  const fix = `; choose a writable ${flag}`;
  if (code === "ENOTDIR" || code === "EEXIST") {
    const blocking = firstNonDirectory(path);
    if (blocking !== undefined) return `cannot use ${flag} ${path}: ${blocking === path ? "it is" : `${blocking} is`} a file, not a directory${fix}`;
  }
  return `cannot use ${flag} ${path}: ${errnoPhrase(code) ?? code}${fix}`;
}

/** The path itself or its nearest existing ancestor, when that is not a directory. */
function firstNonDirectory(path: string): string | undefined {
  for (let current = path; ; current = dirname(current)) {
    if (existsSync(current)) return statSync(current).isDirectory() ? undefined : current;
    if (dirname(current) === current) return undefined;
  }
}

/** How ctl reached (or tried to reach) the server, for messages that say what to change. */
export interface RpcTarget {
  address: string;
  plaintext: boolean;
  /** Who dials: the fixes differ (ctl's --plaintext is the sidecar's --insecure-dev). */
  role: "ctl" | "sidecar";
  /** Where the admin credentials came from, e.g. `/home/me/.config/agentmesh/admin (the per-user default)`. */
  credentials?: string | undefined;
  /** The deadline ctl gave the call. */
  timeoutMs?: number | undefined;
  /** Set after a plaintext call failed: whether the address answers a TLS handshake. */
  serverSpeaksTls?: boolean | undefined;
}

const untrustedServer = /self[- ]signed certificate|unable to (?:verify|get local issuer)|certificate signature failure|unknown ca/i;

/** A gRPC status as one line. grpc-js puts socket and TLS failures into UNAVAILABLE's text; they are told apart here. */
export function describeRpcFailure(code: number, details: string, target: RpcTarget): string {
  const used = target.credentials ? `; credentials used: ${target.credentials}` : "";
  if (code === status.UNAVAILABLE) {
    if (/ECONNREFUSED/.test(details)) {
      return `no agentmesh server at ${target.address} (connection refused): start one with 'agentmesh server', or point --server at it`;
    }
    if (/Name resolution failed|ENOTFOUND|EAI_AGAIN/.test(details)) {
      return `cannot resolve the host of --server ${target.address}: check the name, or use an IP address`;
    }
    if (/wrong version number|WRONG_VERSION_NUMBER|packet length too long/i.test(details)) {
      const fix = target.role === "ctl" ? "add --plaintext" : "add --insecure-dev, or point --server at a server with mTLS";
      return `the server at ${target.address} speaks plaintext (it runs with --insecure-dev): ${fix}`;
    }
    if (untrustedServer.test(details)) {
      const fix =
        target.role === "ctl"
          ? "run 'agentmesh ctl init-admin' against this server's --data-dir"
          : "--ca-cert must be this mesh's CA (ca.pem written by 'agentmesh ctl init-admin')";
      const by = target.credentials ? `the CA of ${target.credentials}` : "the given CA";
      return `the server at ${target.address} presents a certificate ${by} did not sign: ${fix}`;
    }
    if (/certificate has expired|CERT_HAS_EXPIRED/i.test(details)) {
      return `the server at ${target.address} presented an expired certificate${used}`;
    }
    if (target.plaintext && target.serverSpeaksTls) {
      return target.role === "ctl"
        ? `the server at ${target.address} requires mTLS: drop --plaintext (ctl then uses the admin credentials from 'agentmesh ctl init-admin')`
        : `the server at ${target.address} requires mTLS: drop --insecure-dev and join with --join-token and --ca-cert`;
    }
    const socket = /\b(ECONNRESET|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT)\b/.exec(details)?.[1];
    if (socket) return `cannot reach the agentmesh server at ${target.address}: ${errnoPhrase(socket)}`;
  }
  if (code === status.DEADLINE_EXCEEDED && /^Deadline exceeded after/.test(details)) {
    const seconds = target.timeoutMs === undefined ? "" : ` within ${Math.round(target.timeoutMs / 1000)} s`;
    return `the server at ${target.address} did not answer${seconds} (DEADLINE_EXCEEDED)`;
  }
  const line = `${firstLine(details)} (${status[code] ?? code})`;
  if (code === status.UNAUTHENTICATED || code === status.PERMISSION_DENIED) return `${line}${used}`;
  return line;
}

/** grpc-js details may carry an OpenSSL dump over several lines; the operator needs the first. */
export function firstLine(text: string): string {
  return (text.split("\n").find((line) => line.trim() !== "") ?? text).trim();
}
