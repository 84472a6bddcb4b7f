import { randomUUID } from "node:crypto";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { Logger } from "pino";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { ChangeListeners, changesPage, copyBytes, resyncReason, validLimit } from "../change-log-support.js";
import { GroupCommitter, type GroupCommitOptions } from "../group-commit.js";
import { prefixEnd, validateAfterRevision, validatePrefix, validateTxn } from "../keys.js";
import type { Change, ChangeListener, ChangeLog, ChangeLogObserver, ChangesResult, ChangesSinceOptions, KeyValue, TxnOp, TxnOptions, TxnResult } from "../ports.js";
import { type KeyRevisions, namedFences, namedKeys, type PendingTxn, planBatch } from "../txn-planner.js";

// The embedded default: SQLite through better-sqlite3 in --data-dir, WAL mode.
//
// synchronous=NORMAL (default): a commit appends its frames to the WAL with write(2)
// before the txn resolves, without fsync. The bytes are then in the kernel's page
// cache, which belongs to the machine, not the process: a kill -9 of the server
// loses nothing acknowledged. A power cut or kernel crash may lose the last commits
// (the database stays consistent: SQLite rolls back to the last synced frame).
// synchronous=FULL fsyncs the WAL at every commit, so acknowledged writes also
// survive power loss; group commit makes that one fsync per batch, not per write.

export type SqliteSynchronous = "normal" | "full";

export interface SqliteChangeLogOptions {
  /** The database file; or give dataDir and it is <dataDir>/state.db. */
  path?: string;
  dataDir?: string;
  synchronous?: SqliteSynchronous;
  groupCommit?: GroupCommitOptions;
  observer?: ChangeLogObserver;
  logger?: Logger;
  /** Epoch for a newly created database; defaults to a random UUID. */
  newEpoch?: () => string;
}

/** Versioned schema; user_version records how many have been applied. */
const migrations: string[] = [
  `CREATE TABLE state_meta (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     epoch TEXT NOT NULL,
     revision INTEGER NOT NULL,
     compacted_revision INTEGER NOT NULL
   );
   CREATE TABLE state_keys (
     key TEXT PRIMARY KEY,
     value BLOB NOT NULL,
     mod_revision INTEGER NOT NULL,
     create_revision INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE state_changes (
     revision INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     key TEXT NOT NULL,
     value BLOB,
     previous_revision INTEGER NOT NULL,
     PRIMARY KEY (revision, seq)
   ) WITHOUT ROWID;
   CREATE TABLE state_fences (
     name TEXT PRIMARY KEY,
     token INTEGER NOT NULL
   ) WITHOUT ROWID;`,
];

interface MetaRow {
  epoch: string;
  revision: number;
  compacted_revision: number;
}

interface KeyRow {
  key: string;
  value: Buffer;
  mod_revision: number;
  create_revision: number;
}

interface ChangeRow {
  revision: number;
  seq: number;
  key: string;
  value: Buffer | null;
  previous_revision: number;
}

export class SqliteChangeLog implements ChangeLog {
  private readonly listeners = new ChangeListeners();
  private readonly committer: GroupCommitter;
  private closed = false;
  private readonly statements;

  private constructor(
    private readonly db: Database.Database,
    readonly epoch: string,
    private readonly options: SqliteChangeLogOptions,
  ) {
    this.statements = {
      meta: db.prepare<[], MetaRow>("SELECT epoch, revision, compacted_revision FROM state_meta WHERE id = 1"),
      keyRevisions: db.prepare<[string], { mod_revision: number; create_revision: number }>("SELECT mod_revision, create_revision FROM state_keys WHERE key = ?"),
      fence: db.prepare<[string], { token: number }>("SELECT token FROM state_fences WHERE name = ?"),
      upsertKey: db.prepare("INSERT INTO state_keys (key, value, mod_revision, create_revision) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision, create_revision = excluded.create_revision"),
      deleteKey: db.prepare("DELETE FROM state_keys WHERE key = ?"),
      insertChange: db.prepare("INSERT INTO state_changes (revision, seq, key, value, previous_revision) VALUES (?, ?, ?, ?, ?)"),
      upsertFence: db.prepare("INSERT INTO state_fences (name, token) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET token = max(token, excluded.token)"),
      setRevision: db.prepare("UPDATE state_meta SET revision = ? WHERE id = 1"),
      getKey: db.prepare<[string], KeyRow>("SELECT key, value, mod_revision, create_revision FROM state_keys WHERE key = ?"),
      range: db.prepare<[string, string], KeyRow>("SELECT key, value, mod_revision, create_revision FROM state_keys WHERE key >= ? AND key < ? ORDER BY key"),
      changesAfter: db.prepare<[number, number], ChangeRow>("SELECT revision, seq, key, value, previous_revision FROM state_changes WHERE revision > ? ORDER BY revision, seq LIMIT ?"),
      restOfRevision: db.prepare<[number, number], ChangeRow>("SELECT revision, seq, key, value, previous_revision FROM state_changes WHERE revision = ? AND seq > ? ORDER BY seq"),
      deleteChangesBefore: db.prepare("DELETE FROM state_changes WHERE revision <= ?"),
      setCompacted: db.prepare("UPDATE state_meta SET compacted_revision = ? WHERE id = 1"),
    };
    this.committer = new GroupCommitter((batch) => this.commitBatch(batch), options.groupCommit);
  }

