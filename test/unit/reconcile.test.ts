import { describe, expect, it } from "vitest";
import type { Deployment } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { SidecarSnapshot } from "../../services/orchestrator/domain/placement.js";
import {
  type ObservedInstance,
  type PlanInput,
  type PlanResult,
  type ReconcileAction,
  type ReconcileState,
  observeInstance,
  plan,
  reservePendingStarts,
} from "../../services/orchestrator/domain/reconcile.js";
import { manifest } from "../helpers/manifests.js";

const { HEALTH_STATE_STARTING: STARTING, HEALTH_STATE_READY: READY, HEALTH_STATE_UNHEALTHY: UNHEALTHY } = HealthState;
const { HEALTH_STATE_DRAINING: DRAINING, HEALTH_STATE_FAILED: FAILED, HEALTH_STATE_STOPPED: STOPPED } = HealthState;
const T0 = 1_700_000_000_000;

function deployment(replicas: number, overrides: Partial<Deployment> = {}): Deployment {
  return {
    name: "word-stats",
    manifest: manifest({ name: "word-stats", version: "1.0.0" }),
    process: { command: "node", args: ["examples/agents/word-stats.mjs"], env: {}, cwd: "", image: "" },
    replicas,
    restartPolicy: undefined,
    strategy: undefined,
    minReady: 0,
    generation: 1,
    status: undefined,
    createdAtMs: T0,
    updatedAtMs: T0,
    ...overrides,
  };
}

function sidecar(sidecarId: string, overrides: Partial<SidecarSnapshot> = {}): SidecarSnapshot {
  return { sidecarId, capacity: 10, instanceCount: 0, byDeployment: {}, connected: true, ...overrides };
}

/** Sidecar snapshots as the wiring builds them: counts of registered instances. */
function sidecarsFor(ids: readonly string[], instances: readonly ObservedInstance[], capacity = 10): SidecarSnapshot[] {
  return ids.map((sidecarId) => {
    const here = instances.filter((instance) => instance.sidecarId === sidecarId);
    return sidecar(sidecarId, { capacity, instanceCount: here.length, byDeployment: here.length > 0 ? { "word-stats": here.length } : {} });
  });
}

function instance(instanceId: string, sidecarId: string, state: HealthState, overrides: Partial<ObservedInstance> = {}): ObservedInstance {
  return { instanceId, deployment: "word-stats", version: "1.0.0", sidecarId, state, startedAtMs: T0, errorRate: 0, ...overrides };
}

function idSource(prefix = "i"): () => string {
  let next = 0;
  return () => `${prefix}-${++next}`;
}

function run(input: Partial<PlanInput> & Pick<PlanInput, "desired">): PlanResult {
  return plan({ observed: [], sidecars: [], nowMs: T0, state: undefined, newInstanceId: idSource(), ...input });
}

/** Lifecycle commands only, in a compact form that reads well in expectations. */
function commands(actions: readonly ReconcileAction[]): string[] {
  return actions.flatMap((action) => {
    switch (action.type) {
      case "start":
        return [`start ${action.instanceId}@${action.sidecarId} ${action.version}`];
      case "drain":
      case "stop":
        return [`${action.type} ${action.instanceId}@${action.sidecarId}`];
      case "reschedule":
        return [`reschedule ${action.instanceId}@${action.fromSidecarId} -> ${action.start.instanceId}@${action.start.sidecarId}`];
      case "forget":
        return [`forget ${action.instanceId}`];
      default:
        return [];
    }
  });
}

/** Settled state: the deployment at `replicas` READY instances on s1..s3, as a previous pass left it. */
function settled(instances: ObservedInstance[], replicas: number): ReconcileState {
  const sidecarIds = ["s1", "s2", "s3"];
  const first = run({ desired: deployment(replicas), observed: instances, sidecars: sidecarsFor(sidecarIds, instances) });
  expect(commands(first.actions)).toEqual([]);
  expect(first.state.rollout.phase).toBe("complete");
  return first.state;
}

