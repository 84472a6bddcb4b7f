import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { RestartIntensity } from "../../sidecar/supervisor/restart-intensity.js";

describe("RestartIntensity", () => {
  it("admits maxRestarts restarts within the window and refuses one more", () => {
    const clock = new ManualClock();
    const intensity = new RestartIntensity({ maxRestarts: 3, windowMs: 10_000 }, clock);

    const verdicts = [1, 2, 3, 4].map(() => {
      clock.advance(1_000);
      return intensity.admitRestart();
    });

    expect(verdicts).toEqual([true, true, true, false]);
  });

  it("forgets restarts older than the window", () => {
    const clock = new ManualClock();
    const intensity = new RestartIntensity({ maxRestarts: 2, windowMs: 10_000 }, clock);
    intensity.admitRestart();
    intensity.admitRestart();

    clock.advance(10_000);

    expect(intensity.restartsInWindow()).toBe(0);
    expect(intensity.admitRestart()).toBe(true);
  });

  it("counts a restart exactly windowMs old as outside the window, one ms younger as inside", () => {
    const clock = new ManualClock();
    const intensity = new RestartIntensity({ maxRestarts: 1, windowMs: 5_000 }, clock);
    intensity.admitRestart();

    clock.advance(4_999);
    expect(intensity.restartsInWindow()).toBe(1);
    clock.advance(1);
    expect(intensity.restartsInWindow()).toBe(0);
  });

  it("with maxRestarts 0 gives up on the first restart", () => {
    const intensity = new RestartIntensity({ maxRestarts: 0, windowMs: 1_000 }, new ManualClock());

    expect(intensity.admitRestart()).toBe(false);
  });

  it("keeps refusing while the loop goes on, and admits again after reset", () => {
    const clock = new ManualClock();
    const intensity = new RestartIntensity({ maxRestarts: 1, windowMs: 60_000 }, clock);
    expect(intensity.admitRestart()).toBe(true);
    expect(intensity.admitRestart()).toBe(false);
    expect(intensity.admitRestart()).toBe(false);

    intensity.reset();

    expect(intensity.admitRestart()).toBe(true);
  });

  it("tolerates a slow steady crash rate below the intensity", () => {
    const clock = new ManualClock();
    const intensity = new RestartIntensity({ maxRestarts: 2, windowMs: 10_000 }, clock);

    const verdicts = Array.from({ length: 20 }, () => {
      clock.advance(5_001);
      return intensity.admitRestart();
    });

    expect(verdicts.every(Boolean)).toBe(true);
  });
});
