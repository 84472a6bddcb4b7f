import { describe, expect, it, vi } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { AllowPolicy, parseAllowRule } from "../../sidecar/allow-rules.js";
import { EndpointCache } from "../../sidecar/routing/endpoint-cache.js";
import { PeakEwma } from "../../sidecar/routing/peak-ewma.js";
import { manifest } from "../helpers/manifests.js";

function instance(id: string, version: string, state = HealthState.HEALTH_STATE_READY, labels: Record<string, string> = {}): AgentInstance {
  return {
    instanceId: id,
    spiffeId: "spiffe://t/sidecar/h",
    manifest: manifest({ name: id, labels, capabilities: [{ name: "sql.query", version, attributes: {} }] }),
    endpoint: "127.0.0.1:1",
    host: "h",
    state,
    load: undefined,
    registeredAtMs: 0,
    lastHeartbeatAtMs: 0,
    stateReason: "",
    deployment: "",
    trafficPercent: 0,
  };
}

function cacheWith(instances: AgentInstance[], random = () => 0.5): EndpointCache {
  const cache = new EndpointCache(new ManualClock(), random);
  instances.forEach((item, index) => cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_ADDED, instance: item, revision: index + 1, previousState: 0, epoch: "" }));
  cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_SYNCED, instance: undefined, revision: instances.length, previousState: 0, epoch: "" });
  return cache;
}

describe("EndpointCache", () => {
  it("routes to the newest matching version only, among routable instances", () => {
    const cache = cacheWith([instance("a", "1.0.0"), instance("b", "1.2.0"), instance("c", "1.2.0", HealthState.HEALTH_STATE_DRAINING), instance("d", "2.0.0")]);
    for (let trial = 0; trial < 20; trial += 1) expect(cache.pick("sql.query", "^1", undefined).instance.instanceId).toBe("b");
    expect(cache.pick("sql.query", "", undefined).version).toBe("2.0.0");
  });

  it("takes an instance a call failed on out of routing for a while, not until an event that may never come", () => {
    const clock = new ManualClock();
    const cache = new EndpointCache(clock, () => 0.5, 10_000, 5_000);
    cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_ADDED, instance: instance("a", "1.0.0"), revision: 1, previousState: 0, epoch: "" });
    cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_SYNCED, instance: undefined, revision: 1, previousState: 0, epoch: "" });
    cache.markUnroutable("a", cache.get("a"));
    expect(() => cache.pick("sql.query", "", undefined)).toThrow(MeshError);
    clock.advance(4_999);
    expect(() => cache.pick("sql.query", "", undefined)).toThrow(MeshError);
    clock.advance(1);
    expect(cache.pick("sql.query", "", undefined).instance.instanceId).toBe("a");
    // A Watch event ends it at once.
    cache.markUnroutable("a", cache.get("a"));
    cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_UPDATED, instance: instance("a", "1.0.0"), revision: 2, previousState: 0, epoch: "" });
    expect(cache.pick("sql.query", "", undefined).instance.instanceId).toBe("a");
  });

  it("does not let a call that failed before a newer Watch event take the instance out of routing", () => {
    const cache = cacheWith([instance("a", "1.0.0")]);
    const picked = cache.pick("sql.query", "", undefined).instance;
    // The instance restarted and is READY again while the call routed by `picked` was failing.
    cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_UPDATED, instance: instance("a", "1.0.0"), revision: 9, previousState: HealthState.HEALTH_STATE_UNHEALTHY, epoch: "" });
    cache.markUnroutable("a", picked);
    expect(cache.pick("sql.query", "", undefined).instance.instanceId).toBe("a");
    // Marked by a failure of the entry it still has: out of routing.
    cache.markUnroutable("a", cache.get("a"));
    expect(() => cache.pick("sql.query", "", undefined)).toThrow(MeshError);
  });

  it("routes around every instance behind an avoided sidecar endpoint, and back once it answers", () => {
    const cache = cacheWith([{ ...instance("a", "1.0.0"), endpoint: "10.0.0.1:7422" }, { ...instance("b", "1.0.0"), endpoint: "10.0.0.2:7422" }]);
    cache.avoidEndpoint("10.0.0.2:7422", true);
    for (let trial = 0; trial < 10; trial += 1) expect(cache.pick("sql.query", "", undefined).instance.instanceId).toBe("a");
    cache.avoidEndpoint("10.0.0.1:7422", true);
    expect(() => cache.pick("sql.query", "", undefined)).toThrow(expect.objectContaining({ kind: "noHealthyInstance" }));
    cache.avoidEndpoint("10.0.0.2:7422", false);
    expect(cache.pick("sql.query", "", undefined).instance.instanceId).toBe("b");
  });

  it("follows Watch updates and removals", () => {
    const cache = cacheWith([instance("a", "1.0.0")]);
    cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_UPDATED, instance: instance("a", "1.0.0", HealthState.HEALTH_STATE_UNHEALTHY), revision: 5, previousState: 0, epoch: "" });
    expect(() => cache.pick("sql.query", "", undefined)).toThrow(MeshError);
    cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_UPDATED, instance: instance("a", "1.0.0"), revision: 6, previousState: 0, epoch: "" });
    expect(cache.pick("sql.query", "", undefined).instance.instanceId).toBe("a");
    cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_REMOVED, instance: instance("a", "1.0.0"), revision: 7, previousState: 0, epoch: "" });
    expect(cache.candidates("sql.query", "", undefined)).toEqual([]);
    expect(cache.lastRevision).toBe(7);
  });

  it("spreads by its own outstanding calls (power of two choices)", () => {
    let toggle = 0;
    const cache = cacheWith([instance("a", "1.0.0"), instance("b", "1.0.0")], () => (toggle++ % 2) * 0.6);
    const first = cache.pick("sql.query", "", undefined).instance.instanceId;
    const done = cache.begin(first);
    const second = cache.pick("sql.query", "", undefined).instance.instanceId;
    expect(second).not.toBe(first);
    done();
  });

  it("honours exclusions (retry elsewhere) and marks failed instances unroutable", () => {
    const cache = cacheWith([instance("a", "1.0.0"), instance("b", "1.0.0")]);
    expect(cache.pick("sql.query", "", undefined, new Set(["a"])).instance.instanceId).toBe("b");
    cache.markUnroutable("b");
    expect(cache.pick("sql.query", "", undefined).instance.instanceId).toBe("a");
  });
});