describe("plan: scale up", () => {
  it("starts 0 → 3 spread over three sidecars, with the full StartAgent", () => {
    const result = run({ desired: deployment(3), sidecars: [sidecar("s1"), sidecar("s2"), sidecar("s3")] });
    expect(commands(result.actions)).toEqual(["start i-1@s1 1.0.0", "start i-2@s2 1.0.0", "start i-3@s3 1.0.0"]);
    const start = result.actions.find((action) => action.type === "start");
    expect(start?.type === "start" && start.command).toMatchObject({
      deployment: "word-stats",
      instanceId: "i-1",
      manifest: { name: "word-stats", version: "1.0.0" },
      process: { command: "node", args: ["examples/agents/word-stats.mjs"] },
      restartPolicy: { mode: 1, maxRestarts: 5, windowMs: 60_000 },
    });
    expect(result.state.pendingStarts.map((pending) => pending.instanceId)).toEqual(["i-1", "i-2", "i-3"]);
    expect(result.status).toMatchObject({ replicas: 3, readyReplicas: 0, phase: "progressing" });
  });

  it("is idempotent: the same observation while starts are pending starts nothing more", () => {
    const sidecars = [sidecar("s1"), sidecar("s2")];
    const first = run({ desired: deployment(3), sidecars });
    let state = first.state;
    for (let pass = 0; pass < 5; pass += 1) {
      const again = run({ desired: deployment(3), sidecars, state, nowMs: T0 + pass * 1000, newInstanceId: idSource("dup") });
      expect(commands(again.actions)).toEqual([]);
      expect(again.actions).toEqual([]);
      state = again.state;
    }
    expect(state.pendingStarts).toHaveLength(3);
  });

  it("counts its own pending starts when placing more, so spread holds across passes", () => {
    const sidecars = [sidecar("s1"), sidecar("s2"), sidecar("s3")];
    const first = run({ desired: deployment(2), sidecars });
    expect(commands(first.actions)).toEqual(["start i-1@s1 1.0.0", "start i-2@s2 1.0.0"]);
    const second = run({ desired: deployment(3), sidecars, state: first.state, newInstanceId: idSource("n") });
    expect(commands(second.actions)).toEqual(["start n-1@s3 1.0.0"]);
  });

  it("settles pending starts as they register and completes once all are READY", () => {
    const sidecarIds = ["s1", "s2", "s3"];
    const first = run({ desired: deployment(3), sidecars: sidecarsFor(sidecarIds, []) });
    const starting = ["i-1", "i-2", "i-3"].map((id, index) => instance(id, `s${index + 1}`, STARTING));
    const registered = run({ desired: deployment(3), observed: starting, sidecars: sidecarsFor(sidecarIds, starting), state: first.state, nowMs: T0 + 200 });
    expect(commands(registered.actions)).toEqual([]);
    expect(registered.state.pendingStarts).toEqual([]);
    const ready = starting.map((entry) => ({ ...entry, state: READY, readyAtMs: T0 + 400 }));
    const done = run({ desired: deployment(3), observed: ready, sidecars: sidecarsFor(sidecarIds, ready), state: registered.state, nowMs: T0 + 400 });
    expect(done.actions).toEqual([
      { type: "rolloutProgress", rollout: expect.objectContaining({ phase: 2, readyReplicas: 3, desiredReplicas: 3 }) },
    ]);
    expect(done.status).toMatchObject({ replicas: 3, readyReplicas: 3, updatedReplicas: 3, phase: "complete" });
  });

  it("waits for capacity and says so in the status", () => {
    const result = run({ desired: deployment(3), sidecars: [sidecar("s1", { capacity: 1 })] });
    expect(commands(result.actions)).toEqual(["start i-1@s1 1.0.0"]);
    expect(result.status.message).toContain("2 instance(s) wait for sidecar capacity");
  });

  it("gives up on a start that never registers and starts another", () => {
    const sidecars = [sidecar("s1")];
    const first = run({ desired: deployment(1), sidecars });
    const later = run({ desired: deployment(1), sidecars, state: first.state, nowMs: T0 + 60_000, newInstanceId: idSource("retry") });
    expect(commands(later.actions)).toEqual(["stop i-1@s1", "start retry-1@s1 1.0.0"]);
    expect(later.actions.find((action) => action.type === "stop")).toMatchObject({ reason: "never registered" });
  });

  it("replaces a pending start whose sidecar went away", () => {
    const first = run({ desired: deployment(1), sidecars: [sidecar("s1"), sidecar("s2")] });
    expect(commands(first.actions)).toEqual(["start i-1@s1 1.0.0"]);
    const later = run({ desired: deployment(1), sidecars: [sidecar("s2")], state: first.state, newInstanceId: idSource("moved") });
    expect(commands(later.actions)).toEqual(["start moved-1@s2 1.0.0"]);
  });
});

