import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { FailureDetector } from "../../services/orchestrator/failure-detector.js";
import { MemoryChangeFeed } from "../../services/registry/adapters/memory-change-feed.js";
import { ReplicatedInstanceStore } from "../../services/registry/adapters/replicated-instance-store.js";
import type { RegistryEvent } from "../../services/registry/ports.js";
import { Registry } from "../../services/registry/registry.js";
import { InProcessCoordination, MemoryChangeLog, stateKeys } from "../../services/state/index.js";
import { logSink } from "../helpers/log-sink.js";
import { ManualTimers } from "../helpers/manual-timers.js";
import { manifest } from "../helpers/manifests.js";

// Replicas in one process on one change log and one coordination service, as three
// server processes share PostgreSQL and Redis (test/e2e/server-replicas.test.ts runs
// those). Timers are manual: lease renewals and takeovers happen when the test says.

const owner = "spiffe://t/sidecar/h1";
const leaseTtlMs = 3_000;
const takeoverGraceMs = 5_000;

interface Replica {
  id: string;
  registry: Registry;
  store: ReplicatedInstanceStore;
  events: RegistryEvent[];
  detector: FailureDetector;
}

let open: ReplicatedInstanceStore[] = [];

afterEach(async () => {
  await Promise.all(open.map((store) => store.close()));
  open = [];
});

async function cluster(count: number) {
  const clock = new ManualClock();
  const timers = new ManualTimers(clock);
  const log = new MemoryChangeLog();
  const coordination = new InProcessCoordination(clock);
  const replicas: Replica[] = [];
  for (let index = 0; index < count; index += 1) {
    replicas.push(await startReplica(`replica-${index + 1}`, clock, timers, log, coordination));
  }
  return { clock, timers, log, coordination, replicas };
}

async function startReplica(id: string, clock: ManualClock, timers: ManualTimers, log: MemoryChangeLog, coordination: InProcessCoordination): Promise<Replica> {
  const store = new ReplicatedInstanceStore({ log, leases: coordination.leases, replicaId: id, clock, logger: logSink("silent").log, leaseTtlMs, takeoverGraceMs, timers });
  open.push(store);
  const registry = new Registry(store, new MemoryChangeFeed(), clock, logSink("silent").log);
  await store.start(registry);
  const events: RegistryEvent[] = [];
  registry.watch(0, "", (event) => events.push(event));
  const detector = new FailureDetector(registry, clock, { timeoutMultiplier: 3, sweepIntervalMs: 1000 }, () => undefined);
  return { id, registry, store, events, detector };
}

/** Lets every follower apply what was committed (the memory log's hints are async). */
async function settle(): Promise<void> {
  for (let round = 0; round < 20; round += 1) await new Promise((resolve) => setImmediate(resolve));
}

async function register(replica: Replica, instanceId: string) {
  return replica.registry.register({
    manifest: manifest({ name: "sql", healthPolicy: { heartbeatIntervalMs: 1000, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 }, capabilities: [{ name: "sql.query", version: "1.2.0", attributes: {} }] }),
    instanceId,
    endpoint: "127.0.0.1:9000",
    host: "h1",
    owner,
  });
}

const discover = (replica: Replica) =>
  replica.registry.discover({ capability: "sql.query", versionRange: "^1", labelSelector: undefined, limit: 0, includeUnhealthy: false }).map((instance) => instance.instanceId);

