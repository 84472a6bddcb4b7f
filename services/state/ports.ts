// The state store: one revisioned change log of keys (the etcd / Kubernetes / kine
// shape). Every service's durable state is keys in it; every replica keeps an
// in-memory projection and follows the log by revision. docs/adr/0004 has the why.

/** A key's current value and the revisions that wrote it. */
export interface KeyValue {
  key: string;
  value: Uint8Array;
  /** Revision of the transaction that last wrote the key. */
  modRevision: number;
  /** Revision of the transaction that created it (since its last deletion). */
  createRevision: number;
}

/**
 * One write. `expectRevision` is a compare on the key's current mod revision:
 * 0 means "must not exist"; absent means "whatever it is".
 */
export type TxnOp =
  | { type: "put"; key: string; value: Uint8Array; expectRevision?: number }
  | { type: "delete"; key: string; expectRevision?: number };

/**
 * A leader's lease token. The store refuses the write when it has seen a higher
 * token for the same name, and remembers the highest one in the same transaction.
 */
export interface FencingToken {
  name: string;
  token: number;
}

export interface TxnOptions {
  fence?: FencingToken;
}

export type TxnResult =
  | {
      ok: true;
      /** The transaction's revision; the current revision when nothing changed. */
      revision: number;
      /** Per op, the mod revision of the value it replaced or deleted; 0 when the key was absent. */
      previousRevisions: number[];
    }
  /** A compare failed; nothing of the transaction was written. */
  | { ok: false; reason: "conflict"; key: string; actualRevision: number }
  /** A higher fencing token for this name has been seen; nothing was written. */
  | { ok: false; reason: "fenced"; fence: string; highestToken: number };

/** One key change. All changes of a transaction share its revision, in op order. */
export interface Change {
  revision: number;
  key: string;
  /** The new value; undefined for a deletion (tombstone). */
  value: Uint8Array | undefined;
  /** Mod revision of the value this change replaced; 0 when the key did not exist. */
  previousRevision: number;
}

export type ResyncReason =
  /** The caller's position belongs to another store (recreated, restored, replaced). */
  | "epoch"
  /** Changes after the caller's revision were compacted away. */
  | "compacted"
  /** The caller's revision is beyond anything this store has written. */
  | "ahead";

export type ChangesResult =
  | {
      kind: "changes";
      epoch: string;
      /** Whole transactions, in revision order; may exceed `limit` to finish the last one. */
      changes: Change[];
      /** Where the caller stands after applying `changes`; pass it to the next call. */
      revision: number;
      /** True when the log has revisions beyond `revision`: read again. */
      more: boolean;
    }
  /** The caller must rebuild from a snapshot (`range`) and follow from its revision. */
  | { kind: "resync"; epoch: string; reason: ResyncReason; currentRevision: number; compactedRevision: number };

export interface ChangesSinceOptions {
  /** Most changes to answer (rounded up to a whole transaction). */
  limit?: number;
  /** The epoch the caller's revision belongs to; a different one answers resync. */
  epoch?: string;
}

/** Called after commits with the newest revision. A hint only: read `changesSince`. */
export type ChangeListener = (revision: number) => void;

export interface ChangeLog {
  /**
   * Random id made when the store was created. Revisions are only comparable
   * within one epoch: a position from another epoch must resync.
   */
  readonly epoch: string;
  /**
   * All-or-nothing: every compare holds and the fence is current, or nothing is
   * written. Rejects with MeshError invalidArgument for a malformed txn (nothing
   * queued) and unavailable when the database failed; after unavailable the outcome
   * is unknown (the connection may have died after COMMIT was sent), so re-read
   * before retrying a compare-and-swap.
   */
  txn(ops: TxnOp[], options?: TxnOptions): Promise<TxnResult>;
  get(key: string): Promise<{ revision: number; item: KeyValue | undefined }>;
  /** Keys starting with `prefix`, ordered by key, consistent at `revision`. */
  range(prefix: string): Promise<{ revision: number; items: KeyValue[] }>;
  changesSince(afterRevision: number, options?: ChangesSinceOptions): Promise<ChangesResult>;
  currentRevision(): Promise<number>;
  /**
   * Forgets changes with revision < beforeRevision (capped at current + 1); current
   * values stay. Resumes from below the answered compactedRevision must resync.
   */
  compact(beforeRevision: number): Promise<{ compactedRevision: number }>;
  /** Local wake-ups; replicas add remote ones through Coordination.wakeUps. */
  onChange(listener: ChangeListener): () => void;
  close(): Promise<void>;
}

/** What a durable adapter reports about each group commit (for metrics and tests). */
export interface ChangeLogObserver {
  batchCommitted(info: { txns: number; changes: number; durationMs: number }): void;
}
