import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { TxnResult } from "./ports.js";
import type { PendingTxn } from "./txn-planner.js";

// Group commit: transactions submitted in the same event-loop turn (or within
// windowMs) are decided and written in one database transaction, one fsync. While
// a batch is being written the next one accumulates, so under load batches grow by
// themselves and at idle a lone write waits for nothing but one setImmediate.

export type CommitBatch = (batch: PendingTxn[]) => Promise<TxnResult[]>;

export interface GroupCommitOptions {
  /** Extra wait to collect a batch; 0 = only what arrives in the same turn. */
  windowMs?: number;
  /** Bounds one database transaction (its duration and the rows it holds). */
  maxBatchOps?: number;
}

interface Queued {
  txn: PendingTxn;
  resolve: (result: TxnResult) => void;
  reject: (error: unknown) => void;
}

export class GroupCommitter {
  private queue: Queued[] = [];
  private running: Promise<void> | undefined;
  private closed = false;
  private readonly windowMs: number;
  private readonly maxBatchOps: number;

  constructor(
    private readonly commit: CommitBatch,
    options: GroupCommitOptions = {},
  ) {
    this.windowMs = options.windowMs ?? 0;
    this.maxBatchOps = options.maxBatchOps ?? 10_000;
  }

  submit(txn: PendingTxn): Promise<TxnResult> {
    if (this.closed) return Promise.reject(new MeshError("unavailable", "state store closed"));
    return new Promise<TxnResult>((resolve, reject) => {
      this.queue.push({ txn, resolve, reject });
      this.running ??= this.run();
    });
  }

  /** Refuses new transactions and waits for the queued ones. */
  async close(): Promise<void> {
    this.closed = true;
    await this.running;
  }

  private async run(): Promise<void> {
    await (this.windowMs > 0 ? new Promise((resolve) => setTimeout(resolve, this.windowMs)) : new Promise((resolve) => setImmediate(resolve)));
    while (this.queue.length > 0) {
      const batch = this.takeBatch();
      try {
        const results = await this.commit(batch.map((item) => item.txn));
        batch.forEach((item, index) => {
          const result = results[index];
          if (result) item.resolve(result);
          else item.reject(new Error("group commit answered fewer results than transactions"));
        });
      } catch (error) {
        for (const item of batch) item.reject(error);
      }
    }
    this.running = undefined;
  }

  private takeBatch(): Queued[] {
    let ops = 0;
    let count = 0;
    for (const item of this.queue) {
      // Always take at least one, however large: validation already bounds a txn.
      if (count > 0 && ops + item.txn.ops.length > this.maxBatchOps) break;
      ops += item.txn.ops.length;
      count += 1;
    }
    return this.queue.splice(0, count);
  }
}
