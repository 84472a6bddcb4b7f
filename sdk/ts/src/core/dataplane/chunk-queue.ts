interface Waiter {
  resolve(result: IteratorResult<Buffer>): void;
  reject(error: Error): void;
}

/**
 * The reply chunks of one streamed call as an async iterator. Chunks received
 * before a failure are still delivered, then the failure is thrown once.
 * Leaving a for-await loop early calls `onAbandon` (the caller sends CANCEL).
 */
export class ChunkQueue implements AsyncIterableIterator<Buffer> {
  private readonly chunks: Buffer[] = [];
  private readonly waiters: Waiter[] = [];
  private finished = false;
  private failure: Error | undefined;

  constructor(private readonly onAbandon: () => void = () => {}) {}

  /** A queue that only throws `error`: how a call refused before it opened looks to a streaming caller. */
  static failed(error: Error): ChunkQueue {
    const queue = new ChunkQueue();
    queue.fail(error);
    return queue;
  }

  get buffered(): number {
    return this.chunks.length;
  }

  push(chunk: Buffer): void {
    if (this.finished) return;
    const waiter = this.waiters.shift();
    if (waiter !== undefined) waiter.resolve({ value: chunk, done: false });
    else this.chunks.push(chunk);
  }

  end(): void {
    if (this.finished) return;
    this.finished = true;
    for (const waiter of this.waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
  }

  fail(error: Error): void {
    if (this.finished) return;
    this.finished = true;
    const waiter = this.waiters.shift();
    if (waiter === undefined) {
      this.failure = error;
      return;
    }
    waiter.reject(error);
    for (const rest of this.waiters.splice(0)) rest.resolve({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<Buffer>> {
    const chunk = this.chunks.shift();
    if (chunk !== undefined) return Promise.resolve({ value: chunk, done: false });
    if (this.failure !== undefined) {
      const failure = this.failure;
      this.failure = undefined;
      return Promise.reject(failure);
    }
    if (this.finished) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  return(): Promise<IteratorResult<Buffer>> {
    if (!this.finished) {
      this.finished = true;
      this.chunks.length = 0;
      this.onAbandon();
    }
    this.failure = undefined;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this;
  }
}
