import { HealthState } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";

/** What happened to an instance; the one input of the health state machine. */
export type HealthEvent =
  | { type: "heartbeat"; reported: "ready" | "degraded" }
  | { type: "heartbeatTimeout" }
  | { type: "streamLost" }
  | { type: "drain" }
  | { type: "stopped" }
  | { type: "failed" }
  | { type: "reportedUnhealthy" };

export class IllegalTransitionError extends Error {
  override readonly name = "IllegalTransitionError";
  constructor(
    readonly from: HealthState,
    readonly event: HealthEvent["type"],
  ) {
    super(`illegal health transition from ${HealthState[from]} on ${event}`);
  }
}

/**
 * The health state machine of DESIGN §4:
 * STARTING → READY ⇄ DEGRADED → UNHEALTHY → (heartbeat) READY; FAILED is terminal
 * until a restart registers anew; DRAINING only moves on to STOPPED.
 * Returns the same state when the event changes nothing.
 */
export function nextHealthState(current: HealthState, event: HealthEvent): HealthState {
  const terminal = current === HealthState.HEALTH_STATE_FAILED || current === HealthState.HEALTH_STATE_STOPPED;
  switch (event.type) {
    case "heartbeat": {
      if (terminal || current === HealthState.HEALTH_STATE_DRAINING) return current;
      return event.reported === "degraded" ? HealthState.HEALTH_STATE_DEGRADED : HealthState.HEALTH_STATE_READY;
    }
    case "heartbeatTimeout":
    case "streamLost":
    case "reportedUnhealthy":
      if (terminal) return current;
      if (current === HealthState.HEALTH_STATE_DRAINING) return event.type === "reportedUnhealthy" ? current : HealthState.HEALTH_STATE_STOPPED;
      return HealthState.HEALTH_STATE_UNHEALTHY;
    case "drain":
      if (terminal) throw new IllegalTransitionError(current, event.type);
      return HealthState.HEALTH_STATE_DRAINING;
    case "stopped":
      return HealthState.HEALTH_STATE_STOPPED;
    case "failed":
      if (current === HealthState.HEALTH_STATE_STOPPED) throw new IllegalTransitionError(current, event.type);
      return HealthState.HEALTH_STATE_FAILED;
  }
}

export function isRoutable(state: HealthState): boolean {
  return state === HealthState.HEALTH_STATE_READY || state === HealthState.HEALTH_STATE_DEGRADED;
}

export function healthStateName(state: HealthState): string {
  return (HealthState[state] ?? "UNKNOWN").replace("HEALTH_STATE_", "");
}
