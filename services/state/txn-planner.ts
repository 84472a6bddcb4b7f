import type { Change, FencingToken, TxnOp, TxnResult } from "./ports.js";

// The one definition of transaction semantics, shared by every adapter: a group
// commit hands a batch of transactions and the current state of the keys they name;
// this decides each one in order, as if they ran one after another. A transaction
// whose compare or fence fails is refused alone; the others still commit.

export interface PendingTxn {
  ops: TxnOp[];
  fence?: FencingToken;
}

export interface KeyRevisions {
  modRevision: number;
  createRevision: number;
}

export interface BatchInput {
  /** Current revision of the log when the batch starts. */
  revision: number;
  /** Every key the batch names, with its current revisions (absent keys map to undefined). */
  keys: Map<string, KeyRevisions | undefined>;
  /** Highest fencing token seen per name, for the names the batch carries. */
  fences: Map<string, number>;
}

/** What a key holds after the batch; undefined when the batch deleted it. */
export interface FinalKey {
  value: Uint8Array;
  modRevision: number;
  createRevision: number;
}

export interface BatchPlan {
  results: TxnResult[];
  /** Changes to append, in revision then op order. */
  changes: Change[];
  /** Keys the batch changed, with their final state. */
  finalKeys: Map<string, FinalKey | undefined>;
  /** Fence names whose highest token rose, with the new token. */
  raisedFences: Map<string, number>;
  /** Revision of the log after the batch. */
  revision: number;
}

export function namedKeys(batch: PendingTxn[]): string[] {
  const keys = new Set<string>();
  for (const txn of batch) for (const op of txn.ops) keys.add(op.key);
  return [...keys];
}

export function namedFences(batch: PendingTxn[]): string[] {
  const names = new Set<string>();
  for (const txn of batch) if (txn.fence) names.add(txn.fence.name);
  return [...names];
}

export function planBatch(batch: PendingTxn[], input: BatchInput): BatchPlan {
  const keys = new Map(input.keys);
  const fences = new Map(input.fences);
  const results: TxnResult[] = [];
  const changes: Change[] = [];
  const finalKeys = new Map<string, FinalKey | undefined>();
  const raisedFences = new Map<string, number>();
  let revision = input.revision;

  for (const txn of batch) {
    const refusal = check(txn, keys, fences);
    if (refusal) {
      results.push(refusal);
      continue;
    }
    if (txn.fence) {
      const highest = fences.get(txn.fence.name) ?? 0;
      if (txn.fence.token > highest) {
        fences.set(txn.fence.name, txn.fence.token);
        raisedFences.set(txn.fence.name, txn.fence.token);
      }
    }
    const previousRevisions = txn.ops.map((op) => keys.get(op.key)?.modRevision ?? 0);
    // Deleting an absent key changes nothing; a txn of only those takes no revision.
    const changing = txn.ops.filter((op) => op.type === "put" || keys.get(op.key) !== undefined);
    if (changing.length === 0) {
      results.push({ ok: true, revision, previousRevisions });
      continue;
    }
    revision += 1;
    for (const op of changing) {
      const current = keys.get(op.key);
      const previousRevision = current?.modRevision ?? 0;
      if (op.type === "put") {
        const next = { modRevision: revision, createRevision: current?.createRevision ?? revision };
        keys.set(op.key, next);
        finalKeys.set(op.key, { value: op.value, ...next });
        changes.push({ revision, key: op.key, value: op.value, previousRevision });
      } else {
        keys.set(op.key, undefined);
        finalKeys.set(op.key, undefined);
        changes.push({ revision, key: op.key, value: undefined, previousRevision });
      }
    }
    results.push({ ok: true, revision, previousRevisions });
  }
  return { results, changes, finalKeys, raisedFences, revision };
}

function check(txn: PendingTxn, keys: Map<string, KeyRevisions | undefined>, fences: Map<string, number>): TxnResult | undefined {
  if (txn.fence) {
    const highest = fences.get(txn.fence.name) ?? 0;
    if (highest > txn.fence.token) return { ok: false, reason: "fenced", fence: txn.fence.name, highestToken: highest };
  }
  for (const op of txn.ops) {
    if (op.expectRevision === undefined) continue;
    const actualRevision = keys.get(op.key)?.modRevision ?? 0;
    if (actualRevision !== op.expectRevision) return { ok: false, reason: "conflict", key: op.key, actualRevision };
  }
  return undefined;
}