describe("plan: scale down", () => {
  const three = [
    instance("a", "s1", READY, { startedAtMs: T0 + 1 }),
    instance("b", "s2", READY, { startedAtMs: T0 + 2 }),
    instance("c", "s3", READY, { startedAtMs: T0 + 3 }),
  ];

  it("3 → 1 drains the two newest, then stops them once the drain is confirmed", () => {
    const state = settled(three, 3);
    const sidecars = sidecarsFor(["s1", "s2", "s3"], three);
    const drain = run({ desired: deployment(1), observed: three, sidecars, state, nowMs: T0 + 1000 });
    expect(commands(drain.actions)).toEqual(["drain c@s3", "drain b@s2"]);
    expect(drain.actions.find((action) => action.type === "drain")).toMatchObject({ graceMs: 10_000, reason: "scale down" });

    const repeat = run({ desired: deployment(1), observed: three, sidecars, state: drain.state, nowMs: T0 + 1500 });
    expect(commands(repeat.actions)).toEqual([]);

    const draining = three.map((entry) => (entry.instanceId === "a" ? entry : { ...entry, state: DRAINING }));
    const stop = run({ desired: deployment(1), observed: draining, sidecars, state: repeat.state, nowMs: T0 + 2000 });
    expect(commands(stop.actions)).toEqual(["stop c@s3", "stop b@s2"]);
    expect(stop.actions.find((action) => action.type === "stop")).toMatchObject({ graceMs: 5000 });

    const stillStopping = run({ desired: deployment(1), observed: draining, sidecars, state: stop.state, nowMs: T0 + 3000 });
    expect(commands(stillStopping.actions)).toEqual([]);

    const gone = [three[0] as ObservedInstance];
    const final = run({ desired: deployment(1), observed: gone, sidecars: sidecarsFor(["s1", "s2", "s3"], gone), state: stillStopping.state, nowMs: T0 + 4000 });
    expect(commands(final.actions)).toEqual([]);
    expect(final.state.leaving).toEqual([]);
    expect(final.status).toMatchObject({ replicas: 1, readyReplicas: 1 });
  });

  it("stops a drained instance anyway when the sidecar never confirms the drain", () => {
    const state = settled(three, 3);
    const sidecars = sidecarsFor(["s1", "s2", "s3"], three);
    const drain = run({ desired: deployment(2), observed: three, sidecars, state });
    expect(commands(drain.actions)).toEqual(["drain c@s3"]);
    const early = run({ desired: deployment(2), observed: three, sidecars, state: drain.state, nowMs: T0 + 9_999 });
    expect(commands(early.actions)).toEqual([]);
    const late = run({ desired: deployment(2), observed: three, sidecars, state: early.state, nowMs: T0 + 10_000 });
    expect(commands(late.actions)).toEqual(["stop c@s3"]);
  });

  it("sends a stop again when the instance outlives grace plus retry time", () => {
    const state = settled(three, 3);
    const sidecars = sidecarsFor(["s1", "s2", "s3"], three);
    const withUnhealthy = three.map((entry) => (entry.instanceId === "a" ? { ...entry, state: UNHEALTHY } : entry));
    const stop = run({ desired: deployment(2), observed: withUnhealthy, sidecars, state });
    expect(commands(stop.actions)).toEqual(["stop a@s1"]);
    const before = run({ desired: deployment(2), observed: withUnhealthy, sidecars, state: stop.state, nowMs: T0 + 19_999 });
    expect(commands(before.actions)).toEqual([]);
    const again = run({ desired: deployment(2), observed: withUnhealthy, sidecars, state: before.state, nowMs: T0 + 20_000 });
    expect(commands(again.actions)).toEqual(["stop a@s1"]);
  });

  it("takes unhealthy instances first and stops them without a drain", () => {
    const mixed = [instance("a", "s1", READY, { startedAtMs: T0 + 1 }), instance("b", "s2", UNHEALTHY), instance("c", "s3", READY, { startedAtMs: T0 + 3 })];
    const state = settled(mixed.map((entry) => ({ ...entry, state: READY })), 3);
    const result = run({ desired: deployment(2), observed: mixed, sidecars: sidecarsFor(["s1", "s2", "s3"], mixed), state });
    expect(commands(result.actions)).toEqual(["stop b@s2"]);
  });

  it("drains everything at replicas 0 (how a deleted deployment is emptied)", () => {
    const state = settled(three, 3);
    const result = run({ desired: deployment(0), observed: three, sidecars: sidecarsFor(["s1", "s2", "s3"], three), state });
    expect(commands(result.actions)).toEqual(["drain c@s3", "drain b@s2", "drain a@s1"]);
  });
});

