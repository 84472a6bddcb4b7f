import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { systemClock } from "../../sdk/ts/src/core/clock.js";
import { systemTimers } from "../../sdk/ts/src/core/dataplane/timers.js";
import { livenessTiming } from "../../sdk/ts/src/core/liveness.js";
import type { HealthAnswer, HealthChecker } from "../../sidecar/supervisor/health-probe.js";
import { HealthWatch, type WatchedHealth } from "../../sidecar/supervisor/health-watch.js";

/** A plain agent's health port: answers as told, or (hang) only fails at the check's deadline, like grpc-js would. */
class FakeChecker implements HealthChecker {
  mode: "serving" | "not-serving" | "hang" = "serving";
  checks = 0;
  inFlight = 0;
  maxInFlight = 0;
  closed = false;
  readonly deadlines: number[] = [];

  check(_service: string, deadlineMs: number): Promise<HealthAnswer> {
    this.checks += 1;
    this.deadlines.push(deadlineMs);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const mode = this.mode;
    return new Promise((resolve) => {
      const answer = (value: HealthAnswer): void => {
        this.inFlight -= 1;
        resolve(value);
      };
      if (mode === "hang") setTimeout(() => answer("no-answer"), deadlineMs);
      else void Promise.resolve().then(() => answer(mode));
    });
  }

  close(): void {
    this.closed = true;
  }
}

const timing = livenessTiming(1000);
let watch: HealthWatch | undefined;

function start(checker: FakeChecker): Array<[WatchedHealth, number]> {
  const changes: Array<[WatchedHealth, number]> = [];
  watch = new HealthWatch({ checker, service: "", timing, clock: systemClock, timers: systemTimers, onChange: (health, silentMs) => changes.push([health, silentMs]) });
  watch.start();
  return changes;
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  watch?.stop();
  watch = undefined;
  vi.useRealTimers();
});

describe("HealthWatch (grpc.health.v1 checks after READY, fake timers)", () => {
  it("checks every half interval with that as the deadline, and reports nothing while the agent answers SERVING", async () => {
    const checker = new FakeChecker();
    const changes = start(checker);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(checker.checks).toBe(20);
    expect(new Set(checker.deadlines)).toEqual(new Set([timing.probeIntervalMs]));
    expect(changes).toEqual([]);
  });

  it("finds an agent hung after 1.5 intervals without an answer, never with two checks at once, and serving again at its next answer", async () => {
    const checker = new FakeChecker();
    const changes = start(checker);
    await vi.advanceTimersByTimeAsync(2000);
    checker.mode = "hang";
    await vi.advanceTimersByTimeAsync(1499);
    expect(changes).toEqual([]);
    await vi.advanceTimersByTimeAsync(500);
    expect(changes).toEqual([["hung", 1500]]);
    await vi.advanceTimersByTimeAsync(5000);
    expect(changes).toHaveLength(1);
    expect(checker.maxInFlight).toBe(1);

    checker.mode = "serving";
    await vi.advanceTimersByTimeAsync(1000);
    expect(changes).toEqual([
      ["hung", 1500],
      ["serving", 0],
    ]);
  });

  it("reports NOT_SERVING at the first such answer (the agent answers, so it is not hung) and SERVING when it comes back", async () => {
    const checker = new FakeChecker();
    const changes = start(checker);
    checker.mode = "not-serving";
    await vi.advanceTimersByTimeAsync(501);
    expect(changes).toEqual([["not-serving", 0]]);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(changes).toHaveLength(1);
    checker.mode = "serving";
    await vi.advanceTimersByTimeAsync(1000);
    expect(changes).toEqual([
      ["not-serving", 0],
      ["serving", 0],
    ]);
  });

  it("stops checking and closes its channel when stopped", async () => {
    const checker = new FakeChecker();
    start(checker);
    await vi.advanceTimersByTimeAsync(1000);
    const checks = checker.checks;
    watch?.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(checker.checks).toBe(checks);
    expect(checker.closed).toBe(true);
  });
});
