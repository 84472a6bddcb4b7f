import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { Registry } from "../registry/registry.js";

export interface FailureDetectorOptions {
  /** An instance is UNHEALTHY after this many intervals without a heartbeat. */
  timeoutMultiplier: number;
  /** How often deadlines are checked; bounds the detection error. */
  sweepIntervalMs: number;
}

/**
 * Marks silent instances UNHEALTHY. One sweep over all instances every
 * `sweepIntervalMs` instead of a timer per instance: at 10,000 agents a sweep is
 * well under a millisecond, and it costs nothing per heartbeat.
 */
export class FailureDetector {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly clock: Clock,
    private readonly options: FailureDetectorOptions,
    private readonly onDetected: (instanceId: string, silentForMs: number) => void = () => {},
  ) {}

  start(): void {
    this.timer = setInterval(() => this.sweep(), this.options.sweepIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  timeoutMsFor(intervalMs: number): number {
    return intervalMs * this.options.timeoutMultiplier;
  }

  /** Checks every watched instance once; exposed so tests can drive it. */
  sweep(): void {
    const nowMs = this.clock.nowMs();
    for (const instance of this.registry.all()) {
      if (!watched(instance.state)) continue;
      const lastSeenMs = this.registry.lastSeenMs(instance);
      const silentForMs = nowMs - lastSeenMs;
      if (silentForMs <= this.timeoutMsFor(this.registry.heartbeatIntervalMs(instance))) continue;
      const change = this.registry.applyHealthEvent(instance.instanceId, { type: "heartbeatTimeout" }, "heartbeat timeout");
      if (change) this.onDetected(instance.instanceId, silentForMs);
    }
  }
}

function watched(state: HealthState): boolean {
  return (
    state === HealthState.HEALTH_STATE_STARTING ||
    state === HealthState.HEALTH_STATE_READY ||
    state === HealthState.HEALTH_STATE_DEGRADED
  );
}
