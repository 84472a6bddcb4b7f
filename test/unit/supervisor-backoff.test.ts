import { describe, expect, it } from "vitest";
import { Backoff } from "../../sidecar/supervisor/backoff.js";

const options = { initialMs: 100, maxMs: 1_000, resetAfterUptimeMs: 10_000 };

/** Random source that always returns just under 1, so each delay sits at its ceiling. */
const almostOne = (): number => 0.999_999;

describe("Backoff", () => {
  it("doubles the ceiling per attempt up to maxMs", () => {
    const backoff = new Backoff(options, almostOne);

    const delaysMs = Array.from({ length: 7 }, () => backoff.nextDelayMs(0));

    expect(delaysMs).toEqual([99, 199, 399, 799, 999, 999, 999]);
  });

  it.each([
    [0, 0],
    [0.25, 25],
    [0.5, 50],
  ])("draws the first delay uniformly from [0, initialMs) (random %s -> %s ms)", (random, expectedMs) => {
    const backoff = new Backoff(options, () => random);

    expect(backoff.nextDelayMs(0)).toBe(expectedMs);
  });

  it("applies the jitter to the current ceiling", () => {
    const backoff = new Backoff(options, () => 0.5);

    expect([backoff.nextDelayMs(0), backoff.nextDelayMs(0), backoff.nextDelayMs(0)]).toEqual([50, 100, 200]);
  });

  it("starts over after the process stayed up for resetAfterUptimeMs", () => {
    const backoff = new Backoff(options, almostOne);
    backoff.nextDelayMs(0);
    backoff.nextDelayMs(0);
    backoff.nextDelayMs(0);

    expect(backoff.nextDelayMs(9_999)).toBe(799);
    expect(backoff.nextDelayMs(10_000)).toBe(99);
    expect(backoff.attempts()).toBe(1);
  });

  it("reset() starts over", () => {
    const backoff = new Backoff(options, almostOne);
    backoff.nextDelayMs(0);
    backoff.nextDelayMs(0);

    backoff.reset();

    expect(backoff.attempts()).toBe(0);
    expect(backoff.nextDelayMs(0)).toBe(99);
  });

  it("stays finite and capped after very many attempts", () => {
    const backoff = new Backoff(options, almostOne);
    let lastMs = 0;
    for (let attempt = 0; attempt < 2_000; attempt += 1) lastMs = backoff.nextDelayMs(0);

    expect(lastMs).toBe(999);
  });
});