describe("EndpointCache resync", () => {
  it("keeps routing to known instances while a restarted server relearns them, then drops the ones that never came back", () => {
    vi.useFakeTimers();
    try {
      const cache = new EndpointCache(new ManualClock(), () => 0.5, 1000);
      cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_ADDED, instance: instance("a", "1.0.0"), revision: 1, previousState: 0, epoch: "" });
      cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_ADDED, instance: instance("b", "1.0.0"), revision: 2, previousState: 0, epoch: "" });
      cache.reset();
      cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_SYNCED, instance: undefined, revision: 0, previousState: 0, epoch: "" });
      expect(cache.candidates("sql.query", "", undefined).map((pick) => pick.instance.instanceId)).toEqual(["a", "b"]);
      cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_ADDED, instance: instance("a", "1.0.0"), revision: 1, previousState: 0, epoch: "" });
      vi.advanceTimersByTime(1001);
      expect(cache.candidates("sql.query", "", undefined).map((pick) => pick.instance.instanceId)).toEqual(["a"]);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("EndpointCache across registry epochs", () => {
  it("treats events of a new epoch as a snapshot that replaces the old history, even when its revisions are higher", () => {
    vi.useFakeTimers();
    try {
      const cache = new EndpointCache(new ManualClock(), () => 0.5, 1000);
      const event = (type: WatchResponse_EventType, id: string | undefined, revision: number, epoch: string) => ({
        type,
        instance: id ? instance(id, "1.0.0") : undefined,
        revision,
        previousState: 0,
        epoch,
      });
      cache.apply(event(WatchResponse_EventType.EVENT_TYPE_ADDED, "a", 3, "e1"));
      cache.apply(event(WatchResponse_EventType.EVENT_TYPE_ADDED, "b", 3, "e1"));
      cache.apply(event(WatchResponse_EventType.EVENT_TYPE_SYNCED, undefined, 3, "e1"));
      expect({ epoch: cache.epoch, revision: cache.lastRevision, synced: cache.isSynced }).toEqual({ epoch: "e1", revision: 3, synced: true });
      // The restarted server has a new history; its snapshot (revision 9 > 3) holds b and c.
      cache.apply(event(WatchResponse_EventType.EVENT_TYPE_ADDED, "c", 9, "e2"));
      expect(cache.isSynced).toBe(false);
      cache.apply(event(WatchResponse_EventType.EVENT_TYPE_ADDED, "b", 9, "e2"));
      cache.apply(event(WatchResponse_EventType.EVENT_TYPE_SYNCED, undefined, 9, "e2"));
      expect({ epoch: cache.epoch, revision: cache.lastRevision, synced: cache.isSynced }).toEqual({ epoch: "e2", revision: 9, synced: true });
      // a stays routable for the grace (its sidecar may still re-register), then goes.
      expect(cache.candidates("sql.query", "", undefined).map((pick) => pick.instance.instanceId).sort()).toEqual(["a", "b", "c"]);
      vi.advanceTimersByTime(1001);
      expect(cache.candidates("sql.query", "", undefined).map((pick) => pick.instance.instanceId).sort()).toEqual(["b", "c"]);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("PeakEwma", () => {
  it("jumps to a slow sample at once and decays towards fast ones with time", () => {
    const ewma = new PeakEwma(1000);
    ewma.observe(10, 0);
    ewma.observe(100, 10);
    expect(ewma.get(10)).toBe(100);
    ewma.observe(10, 1010);
    expect(ewma.get(1010)).toBeLessThan(100);
    expect(ewma.get(1010)).toBeGreaterThan(10);
    expect(ewma.get(10_000)).toBeLessThan(1);
  });
});

describe("AllowPolicy", () => {
  it("allows everything by default and only matching rules under default deny", () => {
    expect(() => new AllowPolicy([], false).check("spiffe://t/sidecar/a", "sql.query")).not.toThrow();
    const policy = new AllowPolicy([parseAllowRule("spiffe://t/sidecar/*=sql.*")], true);
    expect(() => policy.check("spiffe://t/sidecar/a", "sql.query")).not.toThrow();
    expect(() => policy.check("spiffe://t/sidecar/a", "text.stats")).toThrow("caller may not invoke this capability");
    expect(() => policy.check("spiffe://other/sidecar/a", "sql.query")).toThrow(MeshError);
  });

  it.each(["no-equals", "=cap", "from="])("rejects the malformed rule %s", (text) => {
    expect(() => parseAllowRule(text)).toThrow(MeshError);
  });
});
