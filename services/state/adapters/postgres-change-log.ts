import type pg from "pg";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { ChangeListeners, changesPage, copyBytes, resyncReason, validLimit } from "../change-log-support.js";
import { GroupCommitter, type GroupCommitOptions } from "../group-commit.js";
import { prefixEnd, validateAfterRevision, validatePrefix, validateTxn } from "../keys.js";
import type { Change, ChangeListener, ChangeLog, ChangeLogObserver, ChangesResult, ChangesSinceOptions, KeyValue, TxnOp, TxnOptions, TxnResult } from "../ports.js";
import { type BatchPlan, type KeyRevisions, namedFences, namedKeys, type PendingTxn, planBatch } from "../txn-planner.js";
import type { PostgresDatabase } from "./postgres-database.js";

// The change log on PostgreSQL, for several replicas.
//
// Commit order == revision order: every batch first locks the single state_meta row
// (SELECT ... FOR UPDATE) and only then reads the keys it compares and takes the
// next revisions from the counter in that row. Writers are serialised on that lock
// until COMMIT, and PostgreSQL makes a transaction visible before it releases its
// locks, so when revision N+1 is visible to any snapshot, N already is: a reader
// tailing changesSince never skips one. (A bigserial would hand out numbers at
// INSERT time; a transaction holding N+1 can commit before the one holding N, and a
// reader that saw N+1 would step past N for good. kine works around that with gap
// detection and fill rows; the row lock makes the gap impossible instead.) Group
// commit keeps the serialisation cheap: one lock, one commit, one WAL flush per
// batch of hundreds of writes.
//
// The key reads must be a statement after the lock, not part of it: in READ
// COMMITTED a statement's snapshot predates the lock wait it contains.

export interface PostgresChangeLogOptions {
  groupCommit?: GroupCommitOptions;
  observer?: ChangeLogObserver;
}

interface MetaRow {
  epoch: string;
  revision: number;
  compacted_revision: number;
}

interface KeyRow {
  key: string | null;
  value: Buffer | null;
  mod_revision: number | null;
  create_revision: number | null;
}

export class PostgresChangeLog implements ChangeLog {
  readonly epoch: string;
  private readonly listeners = new ChangeListeners();
  private readonly committer: GroupCommitter;
  private closed = false;
  private readonly t;

  constructor(
    private readonly database: PostgresDatabase,
    private readonly options: PostgresChangeLogOptions = {},
  ) {
    this.epoch = database.epoch;
    const s = database.schema;
    this.t = { meta: `${s}.state_meta`, keys: `${s}.state_keys`, changes: `${s}.state_changes`, fences: `${s}.state_fences` };
    this.committer = new GroupCommitter((batch) => this.commitBatch(batch), options.groupCommit);
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
    return this.database.guard("get", async () => {
      // One statement, one snapshot: the value and the revision it is consistent at.
      const result = await this.database.pool.query<KeyRow & { revision: number }>(
        `SELECT m.revision, k.key, k.value, k.mod_revision, k.create_revision FROM ${this.t.meta} m LEFT JOIN ${this.t.keys} k ON k.key = $1 WHERE m.id = 1`,
        [key],
      );
      const row = result.rows[0];
      if (!row) throw new Error("state_meta row missing");
      return { revision: row.revision, item: toKeyValue(row) };
    });
  }

  async range(prefix: string): Promise<{ revision: number; items: KeyValue[] }> {
    this.ensureOpen();
    validatePrefix(prefix);
    return this.database.guard("range", async () => {
      const result = await this.database.pool.query<KeyRow & { revision: number }>(
        `SELECT m.revision, k.key, k.value, k.mod_revision, k.create_revision FROM ${this.t.meta} m LEFT JOIN ${this.t.keys} k ON k.key >= $1 AND k.key < $2 WHERE m.id = 1 ORDER BY k.key`,
        [prefix, prefixEnd(prefix)],
      );
      const first = result.rows[0];
      if (!first) throw new Error("state_meta row missing");
      return { revision: first.revision, items: result.rows.flatMap((row) => toKeyValue(row) ?? []) };
    });
  }

