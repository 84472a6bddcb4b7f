import type { CallSignal } from "./call-signal.js";
import type { CallReply } from "./frames.js";

export interface DispatchOptions {
  /** Aborts when the caller cancels, its deadline passes, or the stream that carried the call is gone. */
  signal: CallSignal;
  /** The caller asked for a stream of chunks rather than one reply. */
  streaming: boolean;
}

/** A unary reply, or the chunks of a streamed one. */
export type DispatchOutcome = Promise<CallReply> | AsyncIterable<Buffer>;

export function isAsyncIterable(value: unknown): value is AsyncIterable<Buffer> {
  return typeof value === "object" && value !== null && Symbol.asyncIterator in value;
}

/** Joins a chunked reply into one (an agent that streamed to a unary caller). */
export async function collectChunks(chunks: AsyncIterable<Buffer>, signal: CallSignal): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) {
    if (signal.aborted) break;
    parts.push(chunk);
  }
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}
