import type { ManualClock } from "../../sdk/ts/src/core/clock.js";
import type { TimerHandle, Timers } from "../../sdk/ts/src/core/dataplane/timers.js";

/** Timers driven by a ManualClock: advance() fires what became due. */
export class ManualTimers implements Timers {
  private readonly pending = new Map<number, { dueMs: number; callback: () => void }>();
  private nextHandle = 1;
  constructor(private readonly clock: ManualClock) {}
  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const handle = this.nextHandle++;
    this.pending.set(handle, { dueMs: this.clock.nowMs() + delayMs, callback });
    return handle;
  }
  clearTimeout(handle: TimerHandle): void {
    this.pending.delete(handle as number);
  }
  get armed(): number {
    return this.pending.size;
  }
  advance(ms: number): void {
    this.clock.advance(ms);
    for (const [handle, timer] of [...this.pending]) {
      if (timer.dueMs <= this.clock.nowMs()) {
        this.pending.delete(handle);
        timer.callback();
      }
    }
  }
}
