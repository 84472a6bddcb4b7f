import type { CallFrame } from "../../gen/agentmesh/v1/agent.js";

/** The writable half of a gRPC stream, as far as the batcher needs it. */
export interface FrameStream<M> {
  write(message: M): boolean;
  once(event: "drain", listener: () => void): unknown;
}

export interface FrameBatcherOptions {
  maxFramesPerMessage?: number;
  /**
   * Estimated bytes per message; keeps a burst of large frames well under grpc-js'
   * default 4 MiB receive limit on the other side.
   */
  maxBytesPerMessage?: number;
  /** When to flush frames pushed now; defaults to setImmediate so everything ready in this turn of the loop goes together. */
  schedule?: (flush: () => void) => void;
}

const defaultMaxFramesPerMessage = 1024;
const defaultMaxBytesPerMessage = 1024 * 1024;
// Tag, call id, kind, flags and status of a frame, roughly: only used to split batches.
const frameOverheadBytes = 32;

/**
 * Coalesces the frames of many calls written in the same turn of the event loop
 * into one stream message. Per-message cost (HTTP/2 DATA frame, serialization
 * call, write syscall) dominates at 1 KB payloads, so batching is what keeps
 * the tunnel's CPU per call low (DESIGN §5.1).
 *
 * Backpressure: when the stream's write() returns false the batcher stops
 * writing and keeps frames queued until 'drain'; producers that can wait (a
 * streamed reply) await `whenWritable()`. The queue of unary frames stays
 * bounded by the call window.
 */
export class FrameBatcher<M> {
  private pending: CallFrame[] = [];
  private scheduled = false;
  private blocked = false;
  private closed = false;
  private drainWaiters: Array<() => void> = [];
  private readonly maxFramesPerMessage: number;
  private readonly maxBytesPerMessage: number;
  private readonly schedule: (flush: () => void) => void;
  private messages = 0;
  private frames = 0;

  constructor(
    private readonly stream: FrameStream<M>,
    private readonly wrap: (frames: CallFrame[]) => M,
    options: FrameBatcherOptions = {},
  ) {
    this.maxFramesPerMessage = options.maxFramesPerMessage ?? defaultMaxFramesPerMessage;
    this.maxBytesPerMessage = options.maxBytesPerMessage ?? defaultMaxBytesPerMessage;
    this.schedule = options.schedule ?? ((flush) => setImmediate(flush));
  }

  /** Queues a frame for the next flush; frames pushed after close() are dropped (their stream is gone). */
  push(frame: CallFrame): void {
    if (this.closed) return;
    this.pending.push(frame);
    if (!this.scheduled && !this.blocked) {
      this.scheduled = true;
      this.schedule(() => this.flush());
    }
  }

  /** True while the stream has asked us to wait for 'drain'. */
  get isBlocked(): boolean {
    return this.blocked;
  }

  get queuedFrames(): number {
    return this.pending.length;
  }

  /** Messages and frames written so far (the ratio is the batching gain). */
  get stats(): { messagesWritten: number; framesWritten: number } {
    return { messagesWritten: this.messages, framesWritten: this.frames };
  }

  /** Resolves at once when writable, else at the next 'drain' (or close). */
  whenWritable(): Promise<void> {
    if (!this.blocked || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Writes everything queued now, as as few messages as the limits allow. */
  flush(): void {
    this.scheduled = false;
    while (this.pending.length > 0 && !this.blocked && !this.closed) {
      const batch = this.takeBatch();
      this.messages += 1;
      this.frames += batch.length;
      if (!this.stream.write(this.wrap(batch))) {
        this.blocked = true;
        this.stream.once("drain", () => this.onDrain());
      }
    }
  }

  /** Drops queued frames and releases waiters; used when the stream is gone. */
  close(): void {
    this.closed = true;
    this.pending = [];
    this.releaseWaiters();
  }

  private takeBatch(): CallFrame[] {
    let count = 0;
    let bytes = 0;
    for (const frame of this.pending) {
      const frameBytes = estimateFrameBytes(frame);
      // A single oversized frame still goes, alone: splitting it is not ours to do.
      if (count > 0 && (count >= this.maxFramesPerMessage || bytes + frameBytes > this.maxBytesPerMessage)) break;
      count += 1;
      bytes += frameBytes;
    }
    if (count === this.pending.length) {
      const batch = this.pending;
      this.pending = [];
      return batch;
    }
    return this.pending.splice(0, count);
  }

  private onDrain(): void {
    this.blocked = false;
    this.flush();
    if (!this.blocked) this.releaseWaiters();
  }

  private releaseWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

export function estimateFrameBytes(frame: CallFrame): number {
  let bytes = frameOverheadBytes + frame.payload.length + frame.instanceId.length + frame.statusMessage.length;
  const envelope = frame.envelope;
  if (envelope !== undefined) {
    bytes += envelope.payload.length + envelope.signature.length + envelope.nonce.length + 128;
    for (const certificate of envelope.signerChain) bytes += certificate.length;
  }
  if (frame.invocation !== undefined) bytes += frame.invocation.payload.length + 128;
  return bytes;
}
