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
// shorter chain: the head record beside the log (audit-head.ts: last seq and hash,
// signed by the server's CA key) is what makes that detectable. docs/audit.md says
// what verify proves and what it cannot.
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { type AuditHeadKeys, AuditHeadWriter, auditHeadPath, readAuditHead } from "./audit-head.js";
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

/** Whether appends are being written; `error` is the file system's own (ENOSPC, EIO...). */
export type AuditSinkState = { writable: true } | { writable: false; error: unknown; sinceMs: number };

export interface OpenAuditLogOptions {
  path: string;
  clock: Clock;
  durability?: AuditDurability;
  /**
   * Signs the head record and checks the existing one at open (the server: its CA
   * key). Without keys the head is written unsigned and read without a check.
   */
  headKeys?: AuditHeadKeys;
  /** While appends fail, how often to try again (default 1 s). */
  retryIntervalMs?: number;
  /** Most entries per write (default 4096), which bounds one write's size and latency. */
  maxBatchEntries?: number;
  /** Called once per change between writable and failing, never per append. */
  onStateChange?: (state: AuditSinkState) => void;
}

/** What open() had to repair; each is also recorded as an `audit.recovered` entry. */
export interface AuditRecovery {
  /** Bytes of an incomplete last line (a torn write) cut off at open. */
  truncatedTailBytes: number;
  /** The log had entries but no head record (an older log, or the head was removed). */
  headRecreated: boolean;
  /** Entries after the head record (written just before a crash, before the head was). */
  entriesPastHead: number;
}

export interface AuditStats {
  /** write(2) calls for batches of entries. */
  writes: number;
  /** fdatasync calls for the log. */
  syncs: number;
  /** Entries refused or lost because the file could not be written. */
  droppedEntries: number;
}

/** Ties an audited action to the entries appended while it ran (see flushed). */
export interface AuditMark {
  readonly epoch: number;
}

