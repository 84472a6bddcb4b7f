import type { Logger } from "pino";
import {
  type AuditEntry,
  type AuditEvent,
  type AuditMark,
  type AuditSink,
  type AuditStats,
  type AuditVerifyResult,
  auditEntryHash,
  canonicalJson,
  genesisHash,
} from "../../../sdk/ts/src/core/audit-log.js";
import type { Clock } from "../../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import type { PostgresDatabase } from "./postgres-database.js";

// The audit log on PostgreSQL, for replicas: the same entries, byte for byte, as the
// file format in sdk/ts/src/core/audit-log.ts (each row's `line` is the file's line
// without its newline), so `ctl audit verify` rules and any outside tool apply, and
// an export of the table is a valid audit file.
//
// The chain is ordered across replicas by the audit_head row: each batch locks it,
// numbers its entries after it, inserts them and moves it, in one transaction. The
// table refuses UPDATE, DELETE and TRUNCATE by trigger (append-only in the
// database, not only in this code); verify replays the chain and also compares its
// end with audit_head, so rows cut off the end are detected too.
//
// The server holds audited RPCs to it as to the file log (mark, then flushed: OK only
// once the RPC's entries are committed). Entries of a batch that failed are counted,
// and the next batch that commits starts with an `audit.gap` entry saying how many,
// as the file log does after a write error.

export interface PostgresAuditLogOptions {
  clock: Clock;
  logger?: Logger;
  /** Entries per database transaction; a burst beyond it takes several. */
  maxBatchEntries?: number;
}

interface Pending {
  event: AuditEvent;
  time: string;
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface Waiter {
  ticket: number;
  resolve: () => void;
}

const verifyPageRows = 1000;

export class PostgresAuditLog implements AuditSink {
  private pending: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private closed = false;
  private readonly table: string;
  private readonly headTable: string;
  private readonly maxBatchEntries: number;
  /** Appends accepted, and appends settled (committed or failed); batches settle in order. */
  private appended = 0;
  private settled = 0;
  /** Failed batches so far: a mark taken before one cannot be flushed. */
  private failures = 0;
  private waiters: Waiter[] = [];
  /** Entries lost to failed batches since the last committed one, for the next audit.gap entry. */
  private lost: { entries: number; sinceMs: number } | undefined;
  private lastCommitted = { seq: 0, hash: genesisHash };
  private readonly statsCounters: AuditStats = { writes: 0, syncs: 0, droppedEntries: 0 };

  constructor(
    private readonly database: PostgresDatabase,
    private readonly options: PostgresAuditLogOptions,
  ) {
    this.table = `${database.schema}.audit_log`;
    this.headTable = `${database.schema}.audit_head`;
    this.maxBatchEntries = options.maxBatchEntries ?? 1000;
  }

