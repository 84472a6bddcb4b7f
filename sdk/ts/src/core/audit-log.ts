// Audit log format (what `agentmesh ctl audit verify` and any outside tool check):
//
// - One JSON object per line, UTF-8, "\n"-terminated, written as canonicalJson.
// - Fields: seq (1, 2, 3, ... with no gaps), time (ISO 8601 UTC), actor (SPIFFE ID),
//   action, target, outcome (success | denied | failure), requestId, details
//   (optional object), prevHash, hash.
// - hash = lower-case hex SHA-256 of canonicalJson(entry without `hash`), where
//   canonicalJson sorts object keys at every depth and adds no whitespace (RFC 8785
//   for the values an entry holds).
// - prevHash = the previous line's hash; the first line's is 64 zeros.
// Editing a line breaks its hash; removing or reordering lines breaks seq/prevHash
// at the first line that no longer follows. Cutting lines off the end leaves a valid
// shorter chain, so `head` (last seq and hash) should be anchored elsewhere.
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import type { Clock } from "./clock.js";
import { MeshError } from "./mesh-error.js";

export type AuditOutcome = "success" | "denied" | "failure";

/** What a component reports; the audit log adds seq, time and the hash chain. */
export interface AuditEvent {
  /** SPIFFE ID of who acted (the mTLS peer), or `system` for the server itself. */
  actor: string;
  /** Dotted verb, for example `agent.register`, `cert.issue`, `call.denied`. */
  action: string;
  /** What was acted on: an instance id, a SPIFFE ID, a serial, an RPC method. */
  target: string;
  outcome: AuditOutcome;
  requestId: string;
  /** JSON values only; never keys, tokens or payloads. */
  details?: Record<string, unknown>;
}

export interface AuditSink {
  /** Resolves once the event is written (per the sink's durability policy). */
  append(event: AuditEvent): Promise<void>;
}

/** prevHash of the first entry. */
export const genesisHash = "0".repeat(64);

/** One line of the audit log. */
export interface AuditEntry extends AuditEvent {
  /** 1 for the first entry, then +1 per line. */
  seq: number;
  /** ISO 8601 UTC. */
  time: string;
  /** `hash` of the previous entry, genesisHash for the first. */
  prevHash: string;
  /** SHA-256 hex of canonicalJson(entry without `hash`). */
  hash: string;
}

/**
 * JSON with object keys sorted (by UTF-16 code units) at every depth and no
 * whitespace; for the strings, integers, booleans, nulls, arrays and objects an
 * entry holds this is RFC 8785 (JCS). Undefined members are dropped.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new MeshError("invalidArgument", "audit values must be finite numbers");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((item) => (item === undefined ? "null" : canonicalJson(item))).join(",")}]`;
  if (typeof value === "object") {
    const members = Object.keys(value)
      .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`);
    return `{${members.join(",")}}`;
  }
  throw new MeshError("invalidArgument", "audit values must be JSON");
}

/** The chain rule: SHA-256 hex over the canonical JSON of every field but `hash`. */
export function auditEntryHash(entry: Omit<AuditEntry, "hash"> & { hash?: string }): string {
  const { hash: _ignored, ...rest } = entry;
  return createHash("sha256").update(canonicalJson(rest), "utf8").digest("hex");
}

/**
 * `write`: each batch goes to the OS before its appends resolve (survives a crash
 * of this process). `fsync`: also fdatasync per batch (survives power loss).
 */
export type AuditDurability = "write" | "fsync";

export interface OpenAuditLogOptions {
  path: string;
  clock: Clock;
  durability?: AuditDurability;
}

interface Pending {
  line: string;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Reads backwards from the end until one complete line is found. Entries are small,
 * so this touches a few KiB however long the log is.
 */
async function readLastLine(handle: FileHandle, sizeBytes: number): Promise<string | undefined> {
  if (sizeBytes === 0) return undefined;
  const chunkBytes = 64 * 1024;
  let end = sizeBytes;
  let tail = Buffer.alloc(0);
  const last = Buffer.alloc(1);
  await handle.read(last, 0, 1, sizeBytes - 1);
  if (last[0] !== 0x0a) throw new MeshError("failedPrecondition", "audit log ends in a partial line; run audit verify");
  while (end > 0) {
    const start = Math.max(0, end - chunkBytes);
    const chunk = Buffer.alloc(end - start);
    await handle.read(chunk, 0, chunk.length, start);
    tail = Buffer.concat([chunk, tail]);
    end = start;
    const newline = tail.lastIndexOf(0x0a, tail.length - 2);
    if (newline !== -1) return tail.subarray(newline + 1, tail.length - 1).toString("utf8");
  }
  return tail.subarray(0, tail.length - 1).toString("utf8");
}

/**
 * Append-only, hash-chained JSON-lines audit log. Sequence numbers and hashes are
 * assigned in call order; lines are written in batches by one writer at a time,
 * so a burst of appends costs one write (and at most one fsync).
 */
export class FileAuditLog implements AuditSink {
  private pending: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private failure: unknown;
  private closed = false;

  private constructor(
    private readonly handle: FileHandle,
    private readonly clock: Clock,
    private readonly durability: AuditDurability,
    private lastSeq: number,
    private lastHash: string,
  ) {}

