import { describe, expect, it } from "vitest";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type HealthEvent, IllegalTransitionError, isRoutable, nextHealthState } from "../../services/registry/domain/health-state.js";

const {
  HEALTH_STATE_STARTING: STARTING,
  HEALTH_STATE_READY: READY,
  HEALTH_STATE_DEGRADED: DEGRADED,
  HEALTH_STATE_UNHEALTHY: UNHEALTHY,
  HEALTH_STATE_DRAINING: DRAINING,
  HEALTH_STATE_STOPPED: STOPPED,
  HEALTH_STATE_FAILED: FAILED,
} = HealthState;

const ready: HealthEvent = { type: "heartbeat", reported: "ready" };
const degraded: HealthEvent = { type: "heartbeat", reported: "degraded" };

describe("nextHealthState", () => {
  it.each<[HealthState, HealthEvent, HealthState]>([
    [STARTING, ready, READY],
    [STARTING, degraded, DEGRADED],
    [STARTING, { type: "heartbeatTimeout" }, UNHEALTHY],
    [READY, degraded, DEGRADED],
    [DEGRADED, ready, READY],
    [READY, { type: "heartbeatTimeout" }, UNHEALTHY],
    [DEGRADED, { type: "streamLost" }, UNHEALTHY],
    [UNHEALTHY, ready, READY],
    [UNHEALTHY, { type: "failed" }, FAILED],
    [READY, { type: "drain" }, DRAINING],
    [DRAINING, ready, DRAINING],
    [DRAINING, { type: "stopped" }, STOPPED],
    [DRAINING, { type: "streamLost" }, STOPPED],
    [FAILED, ready, FAILED],
    [STOPPED, ready, STOPPED],
    [FAILED, { type: "heartbeatTimeout" }, FAILED],
    [READY, { type: "reportedUnhealthy" }, UNHEALTHY],
  ])("%s on %o → %s", (from, event, to) => {
    expect(nextHealthState(from, event)).toBe(to);
  });

  it.each<[HealthState, HealthEvent]>([
    [STOPPED, { type: "drain" }],
    [FAILED, { type: "drain" }],
    [STOPPED, { type: "failed" }],
  ])("rejects %s on %o", (from, event) => {
    expect(() => nextHealthState(from, event)).toThrow(IllegalTransitionError);
  });

  it("routes only to READY and DEGRADED", () => {
    expect([STARTING, READY, DEGRADED, UNHEALTHY, DRAINING, STOPPED, FAILED].filter(isRoutable)).toEqual([READY, DEGRADED]);
  });
});
