import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { LabelRequirement_Operator } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { FailureDetector } from "../../services/orchestrator/failure-detector.js";
import { Resolver } from "../../services/orchestrator/resolver.js";
import { MemoryChangeFeed } from "../../services/registry/adapters/memory-change-feed.js";
import { MemoryInstanceStore } from "../../services/registry/adapters/memory-instance-store.js";
import { Registry } from "../../services/registry/registry.js";
import { logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";

function setup() {
  const clock = new ManualClock();
  let counter = 0;
  const registry = new Registry(new MemoryInstanceStore(), new MemoryChangeFeed(), clock, logSink("silent").log, {}, () => `i-${++counter}`);
  return { clock, registry };
}

async function add(registry: Registry, name: string, capabilityVersion: string, labels: Record<string, string> = {}) {
  const { instance } = await registry.register({
    manifest: manifest({ name, labels, capabilities: [{ name: "sql.query", version: capabilityVersion, attributes: {} }] }),
    instanceId: "",
    endpoint: "",
    host: "h",
    owner: "spiffe://t/sidecar/h",
  });
  registry.recordHeartbeat(instance.instanceId, undefined, "ready");
  return instance.instanceId;
}

const query = { capability: "sql.query", versionRange: "", labelSelector: undefined, limit: 0, includeUnhealthy: false };

describe("Registry.discover", () => {
  it("returns matching versions newest first, READY before DEGRADED within a version", async () => {
    const { registry } = setup();
    const old = await add(registry, "a", "1.9.0");
    const newest = await add(registry, "b", "2.10.0");
    const middle = await add(registry, "c", "2.2.0");
    const degraded = await add(registry, "d", "2.10.0");
    registry.recordHeartbeat(degraded, undefined, "degraded");
    const newestReady = await add(registry, "e", "2.10.0");
    expect(registry.discover(query).map((instance) => instance.instanceId)).toEqual([newest, newestReady, degraded, middle, old]);
    expect(registry.discover({ ...query, versionRange: "~2.2" }).map((instance) => instance.instanceId)).toEqual([middle]);
    expect(registry.discover({ ...query, limit: 2 })).toHaveLength(2);
  });

  it("leaves out unhealthy instances unless asked, and filters by labels", async () => {
    const { registry } = setup();
    const prod = await add(registry, "a", "1.0.0", { env: "prod" });
    const dev = await add(registry, "b", "1.0.0", { env: "dev" });
    registry.applyHealthEvent(dev, { type: "heartbeatTimeout" }, "test");
    expect(registry.discover(query).map((instance) => instance.instanceId)).toEqual([prod]);
    expect(registry.discover({ ...query, includeUnhealthy: true })).toHaveLength(2);
    const selector = { matchLabels: {}, matchExpressions: [{ key: "env", operator: LabelRequirement_Operator.OPERATOR_IN, values: ["dev"] }] };
    expect(registry.discover({ ...query, includeUnhealthy: true, labelSelector: selector }).map((instance) => instance.instanceId)).toEqual([dev]);
  });

  it("forgets a deregistered instance's capability versions", async () => {
    const { registry } = setup();
    const only = await add(registry, "a", "3.0.0");
    await registry.deregister(only, "test");
    expect(registry.discover({ ...query, includeUnhealthy: true })).toEqual([]);
  });

  it("pages ListAgents with a token", async () => {
    const { registry } = setup();
    for (const name of ["a", "b", "c", "d", "e"]) await add(registry, name, "1.0.0");
    const first = registry.list({ name: "", labelSelector: undefined, states: [], pageSize: 2, pageToken: "" });
    const second = registry.list({ name: "", labelSelector: undefined, states: [], pageSize: 2, pageToken: first.nextPageToken });
    const third = registry.list({ name: "", labelSelector: undefined, states: [], pageSize: 2, pageToken: second.nextPageToken });
    expect([...first.instances, ...second.instances, ...third.instances].map((instance) => instance.manifest?.name)).toEqual(["a", "b", "c", "d", "e"]);
    expect(third.nextPageToken).toBe("");
    expect(first.total).toBe(5);
  });
});

describe("FailureDetector", () => {
  it("marks an instance UNHEALTHY only after timeoutMultiplier × interval of silence", async () => {
    const { registry, clock } = setup();
    const id = await add(registry, "a", "1.0.0"); // 100 ms interval in the test manifest
    const detected: number[] = [];
    const detector = new FailureDetector(registry, clock, { timeoutMultiplier: 2, sweepIntervalMs: 50 }, (_id, silentForMs) => detected.push(silentForMs));
    clock.advance(200);
    detector.sweep();
    expect(registry.get(id)?.state).toBe(HealthState.HEALTH_STATE_READY);
    clock.advance(1);
    detector.sweep();
    expect(registry.get(id)?.state).toBe(HealthState.HEALTH_STATE_UNHEALTHY);
    expect(detected).toEqual([201]);
    detector.sweep();
    expect(detected).toHaveLength(1);
    registry.recordHeartbeat(id, undefined, "ready");
    expect(registry.get(id)?.state).toBe(HealthState.HEALTH_STATE_READY);
  });
});

describe("Resolver", () => {
  it("routes only to the newest matching version and spreads by outstanding picks", async () => {
    const { registry } = setup();
    await add(registry, "old", "1.0.0");
    const first = await add(registry, "new-a", "1.1.0");
    const second = await add(registry, "new-b", "1.1.0");
    const resolver = new Resolver(registry, () => 0.3);
    const picks = Array.from({ length: 10 }, () => resolver.resolve({ capability: "sql.query", versionRange: "^1", labelSelector: undefined, excludeInstanceIds: [] }).instanceId);
    expect(new Set(picks)).toEqual(new Set([first, second]));
    const counts = picks.reduce<Record<string, number>>((tally, id) => ({ ...tally, [id]: (tally[id] ?? 0) + 1 }), {});
    expect(Math.abs((counts[first] ?? 0) - (counts[second] ?? 0))).toBeLessThanOrEqual(1);
  });

  it("honours exclusions and fails with noHealthyInstance", async () => {
    const { registry } = setup();
    const only = await add(registry, "a", "1.0.0");
    const resolver = new Resolver(registry);
    expect(() => resolver.resolve({ capability: "sql.query", versionRange: "", labelSelector: undefined, excludeInstanceIds: [only] })).toThrow(
      "no healthy instance",
    );
  });
});

describe("Registry.watch epochs", () => {
  it("resumes exactly within its epoch and answers a snapshot for a revision of another epoch", async () => {
    const { registry } = setup();
    const first = await add(registry, "a", "1.0.0");
    const resumeFrom = registry.currentRevision;
    const second = await add(registry, "b", "1.0.0");
    const resumed: Array<[number, string]> = [];
    registry.watch(resumeFrom, "", (event) => resumed.push([event.type, event.instance.instanceId]), registry.epoch).close();
    expect(resumed.map(([, id]) => id)).toEqual([second, second]);
    // Another history (a restarted server) with revisions in range: never a resume, a snapshot.
    const snapshot: Array<[number, string]> = [];
    registry.watch(resumeFrom, "", (event) => snapshot.push([event.type, event.instance.instanceId]), "an-older-epoch").close();
    expect(snapshot).toEqual([
      [1, first],
      [1, second],
      [4, ""],
    ]);
    expect(() => registry.watch(registry.currentRevision + 1, "", () => undefined, registry.epoch)).toThrow("since_revision: not a known revision of this epoch");
  });
});