describe("registrations shared by replicas", () => {
  it("an agent registered through one replica is discovered and watched on the others, with its health", async () => {
    const { replicas } = await cluster(3);
    const [a, b, c] = replicas as [Replica, Replica, Replica];
    await register(a, "i-1");
    await settle();
    expect(c.registry.get("i-1")?.endpoint).toBe("127.0.0.1:9000");
    expect(c.events.map((event) => [event.type, event.instance.instanceId])).toContainEqual([WatchResponse_EventType.EVENT_TYPE_ADDED, "i-1"]);
    // STARTING is not routable anywhere; the heartbeat that makes it READY reaches every replica.
    expect(discover(b)).toEqual([]);
    a.registry.recordHeartbeat("i-1", undefined, "ready");
    await settle();
    expect(discover(b)).toEqual(["i-1"]);
    expect(discover(c)).toEqual(["i-1"]);
    expect(c.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_READY);
    // Only the replica whose session speaks for it judges its heartbeats.
    expect([a, b, c].map((replica) => replica.registry.holdsLiveness("i-1"))).toEqual([true, false, false]);
  });

  it("only the holder's failure detector times an instance out, and a sidecar that moves takes its liveness along", async () => {
    const { clock, replicas } = await cluster(2);
    const [a, b] = replicas as [Replica, Replica];
    await register(a, "i-1");
    a.registry.recordHeartbeat("i-1", undefined, "ready");
    await settle();
    clock.advance(10_000);
    // b has seen no heartbeat for 10 s but does not judge: nothing changes.
    b.detector.sweep();
    await settle();
    expect(a.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_READY);
    // The sidecar reconnects to b: b's session speaks for the instance now.
    b.registry.claimLiveness("i-1");
    await settle();
    expect(a.registry.holdsLiveness("i-1")).toBe(false);
    expect(b.registry.holdsLiveness("i-1")).toBe(true);
    // a's old stream ends late: its view is stale and changes nothing anywhere.
    expect(a.registry.applyHealthEvent("i-1", { type: "streamLost" }, "sidecar stream lost")).toBeUndefined();
    b.registry.recordHeartbeat("i-1", undefined, "degraded");
    await settle();
    expect(a.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_DEGRADED);
    // Silent on b past its timeout: b's detector finds it, a learns it.
    clock.advance(3_001);
    b.detector.sweep();
    await settle();
    expect(a.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_UNHEALTHY);
  });

  it("the leader's traffic share reaches the holder without taking its liveness, and a deregistration anywhere removes it everywhere", async () => {
    const { replicas } = await cluster(2);
    const [a, b] = replicas as [Replica, Replica];
    const registered = await register(b, "i-1");
    expect(registered.instance.deployment).toBe("");
    await b.registry.register({
      manifest: manifest({ name: "canary", version: "2.0.0", capabilities: [{ name: "sql.query", version: "1.3.0", attributes: {} }] }),
      instanceId: "i-2",
      endpoint: "127.0.0.1:9001",
      host: "h1",
      owner,
      deployment: "sql",
    });
    await settle();
    a.registry.setTrafficSplit("sql", { "2.0.0": 10 });
    await settle();
    expect(b.registry.get("i-2")?.trafficPercent).toBe(10);
    expect(b.registry.holdsLiveness("i-2")).toBe(true);
    expect(a.registry.holdsLiveness("i-2")).toBe(false);
    await a.registry.deregister("i-2", "lost");
    await settle();
    expect(b.registry.get("i-2")).toBeUndefined();
    expect(b.events.at(-1)?.type).toBe(WatchResponse_EventType.EVENT_TYPE_REMOVED);
  });

  it("when a replica's lease lapses another takes its instances over and times out the silent ones", async () => {
    const { clock, timers, log, coordination, replicas } = await cluster(2);
    const [a, b] = replicas as [Replica, Replica];
    await register(a, "i-1");
    a.registry.recordHeartbeat("i-1", undefined, "ready");
    await settle();
    // a dies: nothing renews its lease any more; b renews its own and checks the others'.
    await a.store.close();
    for (let step = 0; step < 6; step += 1) {
      timers.advance(1_000);
      await settle();
    }
    expect(b.registry.holdsLiveness("i-1")).toBe(true);
    expect(b.store.holderOf("i-1")).toBe("replica-2");
    // Its sidecar gets the takeover grace to reconnect somewhere: still READY past the
    // heartbeat timeout, UNHEALTHY once the grace and then the timeout pass in silence.
    timers.advance(3_001);
    await settle();
    b.detector.sweep();
    expect(b.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_READY);
    timers.advance(takeoverGraceMs);
    await settle();
    b.detector.sweep();
    expect(b.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_UNHEALTHY);
    // A replica that starts now loads every registration, with the current holder.
    await settle();
    const late = await startReplica("replica-3", clock, timers, log, coordination);
    expect(late.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_UNHEALTHY);
    expect(late.store.holderOf("i-1")).toBe("replica-2");
    // A live replica is never taken over.
    expect(await late.store.takeOverLapsedReplicas()).toBe(0);
  });

  it("a lease lost for less than a renewal (Redis restarted) takes nothing over; a heartbeat reclaims what was taken", async () => {
    const { timers, coordination, replicas } = await cluster(2);
    const [a, b] = replicas as [Replica, Replica];
    await register(a, "i-1");
    a.registry.recordHeartbeat("i-1", undefined, "ready");
    await settle();
    // Redis came back empty: a's lease is gone until a renews it, at most a third of the TTL later.
    await coordination.leases.release("replica/replica-1", "replica-1");
    for (let step = 0; step < 6; step += 1) {
      timers.advance(500);
      await settle();
    }
    expect(b.store.holderOf("i-1")).toBe("replica-1");
    // Had b taken it over anyway, the next heartbeat through a's session takes it back.
    await b.store.put(b.registry.get("i-1")!, "register");
    await settle();
    expect(a.registry.holdsLiveness("i-1")).toBe(false);
    a.registry.recordHeartbeat("i-1", undefined, "degraded");
    await settle();
    expect(a.registry.holdsLiveness("i-1")).toBe(true);
    expect(b.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_DEGRADED);
  });

  it("concurrent writes of one instance by two replicas converge on every replica", async () => {
    const { log, replicas } = await cluster(2);
    const [a, b] = replicas as [Replica, Replica];
    await register(a, "i-1");
    await settle();
    // Both register it at once (a sidecar retrying through both): one write conflicts and is redone.
    await Promise.all([register(a, "i-1"), register(b, "i-1")]);
    a.registry.recordHeartbeat("i-1", undefined, "ready");
    await settle();
    const { item } = await log.get(stateKeys.instance("i-1"));
    const stored = JSON.parse(Buffer.from(item?.value ?? []).toString()) as { holder: string };
    const holder = stored.holder === "replica-1" ? a : b;
    expect(holder.registry.holdsLiveness("i-1")).toBe(true);
    expect((holder === a ? b : a).registry.holdsLiveness("i-1")).toBe(false);
    holder.registry.recordHeartbeat("i-1", undefined, "degraded");
    await settle();
    expect(a.registry.get("i-1")?.state).toBe(b.registry.get("i-1")?.state);
    expect(a.registry.get("i-1")?.state).toBe(HealthState.HEALTH_STATE_DEGRADED);
  });
});
