/**
 * What the data plane needs of an AbortSignal: is it aborted, why, and one
 * listener to call when it is. AbortSignal satisfies it; so does
 * {@link CallCancellation}, which costs a plain object instead of an EventTarget
 * (the profile of a sidecar at 1,000 calls/s showed AbortController/AbortSignal
 * creation and their listeners on every call).
 */
export interface CallSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** A one-shot cancellation for one call: `abort()` runs each listener once; later listeners are not called. */
export class CallCancellation implements CallSignal {
  private abortedFlag = false;
  private abortReason: unknown = undefined;
  // Most calls have one listener (their transport), or none.
  private listeners: Array<() => void> | undefined;

  get aborted(): boolean {
    return this.abortedFlag;
  }

  get reason(): unknown {
    return this.abortReason;
  }

  /** The signal to hand to the call; the cancellation is its own signal. */
  get signal(): CallSignal {
    return this;
  }

  addEventListener(_type: "abort", listener: () => void): void {
    if (this.abortedFlag) return;
    (this.listeners ??= []).push(listener);
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    const listeners = this.listeners;
    if (listeners === undefined) return;
    const index = listeners.indexOf(listener);
    if (index >= 0) listeners.splice(index, 1);
  }

  abort(reason?: unknown): void {
    if (this.abortedFlag) return;
    this.abortedFlag = true;
    this.abortReason = reason;
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners !== undefined) for (const listener of listeners) listener();
  }
}