describe("plan: recovery", () => {
  it("stops a FAILED instance and starts a replacement", () => {
    const observed = [instance("a", "s1", READY), instance("b", "s2", FAILED), instance("c", "s3", READY)];
    const state = settled(observed.map((entry) => ({ ...entry, state: READY })), 3);
    const result = run({ desired: deployment(3), observed, sidecars: sidecarsFor(["s1", "s2", "s3"], observed), state, newInstanceId: idSource("new") });
    expect(commands(result.actions)).toEqual(["stop b@s2", "start new-1@s1 1.0.0"]);
    expect(result.actions.find((action) => action.type === "stop")).toMatchObject({ reason: "failed" });
    const again = run({ desired: deployment(3), observed, sidecars: sidecarsFor(["s1", "s2", "s3"], observed), state: result.state, nowMs: T0 + 500 });
    expect(commands(again.actions)).toEqual([]);
  });

  it("ignores a STOPPED instance its sidecar is about to deregister, and replaces it", () => {
    const observed = [instance("a", "s1", READY), instance("b", "s2", STOPPED)];
    const state = settled(observed.map((entry) => ({ ...entry, state: READY })), 2);
    const result = run({ desired: deployment(2), observed, sidecars: sidecarsFor(["s1", "s2"], observed), state });
    expect(commands(result.actions)).toEqual(["start i-1@s1 1.0.0"]);
  });

  it("reschedules the instance of a vanished sidecar on the other one", () => {
    const observed = [instance("a", "s1", READY), instance("b", "s2", READY)];
    const state = settled(observed, 2);
    const lost = [observed[0] as ObservedInstance, { ...(observed[1] as ObservedInstance), state: UNHEALTHY }];
    const result = run({ desired: deployment(2), observed: lost, sidecars: sidecarsFor(["s1"], lost), state, newInstanceId: idSource("moved") });
    expect(commands(result.actions)).toEqual(["reschedule b@s2 -> moved-1@s1"]);
    const reschedule = result.actions.find((action) => action.type === "reschedule");
    expect(reschedule).toMatchObject({ start: { type: "start", sidecarId: "s1", version: "1.0.0", command: { instanceId: "moved-1" } } });

    const repeat = run({ desired: deployment(2), observed: lost, sidecars: sidecarsFor(["s1"], lost), state: result.state, nowMs: T0 + 100 });
    expect(commands(repeat.actions)).toEqual([]);

    const after = [observed[0] as ObservedInstance, instance("moved-1", "s1", READY)];
    const settledAgain = run({ desired: deployment(2), observed: after, sidecars: sidecarsFor(["s1"], after), state: repeat.state, nowMs: T0 + 200 });
    expect(commands(settledAgain.actions)).toEqual([]);
    expect(settledAgain.state.leaving).toEqual([]);
  });

  it("leaves a disconnected sidecar's instances alone while they are still healthy (reconnect grace)", () => {
    const observed = [instance("a", "s1", READY), instance("b", "s2", READY)];
    const state = settled(observed, 2);
    const sidecars = [sidecar("s1", { instanceCount: 1 }), sidecar("s2", { instanceCount: 1, connected: false })];
    const result = run({ desired: deployment(2), observed, sidecars, state });
    expect(commands(result.actions)).toEqual([]);
  });

  it("forgets a lost instance it cannot place elsewhere, and places it when capacity appears", () => {
    const observed = [instance("a", "s1", READY), instance("b", "s2", UNHEALTHY)];
    const state = settled(observed.map((entry) => ({ ...entry, state: READY })), 2);
    const full = [sidecar("s1", { capacity: 1, instanceCount: 1, byDeployment: { "word-stats": 1 } })];
    const result = run({ desired: deployment(2), observed, sidecars: full, state });
    expect(commands(result.actions)).toEqual(["forget b"]);
    expect(result.status.message).toContain("1 instance(s) wait for sidecar capacity");
    const remaining = [observed[0] as ObservedInstance];
    const grown = run({ desired: deployment(2), observed: remaining, sidecars: [...full, sidecar("s3")], state: result.state, newInstanceId: idSource("late") });
    expect(commands(grown.actions)).toEqual(["start late-1@s3 1.0.0"]);
  });

  it("forgets an instance it was already stopping when its sidecar vanishes, without replacing it twice", () => {
    const three = [instance("a", "s1", READY), instance("b", "s2", READY, { startedAtMs: T0 + 5 })];
    const state = settled(three, 2);
    const drain = run({ desired: deployment(1), observed: three, sidecars: sidecarsFor(["s1", "s2"], three), state });
    expect(commands(drain.actions)).toEqual(["drain b@s2"]);
    const lost = [three[0] as ObservedInstance, { ...(three[1] as ObservedInstance), state: STOPPED }];
    const result = run({ desired: deployment(1), observed: lost, sidecars: sidecarsFor(["s1"], lost), state: drain.state });
    expect(commands(result.actions)).toEqual(["forget b"]);
  });

  it("ignores instances of other deployments", () => {
    const other = { ...instance("x", "s1", READY), deployment: "other" };
    const result = run({ desired: deployment(1), observed: [other], sidecars: [sidecar("s1")] });
    expect(commands(result.actions)).toEqual(["start i-1@s1 1.0.0"]);
  });
});