interface Pending {
  line: string;
  seq: number;
  hash: string;
  time: string;
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface Waiter {
  seq: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

const chunkBytes = 64 * 1024;
const unavailable = () => new MeshError("unavailable", "audit log unavailable");

/** Length of the file up to and including its last "\n" (0 when it holds none). */
async function completeLength(handle: FileHandle, sizeBytes: number): Promise<number> {
  let end = sizeBytes;
  while (end > 0) {
    const start = Math.max(0, end - chunkBytes);
    const chunk = Buffer.alloc(end - start);
    await handle.read(chunk, 0, chunk.length, start);
    const newline = chunk.lastIndexOf(0x0a);
    if (newline !== -1) return start + newline + 1;
    end = start;
  }
  return 0;
}

/**
 * Complete lines of the first `sizeBytes` bytes, newest first. Entries are small, so
 * reading the last few touches a few KiB however long the log is; bytes of a line
 * cut by a chunk boundary are kept as bytes so multi-byte characters decode intact.
 */
async function* linesBackwards(handle: FileHandle, sizeBytes: number): AsyncGenerator<string> {
  let end = sizeBytes;
  let carry = Buffer.alloc(0);
  while (end > 0) {
    const start = Math.max(0, end - chunkBytes);
    const chunk = Buffer.alloc(end - start);
    await handle.read(chunk, 0, chunk.length, start);
    const bytes = Buffer.concat([chunk, carry]);
    let lineEnd = bytes.length;
    let newline = bytes.lastIndexOf(0x0a, lineEnd - 1);
    while (newline !== -1) {
      if (lineEnd > newline + 1) yield bytes.subarray(newline + 1, lineEnd).toString("utf8");
      lineEnd = newline;
      newline = newline === 0 ? -1 : bytes.lastIndexOf(0x0a, newline - 1);
    }
    carry = bytes.subarray(0, lineEnd);
    end = start;
  }
  if (carry.length > 0) yield carry.toString("utf8");
}

/** The entry with sequence number `seq`, read backwards from the end. */
async function entryAt(handle: FileHandle, sizeBytes: number, seq: number): Promise<AuditEntry | undefined> {
  for await (const line of linesBackwards(handle, sizeBytes)) {
    const entry = parseEntry(line);
    if (!entry || entry.seq < seq) return undefined;
    if (entry.seq === seq) return entry;
  }
  return undefined;
}

/**
 * Append-only, hash-chained JSON-lines audit log. Sequence numbers and hashes are
 * assigned in call order; appends made in the same event-loop turn, or while a
 * write is in flight, go out as one batch: one write (and at most one fdatasync)
 * per batch, so a burst of 10,000 registrations costs a handful of writes, and an
 * append waits at most one turn plus the write before it.
 *
 * When a write fails (a full disk), the torn bytes are cut off, every queued and
 * later append is refused with UNAVAILABLE and counted, and the log retries in the
 * background; once a write succeeds it records an `audit.gap` entry (how many
 * entries were lost, since when, why) and accepts appends again.
 */
export class FileAuditLog implements AuditSink {
  private pending: Pending[] = [];
  private waiters: Waiter[] = [];
  private running: Promise<void> | undefined;
  private failure: { error: unknown; sinceMs: number; dropped: number } | undefined;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly statsCounters: AuditStats = { writes: 0, syncs: 0, droppedEntries: 0 };
  /** What open() repaired. */
  recovery: AuditRecovery = { truncatedTailBytes: 0, headRecreated: false, entriesPastHead: 0 };

  private constructor(
    private readonly handle: FileHandle,
    private readonly headWriter: AuditHeadWriter,
    private readonly options: OpenAuditLogOptions,
    private lastSeq: number,
    private lastHash: string,
    private committed: { seq: number; hash: string; bytes: number },
  ) {}

  /**
   * Opens (creating if needed) and continues the chain. A torn last line is cut
   * off; a last entry that does not hash, or a log shorter than (or different from)
   * its head record, is refused: that is tampering, for an operator to look at.
   */
  static async open(options: OpenAuditLogOptions): Promise<FileAuditLog> {
    const handle = await open(options.path, "a+", 0o600);
    let headWriter: AuditHeadWriter | undefined;
    try {
      const { size } = await handle.stat();
      const complete = await completeLength(handle, size);
      const recovery: AuditRecovery = { truncatedTailBytes: size - complete, headRecreated: false, entriesPastHead: 0 };
      if (recovery.truncatedTailBytes > 0) {
        await handle.truncate(complete);
        await handle.datasync();
      }
      let last: AuditEntry | undefined;
      for await (const line of linesBackwards(handle, complete)) {
        last = parseEntry(line);
        if (!last || auditEntryHash(last) !== last.hash) throw new MeshError("failedPrecondition", "audit log last entry is corrupt; run audit verify");
        break;
      }
      const lastSeq = last?.seq ?? 0;
      const lastHash = last?.hash ?? genesisHash;
      const headPath = auditHeadPath(options.path);
      const stored = await readAuditHead(headPath, options.headKeys);
      let currentSlot: number | undefined;
      if (stored.kind === "invalid") throw new MeshError("failedPrecondition", `audit ${stored.reason}; run audit verify`);
      if (stored.kind === "missing") {
        recovery.headRecreated = lastSeq > 0;
      } else {
        const head = stored.head;
        currentSlot = stored.slot;
        if (head.seq > lastSeq) {
          throw new MeshError("failedPrecondition", `audit log ends at seq ${lastSeq} but its head record says ${head.seq}: entries were cut off; run audit verify`);
        }
        const anchored = head.seq === 0 ? genesisHash : head.seq === lastSeq ? lastHash : (await entryAt(handle, complete, head.seq))?.hash;
        if (anchored !== head.hash) throw new MeshError("failedPrecondition", `audit log entry ${head.seq} does not match its head record; run audit verify`);
        recovery.entriesPastHead = lastSeq - head.seq;
      }
      headWriter = await AuditHeadWriter.open(headPath, currentSlot, options.headKeys?.sign);
      await headWriter.write({ seq: lastSeq, hash: lastHash, time: last?.time ?? new Date(options.clock.nowMs()).toISOString() }, options.durability === "fsync");
      const log = new FileAuditLog(handle, headWriter, options, lastSeq, lastHash, { seq: lastSeq, hash: lastHash, bytes: complete });
      log.recovery = recovery;
      if (recovery.truncatedTailBytes > 0 || recovery.headRecreated || recovery.entriesPastHead > 0) {
        await log.append({ actor: "system", action: "audit.recovered", target: "audit.log", outcome: "success", requestId: "", details: { ...recovery } });
      }
      return log;
    } catch (error) {
      await headWriter?.close();
      await handle.close();
      throw error;
    }
  }

  /** Sequence number and hash of the newest entry appended (written or still queued). */
  get head(): { seq: number; hash: string } {
    return { seq: this.lastSeq, hash: this.lastHash };
  }

  /** Sequence number and hash of the newest entry on file, as the head record says. */
  get committedHead(): { seq: number; hash: string } {
    return { seq: this.committed.seq, hash: this.committed.hash };
  }

  /** False while writes fail (and after close): appends are refused. */
  get writable(): boolean {
    return this.failure === undefined && !this.closed;
  }

  get stats(): Readonly<AuditStats> {
    return { ...this.statsCounters };
  }

  append(event: AuditEvent): Promise<void> {
    if (this.closed) return Promise.reject(new MeshError("failedPrecondition", "audit log closed"));
    if (this.failure !== undefined) {
      this.failure.dropped += 1;
      this.statsCounters.droppedEntries += 1;
      return Promise.reject(unavailable());
    }
    let entry: Omit<Pending, "resolve" | "reject">;
    try {
      entry = this.chain(event);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ ...entry, resolve, reject });
      this.kick();
    });
  }

  /** Call before an audited action; pass the result to flushed() after it. */
  mark(): AuditMark {
    return { epoch: this.failures };
  }

  /**
   * Resolves once every entry appended so far is on file; rejects with UNAVAILABLE
   * when one of them (or, given a mark, any entry since the mark) could not be written.
   */
  flushed(mark?: AuditMark): Promise<void> {
    const failedSince = () => this.failure !== undefined || (mark !== undefined && mark.epoch !== this.failures);
    if (failedSince()) return Promise.reject(unavailable());
    if (this.committed.seq >= this.lastSeq) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.waiters.push({ seq: this.lastSeq, resolve, reject })).then(() => {
      if (failedSince()) throw unavailable();
    });
  }

  private chain(event: AuditEvent): Omit<Pending, "resolve" | "reject"> {
    const base = {
      seq: this.lastSeq + 1,
      time: new Date(this.options.clock.nowMs()).toISOString(),
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
    return { line, seq: base.seq, hash, time: base.time };
  }

  /** Starts the writer on the next turn, so appends made in this one share its batch. */
  private kick(): void {
    if (this.running) return;
    this.running = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.flushLoop())
      .finally(() => {
        this.running = undefined;
        if (this.pending.length > 0 && this.failure === undefined) this.kick();
      });
  }

  private async flushLoop(): Promise<void> {
    const maxBatch = this.options.maxBatchEntries ?? 4096;
    while (this.pending.length > 0 && this.failure === undefined) {
      const batch = this.pending.splice(0, maxBatch);
      const text = batch.map((item) => item.line).join("");
      const last = batch[batch.length - 1] as Pending;
      try {
        await this.writeDurably(text);
      } catch (error) {
        await this.fail(error, batch);
        return;
      }
      this.commit(last, Buffer.byteLength(text));
      for (const item of batch) item.resolve();
      this.wakeWaiters();
      try {
        await this.headWriter.write({ seq: last.seq, hash: last.hash, time: last.time }, false);
      } catch (error) {
        // The entries are on file; only the head lags. Stop until both can be written.
        await this.fail(error, []);
        return;
      }
    }
  }

  private async writeDurably(text: string): Promise<void> {
    this.statsCounters.writes += 1;
    await this.handle.appendFile(text, "utf8");
    if (this.options.durability === "fsync") {
      this.statsCounters.syncs += 1;
      await this.handle.datasync();
    }
  }

  private commit(last: Pick<Pending, "seq" | "hash">, bytes: number): void {
    this.committed = { seq: last.seq, hash: last.hash, bytes: this.committed.bytes + bytes };
  }

  private wakeWaiters(): void {
    const still: Waiter[] = [];
    for (const waiter of this.waiters) {
      if (waiter.seq <= this.committed.seq) waiter.resolve();
      else still.push(waiter);
    }
    this.waiters = still;
  }

  private async fail(error: unknown, batch: Pending[]): Promise<void> {
    const refused = [...batch, ...this.pending.splice(0)];
    this.failures += 1;
    this.failure = { error, sinceMs: this.options.clock.nowMs(), dropped: refused.length };
    this.statsCounters.droppedEntries += refused.length;
    // The chain continues from what is on file, not from entries that never got there.
    this.lastSeq = this.committed.seq;
    this.lastHash = this.committed.hash;
    await this.cutTornTail();
    for (const item of refused) item.reject(unavailable());
    for (const waiter of this.waiters.splice(0)) waiter.reject(unavailable());
    this.options.onStateChange?.({ writable: false, error, sinceMs: this.failure.sinceMs });
    this.scheduleRetry();
  }

  /** A failed write may have left part of a line: cut the file back to its last committed entry. */
  private async cutTornTail(): Promise<boolean> {
    try {
      await this.handle.truncate(this.committed.bytes);
      return (await this.handle.stat()).size === this.committed.bytes;
    } catch {
      return false;
    }
  }

  private scheduleRetry(): void {
    if (this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.retry();
    }, this.options.retryIntervalMs ?? 1000);
    this.retryTimer.unref();
  }

  /** Writes the gap entry; its success is what "appends work again" means. */
  private async retry(): Promise<void> {
    const failure = this.failure;
    if (!failure || this.closed) return;
    const code = (failure.error as NodeJS.ErrnoException | undefined)?.code;
    const gap = this.chain({
      actor: "system",
      action: "audit.gap",
      target: "audit.log",
      outcome: "failure",
      requestId: "",
      details: { droppedEntries: failure.dropped, since: new Date(failure.sinceMs).toISOString(), ...(typeof code === "string" ? { errorCode: code } : {}) },
    });
    try {
      if (!(await this.cutTornTail())) throw failure.error;
      await this.writeDurably(gap.line);
      this.commit(gap, Buffer.byteLength(gap.line));
      await this.headWriter.write({ seq: gap.seq, hash: gap.hash, time: gap.time }, this.options.durability === "fsync");
    } catch {
      this.lastSeq = this.committed.seq;
      this.lastHash = this.committed.hash;
      this.scheduleRetry();
      return;
    }
    this.failure = undefined;
    this.options.onStateChange?.({ writable: true });
  }

  /** The newest `limit` complete lines on file, oldest first (after queued appends are written). */
  async tail(limit: number): Promise<string[]> {
    await this.flushed().catch(() => undefined);
    const lines: string[] = [];
    for await (const line of linesBackwards(this.handle, this.committed.bytes)) {
      if (lines.length >= limit) break;
      lines.push(line);
    }
    return lines.reverse();
  }

  /** Waits for queued appends, then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    await this.running;
    for (const waiter of this.waiters.splice(0)) waiter.reject(new MeshError("failedPrecondition", "audit log closed"));
    await this.headWriter.close();
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
  | {
      ok: true;
      entries: number;
      /** The last entry's seq and hash. */
      head: { seq: number; hash: string };
      /** The head record the log was checked against; absent for an empty log without one. */
      anchor?: { seq: number; signed: boolean };
      /** Entries after the head record: chained, but not covered by it. */
      entriesPastAnchor: number;
      /** Bytes of an incomplete last line (a torn write), ignored; the server drops them at its next start. */
      tornTailBytes: number;
    }
  /** `line` is 1-based: the first line that does not follow from the ones before it. */
  | { ok: false; line: number; reason: string };

