import { describe, expect, it } from "vitest";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type ClaimInput, type InstanceClaim, type SessionView, classifyClaim, lostReason } from "../../services/orchestrator/domain/claims.js";

const T0 = 1_700_000_000_000;
const { HEALTH_STATE_READY: READY, HEALTH_STATE_UNHEALTHY: UNHEALTHY, HEALTH_STATE_STARTING: STARTING } = HealthState;
const { HEALTH_STATE_FAILED: FAILED, HEALTH_STATE_DRAINING: DRAINING } = HealthState;

function session(sidecarId: string, helloAtMs: number | undefined, listed: string[] = [], host = sidecarId): SessionView {
  return { sidecarId, host, helloAtMs, helloInstanceIds: new Set(listed) };
}

function input(overrides: Partial<ClaimInput> = {}): ClaimInput {
  return {
    instanceId: "i-1",
    host: "host-b",
    registeredAtMs: T0,
    claimant: undefined,
    lastSidecarId: undefined,
    unclaimedSinceMs: undefined,
    sessions: [],
    nowMs: T0 + 5000,
    ...overrides,
  };
}

describe("classifyClaim", () => {
  it.each<[string, Partial<ClaimInput>, { sidecarId: string; claim: InstanceClaim }]>([
    ["reported by a session: claimed, on the claimant's sidecar", { claimant: session("sidecar-b", T0 - 10) }, { sidecarId: "sidecar-b", claim: { kind: "claimed" } }],
    [
      "its sidecar reconnected after it registered and did not list it: disowned",
      { sessions: [session("host-b", T0 + 100)] },
      { sidecarId: "host-b", claim: { kind: "disowned" } },
    ],
    [
      "the reconnected sidecar listed it (it is announcing it): unclaimed, not disowned",
      { sessions: [session("host-b", T0 + 100, ["i-1"])] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "registered after the Hello (announce still on its way): unclaimed",
      { registeredAtMs: T0 + 200, sessions: [session("host-b", T0 + 100)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "a Hello in the same millisecond: benefit of the doubt",
      { sessions: [session("host-b", T0)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "the last claimant's sidecar id wins over the registered host name",
      { host: "b.example.com", lastSidecarId: "sidecar-b", sessions: [session("sidecar-b", T0 + 100, [], "b.example.com")] },
      { sidecarId: "sidecar-b", claim: { kind: "disowned" } },
    ],
    [
      "never claimed, host named differently from the sidecar id: matched by Hello.host",
      { host: "b.example.com", sessions: [session("sidecar-b", T0 + 100, [], "b.example.com")] },
      { sidecarId: "b.example.com", claim: { kind: "disowned" } },
    ],
    [
      "another sidecar's Hello says nothing about it",
      { sessions: [session("host-a", T0 + 100)] },
      { sidecarId: "host-b", claim: { kind: "unclaimed", sinceMs: T0 + 5000 } },
    ],
    [
      "a Hello of unknown time never disowns",
      { sessions: [session("host-b", undefined)] },
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
