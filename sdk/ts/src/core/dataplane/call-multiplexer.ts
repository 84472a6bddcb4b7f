import type { Clock } from "../clock.js";
import { MeshError } from "../mesh-error.js";
import { type CallFrame, CallFrame_Kind } from "../../gen/agentmesh/v1/agent.js";
import { errorFromStatus, refusedBeforeDelivery } from "./call-status.js";
import type { CallSignal } from "./call-signal.js";
import { CallTable } from "./call-table.js";
import { ChunkQueue } from "./chunk-queue.js";
import { type CallReply, cancelFrame, type OpenFrameFields, openFrame } from "./frames.js";
import type { TimerHandle, Timers } from "./timers.js";

export interface CallOptions {
  /** Absolute deadline, Unix epoch ms (the same number as Invocation.deadline_ms); 0 or absent = none. */
  deadlineMs?: number;
  /** Aborting gives the call up: CANCEL goes to the other side and the caller gets `cancelled`. */
  signal?: CallSignal;
}

export interface CallMultiplexerOptions {
  /** Puts a frame on the stream (a batcher, or a direct write). */
  send(frame: CallFrame): void;
  windowSize: number;
  windowFullMessage?: string;
  /** A streamed reply the consumer does not read is cancelled past this many unread chunks. */
  maxBufferedChunks: number;
  clock: Clock;
  timers: Timers;
  /** Called whenever the last call in flight leaves (a stream being retired waits for it). */
  onIdle?: () => void;
}

interface CallSink {
  data(payload: Buffer, contentType: string, frame: CallFrame): void;
  finish(): void;
  fail(error: Error): void;
}

interface OutboundCall {
  readonly callId: number;
  readonly sink: CallSink;
  timer: TimerHandle | undefined;
  detachSignal: (() => void) | undefined;
}

export const deadlineExceeded = (): MeshError => new MeshError("deadlineExceeded", "deadline exceeded");

function cancelled(signal: CallSignal): MeshError {
  return signal.reason instanceof MeshError ? signal.reason : new MeshError("cancelled", "call cancelled");
}

/**
 * The calling side of a multiplexed stream: call ids, the in-flight window,
 * deadlines and cancellation, and matching reply frames to waiting callers.
 * It knows nothing about which stream carries the frames, so the tunnel client
 * and the Attach hub share it.
 */
export class CallMultiplexer {
  private readonly table: CallTable<OutboundCall>;

  constructor(private readonly options: CallMultiplexerOptions) {
    this.table = new CallTable(options.windowSize, options.windowFullMessage);
  }

  get inFlight(): number {
    return this.table.size;
  }

  get windowSize(): number {
    return this.table.capacity;
  }

  unary(fields: OpenFrameFields, callOptions: CallOptions = {}): Promise<CallReply> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let contentType = "";
      let instanceId = "";
      let version = "";
      this.start(fields, false, callOptions, {
        data: (payload, type, frame) => {
          if (payload.length > 0) chunks.push(payload);
          if (contentType === "") contentType = type;
          if (frame.instanceId !== "") instanceId = frame.instanceId;
          if (frame.version !== "") version = frame.version;
        },
        finish: () =>
          resolve({
            payload: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks),
            contentType,
            ...(instanceId === "" ? {} : { instanceId }),
            ...(version === "" ? {} : { version }),
          }),
        fail: reject,
      });
    });
  }

  stream(fields: OpenFrameFields, callOptions: CallOptions = {}): AsyncIterableIterator<Buffer> {
    let call: OutboundCall | undefined;
    const queue = new ChunkQueue(() => {
      if (call !== undefined) this.abandon(call, new MeshError("cancelled", "call cancelled"));
    });
    call = this.start(fields, true, callOptions, {
      data: (payload) => {
        queue.push(payload);
        if (queue.buffered > this.options.maxBufferedChunks && call !== undefined) {
          this.abandon(call, new MeshError("overLimit", "stream reply buffer full"));
        }
      },
      finish: () => queue.end(),
      fail: (error) => queue.fail(error),
    });
    return queue;
  }

  /** Routes a reply frame to its call; frames for calls already given up are dropped. */
  receive(frame: CallFrame): void {
    const call = this.table.get(frame.callId);
    if (call === undefined) return;
    if (frame.kind === CallFrame_Kind.KIND_DATA) {
      call.sink.data(frame.payload, frame.contentType, frame);
      if (frame.end) {
        this.settle(call);
        call.sink.finish();
      }
    } else if (frame.kind === CallFrame_Kind.KIND_END) {
      this.settle(call);
      if (frame.statusCode === 0) call.sink.finish();
      else call.sink.fail(errorFromStatus(frame.statusCode, frame.statusMessage, frame.refusedBeforeDelivery));
    } else {
      return;
    }
    if (this.table.size === 0) this.options.onIdle?.();
  }

  /** Fails one call (a reply frame for it was refused): CANCEL goes out so the other side stops the work. Unknown ids are ignored. */
  refuse(callId: number, error: Error): void {
    const call = this.table.get(callId);
    if (call !== undefined) this.abandon(call, error);
  }

  /** Fails every call in flight at once, without CANCEL frames: the stream that carried them is gone. */
  failAll(error: Error): void {
    for (const call of this.table.takeAll()) {
      this.release(call);
      call.sink.fail(error);
    }
    this.options.onIdle?.();
  }

  /** Gives up every call in flight, with a CANCEL frame each: the stream stays, the peer should stop the work. */
  abandonAll(error: Error): void {
    for (const call of this.table.takeAll()) {
      this.release(call);
      this.options.send(cancelFrame(call.callId));
      call.sink.fail(error);
    }
    this.options.onIdle?.();
  }

  private start(fields: OpenFrameFields, streaming: boolean, callOptions: CallOptions, sink: CallSink): OutboundCall | undefined {
    const { signal, deadlineMs } = callOptions;
    if (signal?.aborted) {
      sink.fail(cancelled(signal));
      return undefined;
    }
    let remainingMs: number | undefined;
    if (deadlineMs !== undefined && deadlineMs > 0) {
      remainingMs = deadlineMs - this.options.clock.nowMs();
      if (remainingMs <= 0) {
        sink.fail(deadlineExceeded());
        return undefined;
      }
    }
    let call: OutboundCall;
    try {
      call = this.table.add((callId) => ({ callId, sink, timer: undefined, detachSignal: undefined }));
    } catch (error) {
      // The window was full: never sent, so the caller may try elsewhere.
      sink.fail(error instanceof MeshError ? refusedBeforeDelivery(error) : (error as Error));
      return undefined;
    }
    if (remainingMs !== undefined) {
      call.timer = this.options.timers.setTimeout(() => this.abandon(call, deadlineExceeded()), remainingMs);
    }
    if (signal !== undefined) {
      const onAbort = (): void => this.abandon(call, cancelled(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      call.detachSignal = () => signal.removeEventListener("abort", onAbort);
    }
    this.options.send(openFrame(call.callId, fields, streaming));
    return call;
  }

  /** The caller gives up: tell the other side so it stops the work, then fail locally. */
  private abandon(call: OutboundCall, error: Error): void {
    if (!this.table.delete(call.callId)) return;
    this.release(call);
    this.options.send(cancelFrame(call.callId));
    call.sink.fail(error);
    if (this.table.size === 0) this.options.onIdle?.();
  }

  private settle(call: OutboundCall): void {
    this.table.delete(call.callId);
    this.release(call);
  }

  private release(call: OutboundCall): void {
    if (call.timer !== undefined) this.options.timers.clearTimeout(call.timer);
    call.detachSignal?.();
  }
}