export interface VerifyAuditLogOptions {
  /** Keys a signed head record must verify with (the server's CA certificate). */
  headKeys?: Pick<AuditHeadKeys, "publicKeys">;
}

/**
 * Replays the chain and checks it against the head record. Names the first line
 * that was edited (its hash no longer matches), removed (the next line's seq or
 * prevHash skips) or reordered; a log cut short of its head record fails at the
 * first missing line. A signed head needs `headKeys` to be checked.
 */
export async function verifyAuditLog(path: string, options: VerifyAuditLogOptions = {}): Promise<AuditVerifyResult> {
  const stored = await readAuditHead(auditHeadPath(path), options.headKeys);
  if (stored.kind === "invalid") return { ok: false, line: 0, reason: stored.reason };
  if (stored.kind === "ok" && stored.signed && !options.headKeys) {
    return { ok: false, line: 0, reason: "head record is signed: give the CA certificate to check it" };
  }
  const anchor = stored.kind === "ok" ? stored.head : undefined;
  const handle = await open(path, "r");
  try {
    const { size } = await handle.stat();
    const complete = await completeLength(handle, size);
    let expectedSeq = 1;
    let previousHash = genesisHash;
    let lineNumber = 0;
    let anchorMatched = anchor === undefined || (anchor.seq === 0 && anchor.hash === genesisHash);
    if (complete > 0) {
      for await (const line of handle.readLines({ encoding: "utf8", start: 0, end: complete - 1 })) {
        lineNumber += 1;
        const entry = parseEntry(line);
        if (!entry) return { ok: false, line: lineNumber, reason: "not a JSON audit entry" };
        if (auditEntryHash(entry) !== entry.hash) return { ok: false, line: lineNumber, reason: "hash does not match contents" };
        if (entry.seq !== expectedSeq) return { ok: false, line: lineNumber, reason: `expected seq ${expectedSeq}, found ${entry.seq}` };
        if (entry.prevHash !== previousHash) return { ok: false, line: lineNumber, reason: "prevHash does not match the previous entry" };
        if (anchor && entry.seq === anchor.seq) {
          if (entry.hash !== anchor.hash) return { ok: false, line: lineNumber, reason: "entry does not match the head record" };
          anchorMatched = true;
        }
        expectedSeq += 1;
        previousHash = entry.hash;
      }
    }
    if (!anchor) {
      if (lineNumber > 0) return { ok: false, line: 0, reason: "no head record: entries cut off the end would go unnoticed" };
    } else if (anchor.seq > lineNumber) {
      return { ok: false, line: lineNumber + 1, reason: `log ends at seq ${lineNumber} but the head record says ${anchor.seq}: entries were cut off the end` };
    } else if (!anchorMatched) {
      return { ok: false, line: 0, reason: "head record does not match the log" };
    }
    return {
      ok: true,
      entries: lineNumber,
      head: { seq: lineNumber, hash: previousHash },
      ...(anchor && stored.kind === "ok" ? { anchor: { seq: anchor.seq, signed: stored.signed } } : {}),
      entriesPastAnchor: anchor ? lineNumber - anchor.seq : 0,
      tornTailBytes: size - complete,
    };
  } finally {
    await handle.close();
  }
}
