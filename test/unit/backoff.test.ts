// The one backoff (sdk/ts/src/core/backoff.ts) behind reconnects (SDK, sidecar Watch,
// certificate renewal, alert webhooks), data-plane tunnels and supervisor restarts:
// each caller's schedule, with the random source injected.
import { describe, expect, it } from "vitest";
import { Backoff, type BackoffOptions, backoffDelayMs, defaultReconnectBackoff } from "../../sdk/ts/src/core/backoff.js";
import { defaultTunnelBackoff } from "../../sdk/ts/src/core/dataplane/index.js";

/** Random source that always returns just under 1, so each delay sits at its ceiling. */
const almostOne = (): number => 0.999_999;

describe("full jitter (supervisor restarts)", () => {
  const options: BackoffOptions = { initialMs: 100, maxMs: 1_000, multiplier: 2, jitter: "full", resetAfterRunMs: 10_000 };

  it("doubles the ceiling per attempt up to maxMs", () => {
    const backoff = new Backoff(options, almostOne);
    expect(Array.from({ length: 7 }, () => backoff.nextDelayMs(0))).toEqual([99, 199, 399, 799, 999, 999, 999]);
  });

  it.each([
    [0, 0],
    [0.25, 25],
    [0.5, 50],
  ])("draws the first delay uniformly from [0, initialMs) (random %s -> %s ms)", (random, expectedMs) => {
    expect(new Backoff(options, () => random).nextDelayMs(0)).toBe(expectedMs);
  });

  it("applies the jitter to the current ceiling", () => {
    const backoff = new Backoff(options, () => 0.5);
    expect([backoff.nextDelayMs(0), backoff.nextDelayMs(0), backoff.nextDelayMs(0)]).toEqual([50, 100, 200]);
  });

  it("starts over after a run of resetAfterRunMs", () => {
    const backoff = new Backoff(options, almostOne);
    for (let attempt = 0; attempt < 3; attempt += 1) backoff.nextDelayMs(0);
    expect(backoff.nextDelayMs(9_999)).toBe(799);
    expect(backoff.nextDelayMs(10_000)).toBe(99);
    expect(backoff.attempts()).toBe(1);
  });

  it("stays finite and capped after very many attempts", () => {
    const backoff = new Backoff(options, almostOne);
    let lastMs = 0;
    for (let attempt = 0; attempt < 2_000; attempt += 1) lastMs = backoff.nextDelayMs(0);
    expect(lastMs).toBe(999);
  });
});

describe("equal jitter (reconnects, the default)", () => {
  it.each([
    [0, 0, 50],
    [0, 1, 100],
    [2, 0.5, 300],
    [6, 1, 5_000],
    [6, 0, 2_500],
  ])("attempt %s with random %s waits %s ms", (attempt, random, expectedMs) => {
    expect(backoffDelayMs(attempt, defaultReconnectBackoff, () => random)).toBe(expectedMs);
  });

  it("a run never resets it unless asked; reset() does", () => {
    const backoff = new Backoff({ initialMs: 200, maxMs: 30_000, multiplier: 2 }, () => 1);
    expect([backoff.nextDelayMs(), backoff.nextDelayMs(1e9), backoff.nextDelayMs()]).toEqual([200, 400, 800]);
    backoff.reset();
    expect(backoff.attempts()).toBe(0);
    expect(backoff.nextDelayMs()).toBe(200);
  });
});

describe("proportional jitter (data-plane tunnels)", () => {
  const options: BackoffOptions = { ...defaultTunnelBackoff, initialMs: 100, maxMs: 1_000 };
  it.each([
    [0, 0.5, 100],
    [1, 0.5, 200],
    [3, 0.5, 800],
    [4, 0.5, 1_000],
    [1_000, 0.5, 1_000],
    [0, 0, 80],
    [0, 1, 120],
    [10, 1, 1_200],
  ])("attempt %s with random %s waits %s ms", (attempt, random, expectedMs) => {
    expect(backoffDelayMs(attempt, options, () => random)).toBe(expectedMs);
  });

  it("the tunnel default spreads ±20 % from 100 ms to 5 s", () => {
    expect(defaultTunnelBackoff).toEqual({ initialMs: 100, maxMs: 5_000, multiplier: 2, jitter: { ratio: 0.2 } });
  });
});
