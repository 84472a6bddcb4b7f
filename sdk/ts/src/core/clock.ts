/** Wall-clock time source; injected so tests can drive time. */
export interface Clock {
  nowMs(): number;
}

/** The real clock (Date.now); only a program's main should need it. */
export const systemClock: Clock = { nowMs: () => Date.now() };

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  constructor(private currentMs = 1_700_000_000_000) {}
  nowMs(): number {
    return this.currentMs;
  }
  advance(ms: number): void {
    this.currentMs += ms;
  }
}

/** Random source, injected so selection and jitter are reproducible in tests. */
export type RandomSource = () => number;
