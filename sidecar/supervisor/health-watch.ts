import type { Clock } from "../../sdk/ts/src/core/clock.js";
import type { Timers } from "../../sdk/ts/src/core/dataplane/timers.js";
import { type LivenessTiming, LivenessTracker } from "../../sdk/ts/src/core/liveness.js";
import type { HealthChecker } from "./health-probe.js";

/** What the watch concludes about a running plain agent. */
export type WatchedHealth = "serving" | "not-serving" | "hung";

export interface HealthWatchOptions {
  checker: HealthChecker;
  /** grpc.health.v1 service name; "" = the server as a whole. */
  service: string;
  timing: LivenessTiming;
  clock: Clock;
  timers: Timers;
  /** Called on every change of verdict; `silentMs` is the time without an answer. */
  onChange(health: WatchedHealth, silentMs: number): void;
}

/**
 * Keeps checking a READY plain agent's grpc.health.v1 (the same rule as Attach
 * pings, sdk/ts/src/core/liveness.ts): one Check per probe tick, each with the
 * tick as its deadline, never two at once. An answer of any kind proves the
 * agent responds; SERVING puts it back in routing, anything else keeps it out.
 * No answer for the deadline makes it hung (the supervisor's restart bound
 * starts then).
 */
export class HealthWatch {
  private readonly tracker: LivenessTracker;
  private health: WatchedHealth = "serving";
  private checking = false;
  private stopped = false;
  private timer: unknown;

  constructor(private readonly options: HealthWatchOptions) {
    this.tracker = new LivenessTracker(options.timing, options.clock.nowMs());
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    this.options.timers.clearTimeout(this.timer);
    this.options.checker.close();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.options.timers.setTimeout(() => this.tick(), this.options.timing.probeIntervalMs);
  }

  private tick(): void {
    if (this.stopped) return;
    const verdict = this.tracker.tick(this.options.clock.nowMs());
    if (verdict.becameHung) this.change("hung", verdict.silentMs);
    // Unlike a PING, the answer to a Check says more than "alive" (SERVING or not): always ask.
    if (!this.checking) this.check();
    this.schedule();
  }

  private check(): void {
    this.checking = true;
    this.options.checker.check(this.options.service, this.options.timing.probeIntervalMs).then(
      (answer) => {
        this.checking = false;
        if (this.stopped || answer === "no-answer") return;
        this.tracker.heard(this.options.clock.nowMs());
        this.change(answer, 0);
      },
      () => {
        this.checking = false;
      },
    );
  }

  private change(health: WatchedHealth, silentMs: number): void {
    if (health === this.health) return;
    this.health = health;
    this.options.onChange(health, silentMs);
  }
}