  static async open(options: SqliteChangeLogOptions): Promise<SqliteChangeLog> {
    const path = options.path ?? (options.dataDir ? join(options.dataDir, "state.db") : undefined);
    if (!path) throw new MeshError("invalidArgument", "sqlite store needs a path or a data dir");
    if (options.dataDir) mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    // Created 0600 before SQLite sees it: its -wal and -shm files copy these permissions.
    closeSync(openSync(path, "a", 0o600));
    const db = new Database(path);
    try {
      db.pragma("journal_mode = WAL");
      db.pragma(`synchronous = ${options.synchronous === "full" ? "FULL" : "NORMAL"}`);
      // Another process holding the write lock (a second server on the same dir, a backup) waits, not fails.
      db.pragma("busy_timeout = 5000");
      const epoch = migrate(db, options.newEpoch ?? randomUUID);
      return new SqliteChangeLog(db, epoch, options);
    } catch (error) {
      db.close();
      throw error;
    }
  }

  txn(ops: TxnOp[], options: TxnOptions = {}): Promise<TxnResult> {
    try {
      this.ensureOpen();
      validateTxn(ops, options.fence);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.committer.submit({ ops, ...(options.fence ? { fence: options.fence } : {}) });
  }

  async get(key: string): Promise<{ revision: number; item: KeyValue | undefined }> {
    this.ensureOpen();
    return this.guard(() =>
      this.db.transaction(() => {
        const meta = this.meta();
        const row = this.statements.getKey.get(key);
        return { revision: meta.revision, item: row && toKeyValue(row) };
      })(),
    );
  }

  async range(prefix: string): Promise<{ revision: number; items: KeyValue[] }> {
    this.ensureOpen();
    validatePrefix(prefix);
    return this.guard(() =>
      this.db.transaction(() => {
        const meta = this.meta();
        const items = this.statements.range.all(prefix, prefixEnd(prefix)).map(toKeyValue);
        return { revision: meta.revision, items };
      })(),
    );
  }

  async changesSince(afterRevision: number, options: ChangesSinceOptions = {}): Promise<ChangesResult> {
    this.ensureOpen();
    validateAfterRevision(afterRevision);
    const limit = validLimit(options.limit);
    return this.guard(() =>
      this.db.transaction((): ChangesResult => {
        const meta = this.meta();
        const store = { epoch: meta.epoch, revision: meta.revision, compactedRevision: meta.compacted_revision };
        const reason = resyncReason(afterRevision, options.epoch, store);
        if (reason) return { kind: "resync", epoch: meta.epoch, reason, currentRevision: meta.revision, compactedRevision: meta.compacted_revision };
        const rows = this.statements.changesAfter.all(afterRevision, limit);
        const last = rows[rows.length - 1];
        // Never cut a transaction in two: a follower must not apply half of one.
        if (last && rows.length === limit) rows.push(...this.statements.restOfRevision.all(last.revision, last.seq));
        return changesPage(meta.epoch, afterRevision, meta.revision, rows.map(toChange));
      })(),
    );
  }

  async currentRevision(): Promise<number> {
    this.ensureOpen();
    return this.guard(() => this.meta().revision);
  }

  async compact(beforeRevision: number): Promise<{ compactedRevision: number }> {
    this.ensureOpen();
    validateAfterRevision(beforeRevision);
    return this.guard(() =>
      this.db.transaction(() => {
        const meta = this.meta();
        const target = Math.min(beforeRevision, meta.revision + 1) - 1;
        if (target <= meta.compacted_revision) return { compactedRevision: meta.compacted_revision };
        this.statements.deleteChangesBefore.run(target);
        this.statements.setCompacted.run(target);
        return { compactedRevision: target };
      }).immediate(),
    );
  }

  onChange(listener: ChangeListener): () => void {
    return this.listeners.add(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.committer.close();
    this.listeners.clear();
    this.db.close();
  }

  private async commitBatch(batch: PendingTxn[]): Promise<TxnResult[]> {
    const startedMs = performance.now();
    const plan = this.guard(() =>
      this.db.transaction(() => {
        const meta = this.meta();
        const keys = new Map<string, KeyRevisions | undefined>();
        for (const key of namedKeys(batch)) {
          const row = this.statements.keyRevisions.get(key);
          keys.set(key, row && { modRevision: row.mod_revision, createRevision: row.create_revision });
        }
        const fences = new Map<string, number>();
        for (const name of namedFences(batch)) {
          const row = this.statements.fence.get(name);
          if (row) fences.set(name, row.token);
        }
        const decided = planBatch(batch, { revision: meta.revision, keys, fences });
        writePlan(this.statements, decided);
        return decided;
      }).immediate(),
    );
    this.options.observer?.batchCommitted({ txns: batch.length, changes: plan.changes.length, durationMs: performance.now() - startedMs });
    if (plan.changes.length > 0) this.listeners.notify(plan.revision);
    return plan.results;
  }

  private meta(): MetaRow {
    const meta = this.statements.meta.get();
    if (!meta) throw new Error("state_meta row missing");
    return meta;
  }

  /** Database failures become one safe error; the cause goes to the log. */
  private guard<T>(work: () => T): T {
    try {
      return work();
    } catch (error) {
      if (error instanceof MeshError) throw error;
      this.options.logger?.error({ component: "state-store", err: error }, "sqlite state store operation failed");
      throw new MeshError("unavailable", "state store unavailable");
    }
  }

  private ensureOpen(): void {
    if (this.closed) throw new MeshError("unavailable", "state store closed");
  }
}

function writePlan(statements: { upsertKey: Database.Statement; deleteKey: Database.Statement; insertChange: Database.Statement; upsertFence: Database.Statement; setRevision: Database.Statement }, plan: ReturnType<typeof planBatch>): void {
  for (const [key, final] of plan.finalKeys) {
    if (final) statements.upsertKey.run(key, toBuffer(final.value), final.modRevision, final.createRevision);
    else statements.deleteKey.run(key);
  }
  let seq = 0;
  let previous = 0;
  for (const change of plan.changes) {
    seq = change.revision === previous ? seq + 1 : 0;
    previous = change.revision;
    statements.insertChange.run(change.revision, seq, change.key, change.value ? toBuffer(change.value) : null, change.previousRevision);
  }
  for (const [name, token] of plan.raisedFences) statements.upsertFence.run(name, token);
  statements.setRevision.run(plan.revision);
}

function migrate(db: Database.Database, newEpoch: () => string): string {
  return db
    .transaction(() => {
      const applied = db.pragma("user_version", { simple: true }) as number;
      if (applied > migrations.length) throw new MeshError("failedPrecondition", `state database schema version ${applied} is newer than this build (${migrations.length}); upgrade agentmesh`);
      for (let version = applied; version < migrations.length; version += 1) db.exec(migrations[version] as string);
      db.pragma(`user_version = ${migrations.length}`);
      db.prepare("INSERT INTO state_meta (id, epoch, revision, compacted_revision) VALUES (1, ?, 0, 0) ON CONFLICT (id) DO NOTHING").run(newEpoch());
      const row = db.prepare<[], { epoch: string }>("SELECT epoch FROM state_meta WHERE id = 1").get();
      if (!row) throw new Error("state_meta row missing");
      return row.epoch;
    })
    .immediate();
}

function toBuffer(value: Uint8Array): Buffer {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function toKeyValue(row: KeyRow): KeyValue {
  return { key: row.key, value: copyBytes(row.value), modRevision: row.mod_revision, createRevision: row.create_revision };
}

function toChange(row: ChangeRow): Change {
  return { revision: row.revision, key: row.key, value: row.value === null ? undefined : copyBytes(row.value), previousRevision: row.previous_revision };
}
