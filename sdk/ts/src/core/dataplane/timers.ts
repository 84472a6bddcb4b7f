/** Opaque handle returned by `Timers.setTimeout`. */
export type TimerHandle = unknown;

/** Timer source, injected so reconnect backoff and deadlines can be driven by tests. */
export interface Timers {
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const systemTimers: Timers = {
  setTimeout: (callback, delayMs) => setTimeout(callback, delayMs),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};
