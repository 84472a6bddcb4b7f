// Session affinity (sdk/ts/src/core/session-affinity.ts), property-style over seeded
// random instance sets and keys: deterministic and order-independent, balanced, within
// the load bound, and a key moves only when its instance leaves.
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { defaultLoadFactor, keyFraction, pickByAffinity } from "../../sdk/ts/src/core/session-affinity.js";
import { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { EndpointCache } from "../../sidecar/routing/endpoint-cache.js";
import { manifest } from "../helpers/manifests.js";

function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state);
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed;
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

const idle = () => 0;
const self = (id: string) => id;

function randomIds(random: () => number, count: number): string[] {
  return Array.from({ length: count }, () => `echo-${Math.floor(random() * 2 ** 32).toString(16)}`);
}

function keys(random: () => number, count: number): string[] {
  return Array.from({ length: count }, (_, index) => `session-${index}-${Math.floor(random() * 1e9)}`);
}

const seeds = [1, 2, 3, 5, 8, 13, 21, 34];

describe("pickByAffinity", () => {
  it.each(seeds)("is deterministic and independent of candidate order (seed %i)", (seed) => {
    const random = seededRandom(seed);
    const ids = randomIds(random, 2 + Math.floor(random() * 10));
    const shuffled = [...ids].sort(() => random() - 0.5);
    for (const key of keys(random, 500)) expect(pickByAffinity(key, shuffled, self, idle)).toBe(pickByAffinity(key, ids, self, idle));
  });

  it.each(seeds)("moves only the keys of an instance that leaves (seed %i)", (seed) => {
    const random = seededRandom(seed);
    const ids = randomIds(random, 3 + Math.floor(random() * 8));
    const leaving = ids[Math.floor(random() * ids.length)] as string;
    const rest = ids.filter((id) => id !== leaving);
    for (const key of keys(random, 1000)) {
      const before = pickByAffinity(key, ids, self, idle);
      const after = pickByAffinity(key, rest, self, idle);
      if (before !== leaving) expect(after).toBe(before);
    }
  });

  it.each(seeds)("moves about 1/(n+1) of the keys to an instance that joins, and only to it (seed %i)", (seed) => {
    const random = seededRandom(seed);
    const ids = randomIds(random, 3 + Math.floor(random() * 8));
    const [joining] = randomIds(random, 1) as [string];
    const all = keys(random, 4000);
    let moved = 0;
    for (const key of all) {
      const after = pickByAffinity(key, [...ids, joining], self, idle);
      if (after !== pickByAffinity(key, ids, self, idle)) {
        expect(after).toBe(joining);
        moved += 1;
      }
    }
    expect(moved / all.length).toBeGreaterThan(1 / (ids.length + 1) - 0.05);
    expect(moved / all.length).toBeLessThan(1 / (ids.length + 1) + 0.05);
  });

  it.each(seeds)("spreads keys evenly when idle (seed %i)", (seed) => {
    const random = seededRandom(seed);
    const ids = randomIds(random, 8);
    const counts = new Map<string, number>();
    const all = keys(random, 8000);
    for (const key of all) {
      const id = pickByAffinity(key, ids, self, idle) as string;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    for (const id of ids) expect((counts.get(id) ?? 0) / (all.length / ids.length)).toBeGreaterThan(0.8);
    for (const id of ids) expect((counts.get(id) ?? 0) / (all.length / ids.length)).toBeLessThan(1.2);
  });

  it.each(seeds)("keeps every instance within the load bound as sessions pile up (seed %i)", (seed) => {
    const random = seededRandom(seed);
    const ids = randomIds(random, 2 + Math.floor(random() * 6));
    const load = new Map(ids.map((id) => [id, 0]));
    // A skewed key set: most keys would land on few instances without the bound.
    const hot = keys(random, 5);
    for (let call = 0; call < 2000; call += 1) {
      const key = hot[Math.floor(random() * hot.length)] as string;
      const total = [...load.values()].reduce((sum, value) => sum + value, 0);
      const bound = Math.ceil((defaultLoadFactor * (total + 1)) / ids.length);
      const id = pickByAffinity(key, ids, self, (candidate) => load.get(candidate) ?? 0) as string;
      expect((load.get(id) ?? 0) + 1).toBeLessThanOrEqual(bound);
      load.set(id, (load.get(id) ?? 0) + 1);
    }
  });

  it("handles empty and single candidate lists", () => {
    expect(pickByAffinity("k", [], self, idle)).toBeUndefined();
    expect(pickByAffinity("k", ["only"], self, () => 99)).toBe("only");
  });

  it("keyFraction is in [0, 1) and spread", () => {
    const fractions = keys(seededRandom(9), 4000).map(keyFraction);
    expect(Math.min(...fractions)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...fractions)).toBeLessThan(1);
    expect(fractions.filter((fraction) => fraction < 0.1).length / fractions.length).toBeCloseTo(0.1, 1);
  });
});

function instance(id: string, version = "1.0.0", trafficPercent = 0): AgentInstance {
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
    deployment: "echo",
    trafficPercent,
  };
}

function cacheWith(instances: AgentInstance[]): EndpointCache {
  const cache = new EndpointCache(new ManualClock(), seededRandom(4));
  instances.forEach((item, index) => cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_ADDED, instance: item, revision: index + 1, previousState: 0, epoch: "" }));
  cache.apply({ type: WatchResponse_EventType.EVENT_TYPE_SYNCED, instance: undefined, revision: instances.length, previousState: 0, epoch: "" });
  return cache;
}

describe("EndpointCache with a session key", () => {
  it("sticks to one instance while it is routable, and moves only when it leaves", () => {
    const cache = cacheWith(["a", "b", "c", "d"].map((id) => instance(id)));
    const sessions = keys(seededRandom(11), 200);
    const first = new Map(sessions.map((key) => [key, cache.pick("test.echo", "", undefined, new Set(), key).instance.instanceId]));
    expect(new Set(first.values()).size).toBe(4);
    for (let round = 0; round < 5; round += 1) for (const key of sessions) expect(cache.pick("test.echo", "", undefined, new Set(), key).instance.instanceId).toBe(first.get(key));
    cache.markUnroutable("b");
    for (const key of sessions) {
      const now = cache.pick("test.echo", "", undefined, new Set(), key).instance.instanceId;
      if (first.get(key) === "b") expect(now).not.toBe("b");
      else expect(now).toBe(first.get(key));
    }
  });

  it("draws a traffic-split version by the key, so a session stays on its version", () => {
    const cache = cacheWith([instance("old-1", "1.0.0", 90), instance("old-2", "1.0.0", 90), instance("new-1", "1.1.0", 10)]);
    const sessions = keys(seededRandom(12), 4000);
    let canary = 0;
    for (const key of sessions) {
      const version = cache.pick("test.echo", "", undefined, new Set(), key).version;
      expect(cache.pick("test.echo", "", undefined, new Set(), key).version).toBe(version);
      if (version === "1.1.0") canary += 1;
    }
    expect(canary / sessions.length).toBeGreaterThan(0.08);
    expect(canary / sessions.length).toBeLessThan(0.12);
  });
});

