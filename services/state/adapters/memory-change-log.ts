import { randomUUID } from "node:crypto";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { ChangeListeners, changesPage, copyBytes, resyncReason, validLimit } from "../change-log-support.js";
import { prefixEnd, validateAfterRevision, validatePrefix, validateTxn } from "../keys.js";
import type { Change, ChangeListener, ChangeLog, ChangesResult, ChangesSinceOptions, KeyValue, TxnOp, TxnOptions, TxnResult } from "../ports.js";
import { type KeyRevisions, namedFences, namedKeys, planBatch } from "../txn-planner.js";

export interface MemoryChangeLogOptions {
  /** Defaults to a random UUID, as a new durable store would get. */
  epoch?: string;
}

/**
 * The reference ChangeLog: process memory, each txn decided on its own by the same
 * planner the durable adapters use. For tests and as the contract's yardstick.
 */
export class MemoryChangeLog implements ChangeLog {
  readonly epoch: string;
  private readonly keys = new Map<string, KeyValue>();
  private readonly fences = new Map<string, number>();
  /** Retained changes, oldest first; compaction drops from the front. */
  private changes: Change[] = [];
  private revision = 0;
  private compactedRevision = 0;
  private readonly listeners = new ChangeListeners();
  private closed = false;

  constructor(options: MemoryChangeLogOptions = {}) {
    this.epoch = options.epoch ?? randomUUID();
  }

  async txn(ops: TxnOp[], options: TxnOptions = {}): Promise<TxnResult> {
    this.ensureOpen();
    validateTxn(ops, options.fence);
    const batch = [{ ops: ops.map((op) => (op.type === "put" ? { ...op, value: copyBytes(op.value) } : { ...op })), ...(options.fence ? { fence: { ...options.fence } } : {}) }];
    const keys = new Map<string, KeyRevisions | undefined>(namedKeys(batch).map((key) => [key, this.keys.get(key)]));
    const fences = new Map(namedFences(batch).flatMap((name) => (this.fences.has(name) ? [[name, this.fences.get(name) as number]] : [])));
    const plan = planBatch(batch, { revision: this.revision, keys, fences });
    for (const [key, final] of plan.finalKeys) {
      if (final) this.keys.set(key, { key, ...final });
      else this.keys.delete(key);
    }
    for (const [name, token] of plan.raisedFences) this.fences.set(name, token);
    this.changes.push(...plan.changes);
    const advanced = plan.revision > this.revision;
    this.revision = plan.revision;
    if (advanced) this.listeners.notify(this.revision);
    return plan.results[0] as TxnResult;
  }

  async get(key: string): Promise<{ revision: number; item: KeyValue | undefined }> {
    this.ensureOpen();
    const item = this.keys.get(key);
    return { revision: this.revision, item: item && copyKeyValue(item) };
  }

  async range(prefix: string): Promise<{ revision: number; items: KeyValue[] }> {
    this.ensureOpen();
    validatePrefix(prefix);
    const end = prefixEnd(prefix);
    const items = [...this.keys.values()]
      .filter((item) => item.key >= prefix && item.key < end)
      .sort((left, right) => (left.key < right.key ? -1 : left.key > right.key ? 1 : 0))
      .map(copyKeyValue);
    return { revision: this.revision, items };
  }

  async changesSince(afterRevision: number, options: ChangesSinceOptions = {}): Promise<ChangesResult> {
    this.ensureOpen();
    validateAfterRevision(afterRevision);
    const limit = validLimit(options.limit);
    const reason = resyncReason(afterRevision, options.epoch, { epoch: this.epoch, revision: this.revision, compactedRevision: this.compactedRevision });
    if (reason) return { kind: "resync", epoch: this.epoch, reason, currentRevision: this.revision, compactedRevision: this.compactedRevision };
    const start = this.changes.findIndex((change) => change.revision > afterRevision);
    const page: Change[] = [];
    if (start !== -1) {
      for (let index = start; index < this.changes.length; index += 1) {
        const change = this.changes[index] as Change;
        // Never cut a transaction in two: a follower must not apply half of one.
        if (page.length >= limit && change.revision !== (page[page.length - 1] as Change).revision) break;
        page.push({ ...change, value: change.value && copyBytes(change.value) });
      }
    }
    return changesPage(this.epoch, afterRevision, this.revision, page);
  }

  async currentRevision(): Promise<number> {
    this.ensureOpen();
    return this.revision;
  }

  async compact(beforeRevision: number): Promise<{ compactedRevision: number }> {
    this.ensureOpen();
    validateAfterRevision(beforeRevision);
    const target = Math.min(beforeRevision, this.revision + 1) - 1;
    if (target > this.compactedRevision) {
      this.compactedRevision = target;
      this.changes = this.changes.filter((change) => change.revision > target);
    }
    return { compactedRevision: this.compactedRevision };
  }

  onChange(listener: ChangeListener): () => void {
    return this.listeners.add(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
  }

  private ensureOpen(): void {
    if (this.closed) throw new MeshError("unavailable", "state store closed");
  }
}

function copyKeyValue(item: KeyValue): KeyValue {
  return { ...item, value: copyBytes(item.value) };
}