describe("reservePendingStarts", () => {
  it("lets two deployments planned in one tick share sidecar capacity", () => {
    const sidecars = [sidecar("s1", { capacity: 2 }), sidecar("s2", { capacity: 2 })];
    const web = run({ desired: deployment(3), sidecars });
    expect(commands(web.actions)).toEqual(["start i-1@s1 1.0.0", "start i-2@s2 1.0.0", "start i-3@s1 1.0.0"]);
    const other = deployment(3, { name: "tokenizer", manifest: manifest({ name: "tokenizer" }) });
    const tokenizer = run({ desired: other, sidecars: reservePendingStarts(sidecars, [web.state]), newInstanceId: idSource("t") });
    expect(commands(tokenizer.actions)).toEqual(["start t-1@s2 1.0.0"]);
    expect(tokenizer.status.message).toContain("2 instance(s) wait for sidecar capacity");
  });
});

describe("observeInstance", () => {
  it("takes version, state, start time and error rate from a registry instance", () => {
    const observed = observeInstance(
      {
        instanceId: "i-1",
        spiffeId: "spiffe://agentmesh.local/sidecar/host-a",
        manifest: manifest({ name: "word-stats", version: "1.1.0" }),
        endpoint: "127.0.0.1:7430",
        host: "host-a",
        state: READY,
        load: { inFlight: 1, queueDepth: 0, cpuMillis: 5, rssBytes: 1, p50Ms: 2, errorRate: 0.25 },
        registeredAtMs: T0 + 5,
        lastHeartbeatAtMs: T0 + 6,
        stateReason: "heartbeat",
        deployment: "word-stats",
      },
      "s1",
      T0 + 7,
    );
    expect(observed).toEqual({
      instanceId: "i-1",
      deployment: "word-stats",
      version: "1.1.0",
      sidecarId: "s1",
      state: READY,
      startedAtMs: T0 + 5,
      readyAtMs: T0 + 7,
      errorRate: 0.25,
    });
  });
});
