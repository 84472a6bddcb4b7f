import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import type { TimerHandle, Timers } from "../../sdk/ts/src/core/dataplane/timers.js";

interface Pending {
  id: number;
  dueAtMs: number;
  callback: () => void;
}

/**
 * Timers and a clock a test moves by hand: `advance(ms)` moves the clock and runs,
 * in order, every timer that fell due (timers set by those callbacks included).
 */
export class SteppingTimers implements Timers {
  readonly clock: ManualClock;
  private pending: Pending[] = [];
  private nextId = 1;

  constructor(clock = new ManualClock()) {
    this.clock = clock;
  }

  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const timer = { id: this.nextId, dueAtMs: this.clock.nowMs() + Math.max(0, delayMs), callback };
    this.nextId += 1;
    this.pending.push(timer);
    return timer.id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.pending = this.pending.filter((timer) => timer.id !== handle);
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  /** Moves time forward by `ms`, firing due timers one by one at their own time. */
  advance(ms: number): void {
    const targetMs = this.clock.nowMs() + ms;
    for (;;) {
      const due = this.pending.filter((timer) => timer.dueAtMs <= targetMs).sort((left, right) => left.dueAtMs - right.dueAtMs || left.id - right.id)[0];
      if (!due) break;
      this.pending = this.pending.filter((timer) => timer !== due);
      this.clock.advance(Math.max(0, due.dueAtMs - this.clock.nowMs()));
      due.callback();
    }
    this.clock.advance(Math.max(0, targetMs - this.clock.nowMs()));
  }
}
