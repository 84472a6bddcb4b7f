import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { FencingToken, TxnOp } from "./ports.js";

// Key space and limits of the change log. Keys are printable ASCII without spaces,
// so byte order, SQLite's BINARY collation and PostgreSQL's "C" collation agree,
// and a prefix range is [prefix, prefixEnd(prefix)) with an index behind it.

export const maxKeyBytes = 1024;
/** Same order as etcd's 1.5 MiB request limit; deployments and records are far smaller. */
export const maxValueBytes = 1024 * 1024;
/** etcd's default is 128; registrations arrive as one op per txn, batches come from group commit. */
export const maxOpsPerTxn = 1000;
const keyPattern = /^[\x21-\x7e]+$/;

/** Where each kind of state lives. Ids are validated by their services; these only place them. */
export const stateKeys = {
  instance: (instanceId: string) => `/registry/instances/${instanceId}`,
  instances: "/registry/instances/",
  deployment: (name: string) => `/deployments/${name}`,
  deployments: "/deployments/",
  rollout: (name: string) => `/rollouts/${name}`,
  rollouts: "/rollouts/",
  joinToken: (tokenHash: string) => `/identity/join-tokens/${tokenHash}`,
  joinTokens: "/identity/join-tokens/",
  certificate: (serial: string) => `/identity/certificates/${serial}`,
  certificates: "/identity/certificates/",
  /** Secondary index: one key per (SPIFFE ID, serial), so listing one identity's certificates is a range. */
  certificateBySpiffeId: (spiffeId: string, serial: string) => `${stateKeys.certificatesBySpiffeId(spiffeId)}${serial}`,
  certificatesBySpiffeId: (spiffeId: string) => `/identity/certificates-by-spiffe-id/${encodeURIComponent(spiffeId)}/`,
  revocation: (serial: string) => `/identity/revocations/${serial}`,
  revocations: "/identity/revocations/",
  /** Everything below is the orchestrator's cross-replica traffic (ADR 0009); one follower reads it all. */
  orchestrator: "/orchestrator/",
  /** A sidecar's Connect session, written by the replica holding the stream (ADR 0009). */
  sidecarSession: (sidecarId: string) => `${stateKeys.sidecarSessions}${encodeURIComponent(sidecarId)}`,
  sidecarSessions: "/orchestrator/sidecars/",
  /** A signed command for a sidecar whose stream `holder` holds; the holder sends it and deletes the key. */
  sidecarCommand: (holder: string, commandId: string) => `${stateKeys.sidecarCommands(holder)}${encodeURIComponent(commandId)}`,
  sidecarCommands: (holder: string) => `/orchestrator/commands/${encodeURIComponent(holder)}/`,
  /** A sidecar's answer to a command `leader` sent through another replica; the leader reads and deletes it. */
  sidecarCommandResult: (leader: string, commandId: string) => `${stateKeys.sidecarCommandResults(leader)}${encodeURIComponent(commandId)}`,
  sidecarCommandResults: (leader: string) => `/orchestrator/command-results/${encodeURIComponent(leader)}/`,
} as const;

export function isValidKey(key: string): boolean {
  return key.length > 0 && key.length <= maxKeyBytes && keyPattern.test(key);
}

/** The smallest string greater than every key starting with `prefix` (keys are ASCII up to `~`). */
export function prefixEnd(prefix: string): string {
  if (prefix === "") return "\x7f";
  return `${prefix.slice(0, -1)}${String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)}`;
}

export function validatePrefix(prefix: string): void {
  if (prefix !== "" && (prefix.length > maxKeyBytes || !keyPattern.test(prefix))) {
    throw new MeshError("invalidArgument", "key prefix must be printable ASCII without spaces");
  }
}

function validateRevision(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new MeshError("invalidArgument", `${name} must be a non-negative integer`);
}

/** Checks a transaction before it is queued, so one bad request never fails a group commit. */
export function validateTxn(ops: TxnOp[], fence: FencingToken | undefined): void {
  if (ops.length === 0 && fence === undefined) throw new MeshError("invalidArgument", "txn needs at least one op");
  if (ops.length > maxOpsPerTxn) throw new MeshError("invalidArgument", `txn has more than ${maxOpsPerTxn} ops`);
  const seen = new Set<string>();
  for (const op of ops) {
    if (!isValidKey(op.key)) throw new MeshError("invalidArgument", `key must be 1 to ${maxKeyBytes} printable ASCII characters without spaces`);
    if (seen.has(op.key)) throw new MeshError("invalidArgument", "txn names a key twice");
    seen.add(op.key);
    if (op.expectRevision !== undefined) validateRevision(op.expectRevision, "expectRevision");
    if (op.type === "put") {
      if (!(op.value instanceof Uint8Array)) throw new MeshError("invalidArgument", "value must be bytes");
      if (op.value.byteLength > maxValueBytes) throw new MeshError("invalidArgument", `value is larger than ${maxValueBytes} bytes`);
    } else if (op.type !== "delete") {
      throw new MeshError("invalidArgument", "op type must be put or delete");
    }
  }
  if (fence !== undefined) {
    if (!isValidKey(fence.name) || fence.name.length > 256) throw new MeshError("invalidArgument", "fence name must be 1 to 256 printable ASCII characters");
    if (!Number.isSafeInteger(fence.token) || fence.token < 1) throw new MeshError("invalidArgument", "fence token must be a positive integer");
  }
}

export function validateAfterRevision(afterRevision: number): void {
  validateRevision(afterRevision, "revision");
}