  async changesSince(afterRevision: number, options: ChangesSinceOptions = {}): Promise<ChangesResult> {
    this.ensureOpen();
    validateAfterRevision(afterRevision);
    const limit = validLimit(options.limit);
    return this.database.guard("changesSince", async () => {
      // One statement: the watermark, the epoch and the page come from one snapshot,
      // so a concurrent compaction cannot slip between them. The page ends at a
      // transaction boundary (all rows up to the revision of the limit-th row).
      const result = await this.database.pool.query<MetaRow & { change_revision: number | null; key: string | null; value: Buffer | null; previous_revision: number | null }>(
        `WITH m AS (SELECT epoch, revision, compacted_revision FROM ${this.t.meta} WHERE id = 1),
              page AS (SELECT revision FROM ${this.t.changes} WHERE revision > $1 ORDER BY revision, seq LIMIT $2)
         SELECT m.epoch, m.revision, m.compacted_revision, c.revision AS change_revision, c.key, c.value, c.previous_revision
         FROM m LEFT JOIN ${this.t.changes} c ON c.revision > $1 AND c.revision <= (SELECT max(revision) FROM page)
         ORDER BY c.revision, c.seq`,
        [afterRevision, limit],
      );
      const first = result.rows[0];
      if (!first) throw new Error("state_meta row missing");
      const store = { epoch: first.epoch, revision: first.revision, compactedRevision: first.compacted_revision };
      const reason = resyncReason(afterRevision, options.epoch, store);
      if (reason) return { kind: "resync", epoch: first.epoch, reason, currentRevision: first.revision, compactedRevision: first.compacted_revision };
      const changes: Change[] = result.rows.flatMap((row) =>
        row.change_revision === null || row.key === null
          ? []
          : [{ revision: row.change_revision, key: row.key, value: row.value === null ? undefined : copyBytes(row.value), previousRevision: row.previous_revision ?? 0 }],
      );
      return changesPage(first.epoch, afterRevision, first.revision, changes);
    });
  }

  async currentRevision(): Promise<number> {
    this.ensureOpen();
    return this.database.guard("currentRevision", async () => {
      const result = await this.database.pool.query<{ revision: number }>(`SELECT revision FROM ${this.t.meta} WHERE id = 1`);
      const row = result.rows[0];
      if (!row) throw new Error("state_meta row missing");
      return row.revision;
    });
  }

  async compact(beforeRevision: number): Promise<{ compactedRevision: number }> {
    this.ensureOpen();
    validateAfterRevision(beforeRevision);
    return this.database.guard("compact", () =>
      this.database.transaction(async (client) => {
        const meta = await lockMeta(client, this.t.meta);
        const target = Math.min(beforeRevision, meta.revision + 1) - 1;
        if (target <= meta.compacted_revision) return { compactedRevision: meta.compacted_revision };
        await client.query(`DELETE FROM ${this.t.changes} WHERE revision <= $1`, [target]);
        await client.query(`UPDATE ${this.t.meta} SET compacted_revision = $1 WHERE id = 1`, [target]);
        return { compactedRevision: target };
      }),
    );
  }

  onChange(listener: ChangeListener): () => void {
    return this.listeners.add(listener);
  }