  /** Resolves once the entry is committed (PostgreSQL's durability: synchronous_commit). */
  append(event: AuditEvent): Promise<void> {
    if (this.closed) return Promise.reject(new MeshError("failedPrecondition", "audit log closed"));
    try {
      // Refuse an entry that cannot be serialised here, alone, rather than failing its whole batch later.
      canonicalJson(event.details ?? {});
    } catch (error) {
      return Promise.reject(error);
    }
    const time = new Date(this.options.clock.nowMs()).toISOString();
    this.appended += 1;
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ event, time, resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  /** Newest entry this replica committed (other replicas append to the same chain: see storedHead). */
  get head(): { seq: number; hash: string } {
    return { ...this.lastCommitted };
  }

  /** Appends are always attempted: while PostgreSQL is down they fail, and the store's health reports it. */
  get writable(): boolean {
    return !this.closed;
  }

  /** writes: committed batches (one transaction each); syncs: 0 (PostgreSQL's own WAL flush); dropped: entries of failed batches. */
  get stats(): Readonly<AuditStats> {
    return { ...this.statsCounters };
  }

  /** Call before an audited action; pass the result to flushed() after it. */
  mark(): AuditMark {
    return { epoch: this.failures };
  }

  /**
   * Resolves once every entry appended so far is committed; rejects with UNAVAILABLE
   * when a batch failed since `mark` (one of the action's entries may be among them).
   */
  flushed(mark?: AuditMark): Promise<void> {
    const failedSince = () => mark !== undefined && mark.epoch !== this.failures;
    if (failedSince()) return Promise.reject(auditUnavailable());
    if (this.settled >= this.appended) return Promise.resolve();
    return new Promise<void>((resolve) => this.waiters.push({ ticket: this.appended, resolve })).then(() => {
      if (failedSince()) throw auditUnavailable();
    });
  }

  /** Sequence number and hash of the newest committed entry of the chain, whichever replica wrote it. */
  async storedHead(): Promise<{ seq: number; hash: string }> {
    return this.database.guard("audit.head", async () => {
      const result = await this.database.pool.query<{ seq: number; hash: string }>(`SELECT seq, hash FROM ${this.headTable} WHERE id = 1`);
      const row = result.rows[0];
      if (!row) throw new Error("audit_head row missing");
      return { seq: row.seq, hash: row.hash };
    });
  }

  /** The newest `limit` entries as stored (file-format lines without newline), oldest first. */
  async tail(limit: number): Promise<string[]> {
    await this.flushing;
    return this.database.guard("audit.tail", async () => {
      const result = await this.database.pool.query<{ line: string }>(`SELECT line FROM (SELECT seq, line FROM ${this.table} ORDER BY seq DESC LIMIT $1) newest ORDER BY seq`, [limit]);
      return result.rows.map((row) => row.line);
    });
  }

  /** Entries after `afterSeq`, oldest first: page through for an export. */
  async linesAfter(afterSeq: number, limit: number): Promise<Array<{ seq: number; line: string }>> {
    return this.database.guard("audit.lines", async () => {
      const result = await this.database.pool.query<{ seq: number; line: string }>(`SELECT seq, line FROM ${this.table} WHERE seq > $1 ORDER BY seq LIMIT $2`, [afterSeq, limit]);
      return result.rows;
    });
  }

  /**
   * Replays the chain with the file format's rules; `line` in a failure is the
   * 1-based position of the first entry that does not follow from those before it.
   */
  async verify(): Promise<AuditVerifyResult> {
    let expectedSeq = 1;
    let previousHash = genesisHash;
    let position = 0;
    for (;;) {
      const rows = await this.linesAfter(position, verifyPageRows);
      for (const row of rows) {
        position += 1;
        const entry = parseEntry(row.line);
        if (!entry) return { ok: false, line: position, reason: "not a JSON audit entry" };
        if (auditEntryHash(entry) !== entry.hash) return { ok: false, line: position, reason: "hash does not match contents" };
        if (entry.seq !== expectedSeq || row.seq !== expectedSeq) return { ok: false, line: position, reason: `expected seq ${expectedSeq}, found ${entry.seq}` };
        if (entry.prevHash !== previousHash) return { ok: false, line: position, reason: "prevHash does not match the previous entry" };
        expectedSeq += 1;
        previousHash = entry.hash;
      }
      if (rows.length < verifyPageRows) break;
    }
    const head = await this.storedHead();
    if (head.seq !== position || head.hash !== previousHash) return { ok: false, line: position + 1, reason: `chain ends at seq ${position} but the head says ${head.seq}` };
    // The chain head row lives in the same transactional table set, so it always covers every row; rows are never torn.
    return { ok: true, entries: position, head, anchor: { seq: head.seq, signed: false }, entriesPastAnchor: 0, tornTailBytes: 0 };
  }

  /** Waits for pending appends; the database (pool) is closed by its owner. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flushing;
  }

  private async flushLoop(): Promise<void> {
    // Let appends issued in the same turn join the first batch.
    await new Promise((resolve) => setImmediate(resolve));
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, this.maxBatchEntries);
      try {
        await this.writeBatch(batch);
        this.statsCounters.writes += 1;
        for (const item of batch) item.resolve();
      } catch (error) {
        // Nothing of the batch was committed and the head did not move: the chain is
        // intact, so the next batch may proceed; these appends fail loudly.
        this.failures += 1;
        this.statsCounters.droppedEntries += batch.length;
        this.lost = { entries: (this.lost?.entries ?? 0) + batch.length, sinceMs: this.lost?.sinceMs ?? this.options.clock.nowMs() };
        for (const item of batch) item.reject(error instanceof MeshError ? error : new MeshError("unavailable", "audit log write failed"));
      }
      this.settle(batch.length);
    }
    this.flushing = undefined;
  }

  private settle(count: number): void {
    this.settled += count;
    const still: Waiter[] = [];
    for (const waiter of this.waiters) {
      if (waiter.ticket <= this.settled) waiter.resolve();
      else still.push(waiter);
    }
    this.waiters = still;
  }

  private async writeBatch(appends: Pending[]): Promise<void> {
    const lost = this.lost;
    const batch: Array<Pick<Pending, "event" | "time">> = lost
      ? [
          {
            event: { actor: "system", action: "audit.gap", target: "audit_log", outcome: "failure", requestId: "", details: { droppedEntries: lost.entries, since: new Date(lost.sinceMs).toISOString() } },
            time: appends[0]?.time ?? new Date(this.options.clock.nowMs()).toISOString(),
          },
          ...appends,
        ]
      : appends;
    await this.database.guard("audit.append", () =>
      this.database.transaction(async (client) => {
        const headResult = await client.query<{ seq: number; hash: string }>(`SELECT seq, hash FROM ${this.headTable} WHERE id = 1 FOR UPDATE`);
        const head = headResult.rows[0];
        if (!head) throw new Error("audit_head row missing");
        let seq = head.seq;
        let previousHash = head.hash;
        const seqs: number[] = [];
        const lines: string[] = [];
        const hashes: string[] = [];
        for (const { event, time } of batch) {
          seq += 1;
          const base = {
            seq,
            time,
            actor: event.actor,
            action: event.action,
            target: event.target,
            outcome: event.outcome,
            requestId: event.requestId,
            ...(event.details === undefined ? {} : { details: event.details }),
            prevHash: previousHash,
          };
          const hash = auditEntryHash(base);
          seqs.push(seq);
          lines.push(canonicalJson({ ...base, hash }));
          hashes.push(hash);
          previousHash = hash;
        }
        await client.query(
          `WITH appended AS (INSERT INTO ${this.table} (seq, line, hash) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]))
           UPDATE ${this.headTable} SET seq = $4, hash = $5 WHERE id = 1`,
          [seqs, lines, hashes, seq, previousHash],
        );
        return { seq, hash: previousHash };
      }),
    ).then((head) => {
      this.lastCommitted = head;
      if (this.lost === lost) this.lost = undefined;
    });
  }
}

const auditUnavailable = () => new MeshError("unavailable", "audit log unavailable: audited actions are refused");

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