  /** Opens (creating if needed) and continues the chain from the file's last entry. */
  static async open(options: OpenAuditLogOptions): Promise<FileAuditLog> {
    const handle = await open(options.path, "a+", 0o600);
    try {
      const { size } = await handle.stat();
      const lastLine = await readLastLine(handle, size);
      let lastSeq = 0;
      let lastHash = genesisHash;
      if (lastLine !== undefined) {
        const entry = parseEntry(lastLine);
        if (!entry || auditEntryHash(entry) !== entry.hash) {
          throw new MeshError("failedPrecondition", "audit log last entry is corrupt; run audit verify");
        }
        lastSeq = entry.seq;
        lastHash = entry.hash;
      }
      return new FileAuditLog(handle, options.clock, options.durability ?? "write", lastSeq, lastHash);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  /** Sequence number and hash of the newest entry: anchor them elsewhere to detect truncation. */
  get head(): { seq: number; hash: string } {
    return { seq: this.lastSeq, hash: this.lastHash };
  }

  append(event: AuditEvent): Promise<void> {
    try {
      return this.enqueue(event);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private enqueue(event: AuditEvent): Promise<void> {
    if (this.closed) return Promise.reject(new MeshError("failedPrecondition", "audit log closed"));
    // After a failed write the chain on disk no longer matches memory: refuse
    // rather than write entries that could never verify.
    if (this.failure !== undefined) return Promise.reject(new MeshError("unavailable", "audit log write failed"));
    const base = {
      seq: this.lastSeq + 1,
      time: new Date(this.clock.nowMs()).toISOString(),
      actor: event.actor,
      action: event.action,
      target: event.target,
      outcome: event.outcome,
      requestId: event.requestId,
      ...(event.details === undefined ? {} : { details: event.details }),
      prevHash: this.lastHash,
    };
    const hash = auditEntryHash(base);
    const line = `${canonicalJson({ ...base, hash })}\n`;
    this.lastSeq = base.seq;
    this.lastHash = hash;
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ line, resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  private async flushLoop(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      try {
        if (this.failure !== undefined) throw this.failure;
        await this.handle.appendFile(batch.map((item) => item.line).join(""), "utf8");
        if (this.durability === "fsync") await this.handle.datasync();
        for (const item of batch) item.resolve();
      } catch (error) {
        this.failure ??= error;
        for (const item of batch) item.reject(new MeshError("unavailable", "audit log write failed"));
      }
    }
    this.flushing = undefined;
  }

  /** The newest `limit` lines as stored, oldest first (after pending appends are written). */
  async tail(limit: number): Promise<string[]> {
    await this.flushing;
    const { size } = await this.handle.stat();
    const lines: string[] = [];
    const chunkBytes = 64 * 1024;
    let end = size;
    // Bytes of a line cut by the chunk boundary; kept as bytes so a multi-byte
    // character split across chunks decodes intact.
    let carry = Buffer.alloc(0);
    while (end > 0 && lines.length < limit) {
      const start = Math.max(0, end - chunkBytes);
      const chunk = Buffer.alloc(end - start);
      await this.handle.read(chunk, 0, chunk.length, start);
      const bytes = Buffer.concat([chunk, carry]);
      let lineEnd = bytes.length;
      let newline = bytes.lastIndexOf(0x0a, lineEnd - 1);
      while (newline !== -1 && lines.length < limit) {
        if (lineEnd > newline + 1) lines.push(bytes.subarray(newline + 1, lineEnd).toString("utf8"));
        lineEnd = newline;
        newline = newline === 0 ? -1 : bytes.lastIndexOf(0x0a, newline - 1);
      }
      carry = bytes.subarray(0, lineEnd);
      end = start;
    }
    if (end === 0 && carry.length > 0 && lines.length < limit) lines.push(carry.toString("utf8"));
    return lines.reverse();
  }

  /** Waits for pending appends, then closes the file. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flushing;
    await this.handle.close();
  }
}

function parseEntry(line: string): AuditEntry | undefined {
  try {
    const value = JSON.parse(line) as unknown;
    if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
    const entry = value as Partial<AuditEntry>;
    if (typeof entry.seq !== "number" || typeof entry.hash !== "string" || typeof entry.prevHash !== "string") return undefined;
    return entry as AuditEntry;
  } catch {
    return undefined;
  }
}

export type AuditVerifyResult =
  | { ok: true; entries: number; head: { seq: number; hash: string } }
  /** `line` is 1-based: the first line that does not follow from the ones before it. */
  | { ok: false; line: number; reason: string };

/**
 * Replays the chain. Names the first line that was edited (its hash no longer
 * matches), removed (the next line's seq or prevHash skips) or reordered. A cut
 * at the very end leaves a valid shorter chain: compare `head` with an anchor.
 */
export async function verifyAuditLog(path: string): Promise<AuditVerifyResult> {
  const handle = await open(path, "r");
  try {
    let expectedSeq = 1;
    let previousHash = genesisHash;
    let lineNumber = 0;
    for await (const line of handle.readLines({ encoding: "utf8" })) {
      lineNumber += 1;
      const entry = parseEntry(line);
      if (!entry) return { ok: false, line: lineNumber, reason: "not a JSON audit entry" };
      if (auditEntryHash(entry) !== entry.hash) return { ok: false, line: lineNumber, reason: "hash does not match contents" };
      if (entry.seq !== expectedSeq) return { ok: false, line: lineNumber, reason: `expected seq ${expectedSeq}, found ${entry.seq}` };
      if (entry.prevHash !== previousHash) return { ok: false, line: lineNumber, reason: "prevHash does not match the previous entry" };
      expectedSeq += 1;
      previousHash = entry.hash;
    }
    return { ok: true, entries: lineNumber, head: { seq: lineNumber, hash: previousHash } };
  } finally {
    await handle.close();
  }
}
