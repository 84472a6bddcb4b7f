// Canary weights reach routing: the orchestrator's traffic split rides on
// AgentInstance.traffic_percent (published on Watch by Registry.setTrafficSplit), and the
// sidecar's EndpointCache draws a version by it before balancing within that version.
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { MemoryChangeFeed } from "../../services/registry/adapters/memory-change-feed.js";
import { MemoryInstanceStore } from "../../services/registry/adapters/memory-instance-store.js";
import type { RegistryEvent } from "../../services/registry/ports.js";
import { Registry } from "../../services/registry/registry.js";
import { EndpointCache } from "../../sidecar/routing/endpoint-cache.js";
import { logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";

/** mulberry32: a seeded random source, so the counts are the same on every run. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state);
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed;
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

function instance(id: string, version: string, trafficPercent: number, deployment = "echo"): AgentInstance {
  return {
    instanceId: id,
    spiffeId: "spiffe://t/sidecar/h",
    manifest: manifest({ name: "echo", version, capabilities: [{ name: "test.echo", version, attributes: {} }] }),
    endpoint: "127.0.0.1:1",
    host: "h",
    state: HealthState.HEALTH_STATE_READY,
    load: undefined,
    registeredAtMs: 0,
    lastHeartbeatAtMs: 0,
    stateReason: "",
    deployment,
    trafficPercent,
  };
}

function cacheWith(instances: AgentInstance[], random: () => number): EndpointCache {
  const cache = new EndpointCache(new ManualClock(), random);
  instances.forEach((item, index) => cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_ADDED, instance: item, revision: index + 1, previousState: 0, epoch: "" }));
  cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_SYNCED, instance: undefined, revision: instances.length, previousState: 0, epoch: "" });
  return cache;
}

function versionCounts(cache: EndpointCache, calls: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let call = 0; call < calls; call += 1) {
    const picked = cache.pick("test.echo", "", undefined);
    counts.set(picked.version, (counts.get(picked.version) ?? 0) + 1);
  }
  return counts;
}

describe("canary weights in sidecar routing", () => {
  it.each([1, 2, 3, 42, 2026])("a canary at 10 %% gets 10 %% ± 2 %% of 20,000 calls (seed %i)", (seed) => {
    const cache = cacheWith([instance("old-1", "1.0.0", 90), instance("old-2", "1.0.0", 90), instance("old-3", "1.0.0", 90), instance("new-1", "1.1.0", 10)], seededRandom(seed));
    const calls = 20_000;
    const share = (versionCounts(cache, calls).get("1.1.0") ?? 0) / calls;
    expect(share).toBeGreaterThanOrEqual(0.08);
    expect(share).toBeLessThanOrEqual(0.12);
  });

  it("spreads a version's share over its instances", () => {
    const cache = cacheWith([instance("old-1", "1.0.0", 50), instance("old-2", "1.0.0", 50), instance("new-1", "1.1.0", 50)], seededRandom(7));
    const byInstance = new Map<string, number>();
    for (let call = 0; call < 10_000; call += 1) {
      const id = cache.pick("test.echo", "", undefined).instance.instanceId;
      byInstance.set(id, (byInstance.get(id) ?? 0) + 1);
    }
    expect((byInstance.get("new-1") ?? 0) / 10_000).toBeCloseTo(0.5, 1);
    expect((byInstance.get("old-1") ?? 0) + (byInstance.get("old-2") ?? 0)).toBeGreaterThan(4500);
    expect(byInstance.get("old-1")).toBeGreaterThan(1500);
    expect(byInstance.get("old-2")).toBeGreaterThan(1500);
  });

  it("sends nothing to a newer version without a share while a split is in force (rolling back)", () => {
    const cache = cacheWith([instance("old-1", "1.0.0", 100), instance("new-1", "1.1.0", 0)], seededRandom(1));
    expect(versionCounts(cache, 1000)).toEqual(new Map([["1.0.0", 1000]]));
  });

  it("falls back to the newest version when no split is in force", () => {
    const cache = cacheWith([instance("old-1", "1.0.0", 0), instance("new-1", "1.1.0", 0)], seededRandom(1));
    expect(versionCounts(cache, 1000)).toEqual(new Map([["1.1.0", 1000]]));
  });

  it("renormalises over the versions still routable here", () => {
    const cache = cacheWith([instance("old-1", "1.0.0", 90), instance("new-1", "1.1.0", 10)], seededRandom(3));
    cache.markUnroutable("old-1");
    expect(versionCounts(cache, 500)).toEqual(new Map([["1.1.0", 500]]));
  });
});

describe("Registry.setTrafficSplit", () => {
  it("sets each instance's share by its deployment version and publishes only the changes", async () => {
    let counter = 0;
    const registry = new Registry(new MemoryInstanceStore(), new MemoryChangeFeed(), new ManualClock(), logSink("silent").log, {}, () => `i-${++counter}`);
    const register = async (version: string, deployment: string) =>
      (await registry.register({ manifest: manifest({ name: "echo", version }), instanceId: "", endpoint: "", host: "h", owner: "spiffe://t/sidecar/h", deployment })).instance.instanceId;
    const old = await register("1.0.0", "echo");
    const canary = await register("1.1.0", "echo");
    const other = await register("1.0.0", "other");
    const events: RegistryEvent[] = [];
    registry.watch(registry.currentRevision, "", (event) => events.push(event));
    events.length = 0;

    registry.setTrafficSplit("echo", { "1.0.0": 90, "1.1.0": 10 });
    expect(events.map((event) => [event.type, event.instance.instanceId, event.instance.trafficPercent])).toEqual([
      [WatchResponse_EventType.EVENT_TYPE_UPDATED, old, 90],
      [WatchResponse_EventType.EVENT_TYPE_UPDATED, canary, 10],
    ]);
    expect(registry.get(other)?.trafficPercent).toBe(0);

    events.length = 0;
    registry.setTrafficSplit("echo", { "1.0.0": 90, "1.1.0": 10 });
    expect(events).toEqual([]);
    registry.setTrafficSplit("echo", {});
    expect(events.map((event) => event.instance.trafficPercent)).toEqual([0, 0]);
  });
});