  /** Waits for queued transactions; the database (pool) is closed by its owner. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.committer.close();
    this.listeners.clear();
  }

  private async commitBatch(batch: PendingTxn[]): Promise<TxnResult[]> {
    const startedMs = performance.now();
    const plan = await this.database.guard("txn", () =>
      this.database.transaction(async (client) => {
        const meta = await lockMeta(client, this.t.meta);
        const keyNames = namedKeys(batch);
        const fenceNames = namedFences(batch);
        const current = await client.query<{ kind: string; name: string; a: number; b: number }>(
          `SELECT 'k' AS kind, key AS name, mod_revision AS a, create_revision AS b FROM ${this.t.keys} WHERE key = ANY($1::text[])
           UNION ALL SELECT 'f', name, token, 0 FROM ${this.t.fences} WHERE name = ANY($2::text[])`,
          [keyNames, fenceNames],
        );
        const keys = new Map<string, KeyRevisions | undefined>(keyNames.map((key) => [key, undefined]));
        const fences = new Map<string, number>();
        for (const row of current.rows) {
          if (row.kind === "k") keys.set(row.name, { modRevision: row.a, createRevision: row.b });
          else fences.set(row.name, row.a);
        }
        const decided = planBatch(batch, { revision: meta.revision, keys, fences });
        if (decided.changes.length > 0 || decided.raisedFences.size > 0) await this.writePlan(client, decided);
        return decided;
      }),
    );
    this.options.observer?.batchCommitted({ txns: batch.length, changes: plan.changes.length, durationMs: performance.now() - startedMs });
    if (plan.changes.length > 0) this.listeners.notify(plan.revision);
    return plan.results;
  }

  /** Every write of the batch in one statement (data-modifying CTEs): one round trip under the lock. */
  private async writePlan(client: pg.PoolClient, plan: BatchPlan): Promise<void> {
    const changeRevisions: number[] = [];
    const changeSeqs: number[] = [];
    const changeKeys: string[] = [];
    const changeValues: Array<Buffer | null> = [];
    const changePrevious: number[] = [];
    let seq = 0;
    let previous = 0;
    for (const change of plan.changes) {
      seq = change.revision === previous ? seq + 1 : 0;
      previous = change.revision;
      changeRevisions.push(change.revision);
      changeSeqs.push(seq);
      changeKeys.push(change.key);
      changeValues.push(change.value ? toBuffer(change.value) : null);
      changePrevious.push(change.previousRevision);
    }
    const putKeys: string[] = [];
    const putValues: Buffer[] = [];
    const putMod: number[] = [];
    const putCreate: number[] = [];
    const deletedKeys: string[] = [];
    for (const [key, final] of plan.finalKeys) {
      if (!final) {
        deletedKeys.push(key);
        continue;
      }
      putKeys.push(key);
      putValues.push(toBuffer(final.value));
      putMod.push(final.modRevision);
      putCreate.push(final.createRevision);
    }
    await client.query(
      `WITH changes AS (
         INSERT INTO ${this.t.changes} (revision, seq, key, value, previous_revision)
         SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bytea[], $5::bigint[])
       ), puts AS (
         INSERT INTO ${this.t.keys} (key, value, mod_revision, create_revision)
         SELECT * FROM unnest($6::text[], $7::bytea[], $8::bigint[], $9::bigint[])
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision, create_revision = excluded.create_revision
       ), deletes AS (
         DELETE FROM ${this.t.keys} WHERE key = ANY($10::text[])
       ), fences AS (
         INSERT INTO ${this.t.fences} (name, token) SELECT * FROM unnest($11::text[], $12::bigint[])
         ON CONFLICT (name) DO UPDATE SET token = GREATEST(${this.t.fences}.token, excluded.token)
       )
       UPDATE ${this.t.meta} SET revision = $13 WHERE id = 1`,
      [changeRevisions, changeSeqs, changeKeys, changeValues, changePrevious, putKeys, putValues, putMod, putCreate, deletedKeys, [...plan.raisedFences.keys()], [...plan.raisedFences.values()], plan.revision],
    );
  }

  private ensureOpen(): void {
    if (this.closed) throw new MeshError("unavailable", "state store closed");
  }
}

/** The serialisation point of every writer: the counter row, locked until COMMIT. */
async function lockMeta(client: pg.PoolClient, table: string): Promise<MetaRow> {
  const result = await client.query<MetaRow>(`SELECT epoch, revision, compacted_revision FROM ${table} WHERE id = 1 FOR UPDATE`);
  const row = result.rows[0];
  if (!row) throw new Error("state_meta row missing");
  return row;
}

function toBuffer(value: Uint8Array): Buffer {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function toKeyValue(row: KeyRow): KeyValue | undefined {
  if (row.key === null || row.value === null || row.mod_revision === null || row.create_revision === null) return undefined;
  return { key: row.key, value: copyBytes(row.value), modRevision: row.mod_revision, createRevision: row.create_revision };
}
