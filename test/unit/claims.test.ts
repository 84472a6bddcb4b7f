import { describe, expect, it } from "vitest";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type ClaimInput, type InstanceClaim, type SessionView, classifyClaim, lostReason } from "../../services/orchestrator/domain/claims.js";

const T0 = 1_700_000_000_000;
const { HEALTH_STATE_READY: READY, HEALTH_STATE_UNHEALTHY: UNHEALTHY, HEALTH_STATE_STARTING: STARTING } = HealthState;
const { HEALTH_STATE_FAILED: FAILED, HEALTH_STATE_DRAINING: DRAINING } = HealthState;

function session(sessionId: string, sidecarId: string, helloAtMs: number | undefined, listed: string[] = []): SessionView {
  return { sessionId, sidecarId, host: sidecarId, helloAtMs, helloInstanceIds: new Set(listed) };
}

/** host-b's first session, which reported i-1 (Hello at T0 - 100). */
const firstSession = { sessionId: "b-1", sidecarId: "host-b", helloAtMs: T0 - 100 };

function input(overrides: Partial<ClaimInput> = {}): ClaimInput {
  return {
    instanceId: "i-1",
    host: "host-b",
    claimant: undefined,
    lastClaim: firstSession,
    unclaimedSinceMs: undefined,
    sessions: [],
    nowMs: T0 + 5000,
    ...overrides,
  };
}

describe("classifyClaim", () => {
  it.each<[string, Partial<ClaimInput>, { sidecarId: string; claim: InstanceClaim }]>([
    ["reported by a session: claimed, on the claimant's sidecar", { claimant: session("b-2", "sidecar-b", T0) }, { sidecarId: "sidecar-b", claim: { kind: "claimed" } }],
    [
      "a newer session of its sidecar said Hello without it: disowned (the sidecar restarted)",
      { sessions: [session("b-2", "host-b", T0 + 100)] },
      { sidecarId: "host-b", claim: { kind: "disowned" } },
    ],
    [
      "the newer session listed it (its announce is on the way): unclaimed, not disowned",
      { sessions: [session("b-2", "host-b", T0 + 100, ["i-1"])] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "never reported by any session (registered before its client's stream was up): a Hello says nothing about it",
      { lastClaim: undefined, sessions: [session("b-2", "host-b", T0 + 100)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "the session that reported it, still open but no longer reporting it, does not disown it",
      { sessions: [session("b-1", "host-b", T0 - 100)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "an older session of the same sidecar id does not disown it",
      { sessions: [session("b-0", "host-b", T0 - 500)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "a Hello in the same millisecond: benefit of the doubt",
      { sessions: [session("b-2", "host-b", T0 - 100)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "the last claimant's sidecar id wins over the registered host name",
      { host: "b.example.com", lastClaim: { ...firstSession, sidecarId: "sidecar-b" }, sessions: [session("b-2", "sidecar-b", T0 + 100)] },
      { sidecarId: "sidecar-b", claim: { kind: "disowned" } },
    ],
    [
      "another sidecar's Hello says nothing about it",
      { sessions: [session("a-2", "host-a", T0 + 100)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "a Hello of unknown time never disowns",
      { sessions: [session("b-2", "host-b", undefined)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "unclaimed keeps the time it was first seen so",
      { unclaimedSinceMs: T0 + 1000 },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 1000 } },
    ],
  ])("%s", (_label, overrides, expected) => {
    expect(classifyClaim(input(overrides))).toEqual(expected);
  });
});

describe("lostReason", () => {
  const connected = new Set(["host-a", "host-b"]);
  const rules = { connected, nowMs: T0 + 20_000, lostAfterMs: 15_000, managed: true };
  const unclaimed = (sinceMs: number): InstanceClaim => ({ kind: "unclaimed", sinceMs });

  it.each<[string, { claim: InstanceClaim; sidecarId: string; state: HealthState }, Partial<typeof rules>, string | undefined]>([
    ["claimed on a connected sidecar, even UNHEALTHY", { claim: { kind: "claimed" }, sidecarId: "host-b", state: UNHEALTHY }, {}, undefined],
    ["disowned, even READY", { claim: { kind: "disowned" }, sidecarId: "host-b", state: READY }, {}, "its sidecar reconnected without it"],
    ["managed, sidecar gone, given up on", { claim: unclaimed(T0 + 19_000), sidecarId: "host-c", state: UNHEALTHY }, {}, "sidecar gone"],
    ["managed, sidecar gone, FAILED", { claim: unclaimed(T0 + 19_000), sidecarId: "host-c", state: FAILED }, {}, "sidecar gone"],
    ["managed, sidecar gone, still READY (reconnect grace)", { claim: unclaimed(T0 + 19_000), sidecarId: "host-c", state: READY }, {}, undefined],
    ["unmanaged, sidecar gone, given up on, within the bound", { claim: unclaimed(T0 + 19_000), sidecarId: "host-c", state: UNHEALTHY }, { managed: false }, undefined],
    ["unclaimed and UNHEALTHY past the bound", { claim: unclaimed(T0 + 5000), sidecarId: "host-b", state: UNHEALTHY }, {}, "no sidecar has reported it for 15000 ms"],
    ["unclaimed and STARTING past the bound", { claim: unclaimed(T0 + 5000), sidecarId: "host-b", state: STARTING }, {}, "no sidecar has reported it for 15000 ms"],
    ["unclaimed and DRAINING past the bound", { claim: unclaimed(T0 + 5000), sidecarId: "host-b", state: DRAINING }, {}, "no sidecar has reported it for 15000 ms"],
    ["unclaimed and UNHEALTHY just within the bound", { claim: unclaimed(T0 + 5001), sidecarId: "host-b", state: UNHEALTHY }, {}, undefined],
    ["unclaimed but READY: the failure detector's call", { claim: unclaimed(T0), sidecarId: "host-b", state: READY }, {}, undefined],
  ])("%s", (_label, instance, overrides, expected) => {
    expect(lostReason(instance, { ...rules, ...overrides })).toBe(expected);
  });
});
