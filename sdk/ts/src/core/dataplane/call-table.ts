import { MeshError, invalidArgument } from "../mesh-error.js";

/**
 * Call ids and the bounded in-flight window of one multiplexed stream.
 * Ids increase and are never reused for the life of the table, so a late frame
 * for a call that was already given up can never be mistaken for a newer call
 * (2^53 ids last centuries at a million calls per second).
 */
export class CallTable<T> {
  private nextCallId = 1;
  private readonly calls = new Map<number, T>();

  constructor(
    readonly capacity: number,
    private readonly fullMessage = "tunnel window full",
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw invalidArgument("window size must be a positive integer");
  }

  get size(): number {
    return this.calls.size;
  }

  get full(): boolean {
    return this.calls.size >= this.capacity;
  }

  /** Reserves the next call id for the entry `create` builds; throws overLimit when the window is full. */
  add(create: (callId: number) => T): T {
    if (this.full) throw new MeshError("overLimit", this.fullMessage);
    const callId = this.nextCallId;
    this.nextCallId += 1;
    const entry = create(callId);
    this.calls.set(callId, entry);
    return entry;
  }

  get(callId: number): T | undefined {
    return this.calls.get(callId);
  }

  /** Frees the slot; false when the call had already left the table. */
  delete(callId: number): boolean {
    return this.calls.delete(callId);
  }

  /** Empties the table and returns what was in flight (a broken stream fails them all at once). */
  takeAll(): T[] {
    const entries = [...this.calls.values()];
    this.calls.clear();
    return entries;
  }
}
