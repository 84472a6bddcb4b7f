import { describe, expect, it } from "vitest";
import { type SidecarSnapshot, placeInstances, planMove, withPlacements } from "../../services/orchestrator/domain/placement.js";

function sidecar(sidecarId: string, overrides: Partial<SidecarSnapshot> = {}): SidecarSnapshot {
  return { sidecarId, capacity: 10, instanceCount: 0, byDeployment: {}, connected: true, ...overrides };
}

function countBy(ids: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const id of ids) counts[id] = (counts[id] ?? 0) + 1;
  return counts;
}

describe("placeInstances", () => {
  it("spreads 4 instances over 2 empty sidecars, 2 each, alternating", () => {
    expect(placeInstances([sidecar("s1"), sidecar("s2")], "web", 4)).toEqual(["s1", "s2", "s1", "s2"]);
  });

  it("spreads 3 instances over 3 sidecars, one each", () => {
    expect(countBy(placeInstances([sidecar("s3"), sidecar("s1"), sidecar("s2")], "web", 3))).toEqual({ s1: 1, s2: 1, s3: 1 });
  });

  it("spreads 7 instances over 3 sidecars as evenly as possible", () => {
    const counts = Object.values(countBy(placeInstances([sidecar("s1"), sidecar("s2"), sidecar("s3")], "web", 7))).sort();
    expect(counts).toEqual([2, 2, 3]);
  });

  it("fills the sidecar with fewest instances of this deployment first", () => {
    const sidecars = [
      sidecar("s1", { instanceCount: 2, byDeployment: { web: 2 } }),
      sidecar("s2", { instanceCount: 5, byDeployment: { other: 5 } }),
    ];
    expect(placeInstances(sidecars, "web", 1)).toEqual(["s2"]);
  });

  it("breaks a spread tie on fewest instances overall, then most free capacity, then id", () => {
    expect(placeInstances([sidecar("s1", { instanceCount: 3 }), sidecar("s2", { instanceCount: 1 })], "web", 1)).toEqual(["s2"]);
    expect(placeInstances([sidecar("s1", { capacity: 4 }), sidecar("s2", { capacity: 8 })], "web", 1)).toEqual(["s2"]);
    expect(placeInstances([sidecar("b"), sidecar("a")], "web", 1)).toEqual(["a"]);
  });

  it("respects capacity and returns fewer placements when it runs out", () => {
    const sidecars = [sidecar("s1", { capacity: 1 }), sidecar("s2", { capacity: 2, instanceCount: 1, byDeployment: { other: 1 } })];
    expect(placeInstances(sidecars, "web", 5)).toEqual(["s1", "s2"]);
  });

  it("skips disconnected sidecars and sidecars with capacity 0 (unmanaged only)", () => {
    const sidecars = [sidecar("gone", { connected: false }), sidecar("unmanaged", { capacity: 0 }), sidecar("full", { capacity: 2, instanceCount: 2 })];
    expect(placeInstances(sidecars, "web", 2)).toEqual([]);
    expect(placeInstances([...sidecars, sidecar("ok")], "web", 2)).toEqual(["ok", "ok"]);
  });

  it("is deterministic and leaves its input untouched", () => {
    const sidecars = [sidecar("s1"), sidecar("s2", { byDeployment: { web: 1 }, instanceCount: 1 })];
    const before = structuredClone(sidecars);
    expect(placeInstances(sidecars, "web", 3)).toEqual(placeInstances(sidecars, "web", 3));
    expect(sidecars).toEqual(before);
  });
});

describe("withPlacements", () => {
  it("counts placements per sidecar and deployment", () => {
    const after = withPlacements(
      [sidecar("s1"), sidecar("s2")],
      [
        { sidecarId: "s1", deployment: "web" },
        { sidecarId: "s1", deployment: "api" },
        { sidecarId: "s1", deployment: "web" },
        { sidecarId: "unknown", deployment: "web" },
      ],
    );
    expect(after).toEqual([sidecar("s1", { instanceCount: 3, byDeployment: { web: 2, api: 1 } }), sidecar("s2")]);
  });
});

describe("anti-affinity by host", () => {
  it("spreads over hosts before sidecars: two sidecars on one host count as one", () => {
    const sidecars = [sidecar("s1", { host: "h1" }), sidecar("s2", { host: "h1" }), sidecar("s3", { host: "h2" })];
    expect(placeInstances(sidecars, "web", 4)).toEqual(["s1", "s3", "s2", "s3"]);
  });

  it("treats a sidecar without a host as its own host", () => {
    expect(placeInstances([sidecar("s1", { host: "" }), sidecar("s2")], "web", 2)).toEqual(["s1", "s2"]);
  });
});

describe("planMove", () => {
  const on = (sidecarId: string, web: number, overrides: Partial<SidecarSnapshot> = {}) =>
    sidecar(sidecarId, { instanceCount: web, byDeployment: web > 0 ? { web } : {}, ...overrides });

  it.each([
    { name: "3 + 0 → move one", sidecars: [on("s1", 3), on("s2", 0)], move: { fromSidecarId: "s1", toSidecarId: "s2" } },
    { name: "2 + 1 → as even as it gets", sidecars: [on("s1", 2), on("s2", 1)], move: undefined },
    { name: "2 + 2 + 0 → from the first crowded one", sidecars: [on("s1", 2), on("s2", 2), on("s3", 0)], move: { fromSidecarId: "s1", toSidecarId: "s3" } },
    { name: "the empty host is full of other work", sidecars: [on("s1", 3), on("s2", 0, { capacity: 2, instanceCount: 2 })], move: undefined },
    { name: "the empty host has no managed capacity", sidecars: [on("s1", 3), on("s2", 0, { capacity: 0 })], move: undefined },
    { name: "the empty host is disconnected", sidecars: [on("s1", 3), on("s2", 0, { connected: false })], move: undefined },
    {
      name: "two sidecars on one crowded host",
      sidecars: [on("s1", 2, { host: "h1" }), on("s2", 1, { host: "h1" }), on("s3", 0, { host: "h2" })],
      move: { fromSidecarId: "s1", toSidecarId: "s3" },
    },
    { name: "nothing placed", sidecars: [on("s1", 0), on("s2", 0)], move: undefined },
  ])("$name", ({ sidecars, move }) => {
    expect(planMove(sidecars, "web")).toEqual(move);
  });

  it("never proposes a move back: after any move, the reverse is not proposed", () => {
    for (const [first, second] of [[3, 0], [4, 0], [5, 1], [4, 1]] as const) {
      const move = planMove([on("s1", first), on("s2", second)], "web");
      expect(move).toEqual({ fromSidecarId: "s1", toSidecarId: "s2" });
      const after = planMove([on("s1", first - 1), on("s2", second + 1)], "web");
      expect(after?.fromSidecarId).not.toBe("s2");
    }
  });
});
