import { describe, expect, it } from "vitest";
import type { Deployment } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { templateOf } from "../../services/orchestrator/domain/deployment-spec.js";
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

/** The template revision deployment() has at `version` (what its instances carry in their revision label). */
function revisionOf(version: string): string {
  return templateOf(deployment(1, { manifest: manifest({ name: "word-stats", version }) })).revision;
}

function instance(instanceId: string, sidecarId: string, state: HealthState, overrides: Partial<ObservedInstance> = {}): ObservedInstance {
  const version = overrides.version ?? "1.0.0";
  return {
    instanceId,
    deployment: "word-stats",
    version,
    revision: revisionOf(version),
    sidecarId,
    claim: { kind: "claimed" },
    state,
    startedAtMs: T0,
    errorRate: 0,
    ...overrides,
  };
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

/** Settled state: the deployment at `replicas` READY instances on `sidecarIds`, as a previous pass left it. */
function settled(instances: ObservedInstance[], replicas: number, sidecarIds = ["s1", "s2", "s3"]): ReconcileState {
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
  it("takes version, revision, state, start time, error rate and its claim from a registry instance", () => {
    const observed = observeInstance(
      {
        instanceId: "i-1",
        spiffeId: "spiffe://agentmesh.local/sidecar/host-a",
        manifest: manifest({ name: "word-stats", version: "1.1.0", labels: { env: "test", "agentmesh.io/template-hash": "0123456789" } }),
        endpoint: "127.0.0.1:7430",
        host: "host-a",
        state: READY,
        load: { inFlight: 1, queueDepth: 0, cpuMillis: 5, rssBytes: 1, p50Ms: 2, errorRate: 0.25 },
        registeredAtMs: T0 + 5,
        lastHeartbeatAtMs: T0 + 6,
        stateReason: "heartbeat",
        deployment: "word-stats",
        trafficPercent: 0,
      },
      { sidecarId: "s1", claim: { kind: "unclaimed", sinceMs: T0 + 6 }, readyAtMs: T0 + 7 },
    );
    expect(observed).toEqual({
      instanceId: "i-1",
      deployment: "word-stats",
      version: "1.1.0",
      revision: "0123456789",
      sidecarId: "s1",
      claim: { kind: "unclaimed", sinceMs: T0 + 6 },
      state: READY,
      startedAtMs: T0 + 5,
      readyAtMs: T0 + 7,
      errorRate: 0.25,
    });
  });
});

describe("plan: lost instances (who vouches for an instance)", () => {
  it("sidecar session replaced, old instances not claimed → replacements planned at once, whatever their registry state", () => {
    const before = [instance("a", "s1", READY), instance("b", "s2", READY), instance("c", "s2", READY)];
    const state = settled(before, 3, ["s1", "s2"]);
    // s2 restarted: its new session is connected, its Hello listed neither b nor c; the registry still says READY.
    const ghosts = before.map((entry) => (entry.sidecarId === "s2" ? { ...entry, claim: { kind: "disowned" as const } } : entry));
    const sidecars = [sidecar("s1", { instanceCount: 1, byDeployment: { "word-stats": 1 } }), sidecar("s2")];
    const result = run({ desired: deployment(3), observed: ghosts, sidecars, state, newInstanceId: idSource("new") });
    expect(commands(result.actions)).toEqual(["reschedule b@s2 -> new-1@s2", "reschedule c@s2 -> new-2@s1"]);
    expect(result.actions.find((action) => action.type === "reschedule")).toMatchObject({ reason: "its sidecar reconnected without it" });
    expect(result.status).toMatchObject({ replicas: 3, readyReplicas: 1 });

    // Deregistered and replaced: nothing more to do while the replacements start.
    const replaced = [ghosts[0] as ObservedInstance, instance("new-1", "s2", STARTING), instance("new-2", "s1", STARTING)];
    const next = run({ desired: deployment(3), observed: replaced, sidecars: sidecarsFor(["s1", "s2"], replaced), state: result.state, nowMs: T0 + 100 });
    expect(commands(next.actions)).toEqual([]);
    expect(next.state.leaving).toEqual([]);
  });

  it("an instance no session claims, out of routing past the bound, is replaced even though its sidecar is connected", () => {
    const before = [instance("a", "s1", READY), instance("b", "s2", READY)];
    const state = settled(before, 2);
    const stale = [before[0] as ObservedInstance, { ...(before[1] as ObservedInstance), state: UNHEALTHY, claim: { kind: "unclaimed" as const, sinceMs: T0 } }];
    const sidecars = sidecarsFor(["s1", "s2"], stale);
    // As the wiring counts them: a lost instance takes no capacity.
    const withoutLost = sidecarsFor(["s1", "s2"], [stale[0] as ObservedInstance]);
    const options = { lostInstanceTimeoutMs: 15_000 };
    const early = run({ desired: deployment(2), observed: stale, sidecars, state, nowMs: T0 + 14_999, options });
    expect(commands(early.actions)).toEqual([]);
    const late = run({ desired: deployment(2), observed: stale, sidecars: withoutLost, state: early.state, nowMs: T0 + 15_000, options, newInstanceId: idSource("new") });
    expect(commands(late.actions)).toEqual(["reschedule b@s2 -> new-1@s2"]);
    expect(late.actions.find((action) => action.type === "reschedule")).toMatchObject({ reason: "no sidecar has reported it for 15000 ms" });
  });

  it("an unclaimed instance still READY is left to the failure detector, and a claimed UNHEALTHY one to its sidecar", () => {
    const before = [instance("a", "s1", READY), instance("b", "s2", READY)];
    const state = settled(before, 2);
    const observed = [
      { ...(before[0] as ObservedInstance), claim: { kind: "unclaimed" as const, sinceMs: T0 } },
      { ...(before[1] as ObservedInstance), state: UNHEALTHY },
    ];
    const result = run({ desired: deployment(2), observed, sidecars: sidecarsFor(["s1", "s2"], observed), state, nowMs: T0 + 60_000 });
    expect(commands(result.actions)).toEqual([]);
  });
});

describe("plan: spread over hosts", () => {
  it("scale down takes from the most crowded host first, then the newest", () => {
    const observed = [
      instance("a", "s1", READY, { startedAtMs: T0 + 1 }),
      instance("b", "s1", READY, { startedAtMs: T0 + 2 }),
      instance("c", "s2", READY, { startedAtMs: T0 + 3 }),
    ];
    const sidecars = sidecarsFor(["s1", "s2"], observed);
    const state = run({ desired: deployment(3), observed, sidecars }).state;
    const result = run({ desired: deployment(2), observed, sidecars, state });
    expect(commands(result.actions)).toEqual(["drain b@s1"]);
  });

  it("counts hosts, not sidecars: two sidecars on one host are one failure domain", () => {
    const sidecars = [sidecar("s1", { host: "h1" }), sidecar("s2", { host: "h1" }), sidecar("s3", { host: "h2" })];
    const result = run({ desired: deployment(2), sidecars });
    expect(commands(result.actions)).toEqual(["start i-1@s1 1.0.0", "start i-2@s3 1.0.0"]);
  });
});

describe("plan: rebalancing when capacity returns", () => {
  /** Three READY replicas on s1, settled while s1 was the only sidecar. */
  function allOnOne(): { observed: ObservedInstance[]; state: ReconcileState } {
    const observed = [
      instance("a", "s1", READY, { startedAtMs: T0 + 1 }),
      instance("b", "s1", READY, { startedAtMs: T0 + 2 }),
      instance("c", "s1", READY, { startedAtMs: T0 + 3 }),
    ];
    const first = run({ desired: deployment(3), observed, sidecars: sidecarsFor(["s1"], observed) });
    expect(commands(first.actions)).toEqual([]);
    return { observed, state: first.state };
  }

  it("host returns → one move planned, make-before-break: start there, wait READY, then drain one from the crowded host", () => {
    const { observed, state } = allOnOne();
    const twoHosts = (instances: readonly ObservedInstance[]) => sidecarsFor(["s1", "s2"], instances);
    const begin = run({ desired: deployment(3), observed, sidecars: twoHosts(observed), state, nowMs: T0 + 1000, newInstanceId: idSource("m") });
    expect(commands(begin.actions)).toEqual(["start m-1@s2 1.0.0"]);
    expect(begin.actions).toContainEqual(expect.objectContaining({ type: "move", phase: "started", instanceId: "c", fromSidecarId: "s1", toSidecarId: "s2" }));
    expect(begin.status.message).toContain("moving an instance from s1 to s2");

    // Starting: nothing is taken away (maxUnavailable 0), nothing else started.
    const starting = [...observed, instance("m-1", "s2", STARTING, { startedAtMs: T0 + 1000 })];
    const waiting = run({ desired: deployment(3), observed: starting, sidecars: twoHosts(starting), state: begin.state, nowMs: T0 + 2000 });
    expect(commands(waiting.actions)).toEqual([]);

    const ready = starting.map((entry) => (entry.instanceId === "m-1" ? { ...entry, state: READY, readyAtMs: T0 + 2500 } : entry));
    const finish = run({ desired: deployment(3), observed: ready, sidecars: twoHosts(ready), state: waiting.state, nowMs: T0 + 3000 });
    expect(commands(finish.actions)).toEqual(["drain c@s1"]);
    expect(finish.actions.find((action) => action.type === "drain")).toMatchObject({ reason: "rebalance" });
    expect(finish.state.move).toBeUndefined();

    // Drained and gone: 2 + 1 is as even as three replicas get on two hosts; no further move.
    const after = ready.filter((entry) => entry.instanceId !== "c");
    const settledAgain = run({ desired: deployment(3), observed: after, sidecars: twoHosts(after), state: finish.state, nowMs: T0 + 4000 });
    expect(commands(settledAgain.actions)).toEqual([]);
    const later = run({ desired: deployment(3), observed: after, sidecars: twoHosts(after), state: settledAgain.state, nowMs: T0 + 60_000 });
    expect(commands(later.actions)).toEqual([]);
  });

  it.each([
    { spread: "2 + 1", counts: [2, 1], moves: false },
    { spread: "3 + 0 with no free capacity on the empty host", counts: [3, 0], moves: false, capacity: 0 },
    { spread: "4 + 0", counts: [4, 0], moves: true },
    { spread: "3 + 1", counts: [3, 1], moves: true },
  ])("moves only when the spread improves by at least one: $spread", ({ counts, moves, capacity }) => {
    const [onFirst = 0, onSecond = 0] = counts;
    const observed = [
      ...Array.from({ length: onFirst }, (_, index) => instance(`a${index}`, "s1", READY, { startedAtMs: T0 + index })),
      ...Array.from({ length: onSecond }, (_, index) => instance(`b${index}`, "s2", READY, { startedAtMs: T0 + index })),
    ];
    const replicas = onFirst + onSecond;
    const sidecars = sidecarsFor(["s1", "s2"], observed).map((entry) => (entry.sidecarId === "s2" && capacity !== undefined ? { ...entry, capacity } : entry));
    const first = run({ desired: deployment(replicas), observed, sidecars: sidecarsFor(["s1"], observed) });
    const result = run({ desired: deployment(replicas), observed, sidecars, state: first.state, nowMs: T0 + 1000, newInstanceId: idSource("m") });
    expect(commands(result.actions)).toEqual(moves ? ["start m-1@s2 1.0.0"] : []);
  });

  it("gives a move up when the new instance is not READY in time, stops it, and waits before trying again", () => {
    const { observed, state } = allOnOne();
    const sidecars = (instances: readonly ObservedInstance[]) => sidecarsFor(["s1", "s2"], instances);
    const begin = run({ desired: deployment(3), observed, sidecars: sidecars(observed), state, nowMs: T0 + 1000, newInstanceId: idSource("m") });
    const stuck = [...observed, instance("m-1", "s2", STARTING, { startedAtMs: T0 + 1000 })];
    const giveUp = run({ desired: deployment(3), observed: stuck, sidecars: sidecars(stuck), state: begin.state, nowMs: T0 + 31_000 });
    expect(commands(giveUp.actions)).toEqual(["stop m-1@s2"]);
    expect(giveUp.actions).toContainEqual(expect.objectContaining({ type: "move", phase: "abandoned" }));

    const gone = run({ desired: deployment(3), observed, sidecars: sidecars(observed), state: giveUp.state, nowMs: T0 + 32_000, newInstanceId: idSource("again") });
    expect(commands(gone.actions)).toEqual([]);
    const afterBackoff = run({ desired: deployment(3), observed, sidecars: sidecars(observed), state: gone.state, nowMs: T0 + 31_000 + 60_000, newInstanceId: idSource("again") });
    expect(commands(afterBackoff.actions)).toEqual(["start again-1@s2 1.0.0"]);
  });

  it("a scale change during a move calls it off without holding back later moves", () => {
    const { observed, state } = allOnOne();
    const twoHosts = (instances: readonly ObservedInstance[]) => sidecarsFor(["s1", "s2"], instances);
    const begin = run({ desired: deployment(3), observed, sidecars: twoHosts(observed), state, nowMs: T0 + 1000, newInstanceId: idSource("m") });
    const starting = [...observed, instance("m-1", "s2", STARTING, { startedAtMs: T0 + 1000 })];
    const scaled = run({ desired: deployment(4), observed: starting, sidecars: twoHosts(starting), state: begin.state, nowMs: T0 + 2000, newInstanceId: idSource("s") });
    expect(scaled.actions).toContainEqual(expect.objectContaining({ type: "move", phase: "abandoned", reason: "the deployment changed" }));
    expect(commands(scaled.actions)).toEqual([]);
    expect(scaled.state.move).toBeUndefined();
    expect(scaled.state.moveBlockedUntilMs).toBeUndefined();
  });

  it("with maxSurge 0 and maxUnavailable 1 breaks before making: one drained from the crowded host, its replacement placed by spread", () => {
    const strategy = { maxSurge: 0, maxUnavailable: 1, readyTimeoutMs: 0, maxErrorRate: 0, canaryWeightPercent: 0 };
    const observed = [instance("a", "s1", READY, { startedAtMs: T0 + 1 }), instance("b", "s1", READY, { startedAtMs: T0 + 2 })];
    const first = run({ desired: deployment(2, { strategy }), observed, sidecars: sidecarsFor(["s1"], observed) });
    const result = run({ desired: deployment(2, { strategy }), observed, sidecars: sidecarsFor(["s1", "s2"], observed), state: first.state, nowMs: T0 + 1000 });
    expect(commands(result.actions)).toEqual(["drain b@s1"]);
    const remaining = [observed[0] as ObservedInstance];
    const replace = run({ desired: deployment(2, { strategy }), observed: remaining, sidecars: sidecarsFor(["s1", "s2"], remaining), state: result.state, nowMs: T0 + 2000, newInstanceId: idSource("r") });
    expect(commands(replace.actions)).toEqual(["start r-1@s2 1.0.0"]);
  });

  it("with maxSurge 0 and maxUnavailable 0 never moves (no availability to spend)", () => {
    const strategy = { maxSurge: 0, maxUnavailable: 0, readyTimeoutMs: 0, maxErrorRate: 0, canaryWeightPercent: 0 };
    const observed = [instance("a", "s1", READY), instance("b", "s1", READY, { startedAtMs: T0 + 2 })];
    const first = run({ desired: deployment(2, { strategy }), observed, sidecars: sidecarsFor(["s1"], observed) });
    const result = run({ desired: deployment(2, { strategy }), observed, sidecars: sidecarsFor(["s1", "s2"], observed), state: first.state, nowMs: T0 + 1000 });
    expect(commands(result.actions)).toEqual([]);
  });
});

describe("plan: template revisions", () => {
  it("template change with same version (env) → new revision rolled, make-before-break", () => {
    const observed = [instance("a", "s1", READY), instance("b", "s2", READY), instance("c", "s3", READY)];
    const state = settled(observed, 3);
    const changed = deployment(3, { process: { command: "node", args: ["examples/agents/word-stats.mjs"], env: { LOG_LEVEL: "debug" }, cwd: "", image: "" } });
    const result = run({ desired: changed, observed, sidecars: sidecarsFor(["s1", "s2", "s3"], observed), state, newInstanceId: idSource("new") });
    expect(commands(result.actions)).toEqual(["start new-1@s1 1.0.0"]);
    const start = result.actions.find((action) => action.type === "start");
    expect(start?.type === "start" && start.command.process?.env).toEqual({ LOG_LEVEL: "debug" });
    const revision = templateOf(changed).revision;
    expect(revision).not.toBe(revisionOf("1.0.0"));
    expect(start?.type === "start" && start.command.manifest?.labels).toMatchObject({ "agentmesh.io/template-hash": revision });
    expect(result.state.rollout).toMatchObject({ phase: "progressing", fromRevision: revisionOf("1.0.0"), toRevision: revision, fromVersion: "1.0.0", toVersion: "1.0.0" });
    expect(result.state.rollout.message).toBe(`1 of 3 replicas updated to 1.0.0 (revision ${revision}), 0 READY`);
    expect(result.status.updatedReplicas).toBe(1);
  });

  it.each([
    { change: "identical spec", patch: {}, rolls: false },
    { change: "replicas only", patch: { replicas: 4 }, rolls: false },
    { change: "strategy only", patch: { strategy: { maxSurge: 2, maxUnavailable: 0, readyTimeoutMs: 0, maxErrorRate: 0, canaryWeightPercent: 0 } }, rolls: false },
    { change: "args", patch: { process: { command: "node", args: ["examples/agents/word-stats.mjs", "--v2"], env: {}, cwd: "", image: "" } }, rolls: true },
    { change: "command", patch: { process: { command: "bun", args: ["examples/agents/word-stats.mjs"], env: {}, cwd: "", image: "" } }, rolls: true },
    { change: "image", patch: { process: { command: "node", args: ["examples/agents/word-stats.mjs"], env: {}, cwd: "", image: "word-stats:2" } }, rolls: true },
    { change: "resources", patch: { manifest: manifest({ name: "word-stats", resources: { memoryLimitBytes: 1 << 28, invokeRatePerSecond: 0, invokeBurst: 0, maxInFlight: 8, maxMessageBytes: 0 } }) }, rolls: true },
    { change: "manifest labels", patch: { manifest: manifest({ name: "word-stats", labels: { env: "prod" } }) }, rolls: true },
    { change: "restart policy", patch: { restartPolicy: { mode: 3, maxRestarts: 0, windowMs: 0, initialBackoffMs: 0, maxBackoffMs: 0 } }, rolls: true },
  ])("$change: new rollout $rolls", ({ patch, rolls }) => {
    const observed = [instance("a", "s1", READY), instance("b", "s2", READY), instance("c", "s3", READY)];
    const state = settled(observed, 3);
    const result = run({ desired: deployment(3, patch), observed, sidecars: sidecarsFor(["s1", "s2", "s3"], observed), state, newInstanceId: idSource("new") });
    expect(result.state.rollout.phase).toBe(rolls ? "progressing" : "complete");
    expect(result.state.rollout.toRevision === revisionOf("1.0.0")).toBe(!rolls);
  });
});

describe("plan: an instance an operator drained (ctl drain)", () => {
  const two = [instance("a", "s1", READY, { startedAtMs: T0 + 1 }), instance("b", "s1", READY, { startedAtMs: T0 + 2 })];

  it("stops it, which frees its slot on a full sidecar, and then places a replacement", () => {
    const state = settled(two, 2, ["s1"]);
    // s1 runs both and has no room for more: the replacement needs the drained one's slot.
    const drained = two.map((entry) => (entry.instanceId === "b" ? { ...entry, state: DRAINING } : entry));
    const first = run({ desired: deployment(2), observed: drained, sidecars: sidecarsFor(["s1"], drained, 2), state, nowMs: T0 + 1000 });
    expect(commands(first.actions)).toEqual(["stop b@s1"]);
    expect(first.state.leaving).toMatchObject([{ instanceId: "b", step: "stopping", reason: "drained" }]);
    expect(first.status).toMatchObject({ replicas: 1, readyReplicas: 1, message: expect.stringContaining("1 instance(s) wait for sidecar capacity") });
    const waiting = first.actions.find((action) => action.type === "rolloutProgress");
    expect(waiting?.type === "rolloutProgress" && waiting.rollout.waitingForCapacity).toBe(1);

    // Still stopping: no second stop, no start.
    const stopping = run({ desired: deployment(2), observed: drained, sidecars: sidecarsFor(["s1"], drained, 2), state: first.state, nowMs: T0 + 2000 });
    expect(commands(stopping.actions)).toEqual([]);

    // Stopped and deregistered: the slot is free, the replacement goes there.
    const gone = [two[0] as ObservedInstance];
    const replaced = run({ desired: deployment(2), observed: gone, sidecars: sidecarsFor(["s1"], gone, 2), state: stopping.state, nowMs: T0 + 3000, newInstanceId: idSource("r") });
    expect(commands(replaced.actions)).toEqual(["start r-1@s1 1.0.0"]);
    expect(replaced.state.leaving).toEqual([]);
    const placed = replaced.actions.find((action) => action.type === "rolloutProgress");
    expect(placed?.type === "rolloutProgress" && placed.rollout.waitingForCapacity).toBe(0);
  });

  it("starts the replacement at once when a sidecar has room, and stops the drained one too", () => {
    const state = settled(two, 2, ["s1"]);
    const drained = two.map((entry) => (entry.instanceId === "b" ? { ...entry, state: DRAINING } : entry));
    const result = run({ desired: deployment(2), observed: drained, sidecars: sidecarsFor(["s1"], drained, 10), state, nowMs: T0 + 1000, newInstanceId: idSource("r") });
    expect(commands(result.actions)).toEqual(["stop b@s1", "start r-1@s1 1.0.0"]);
  });

  it("leaves a drained instance whose sidecar is gone to the lost-instance rules", () => {
    const state = settled(two, 2, ["s1"]);
    const drained = two.map((entry) => (entry.instanceId === "b" ? { ...entry, sidecarId: "s2", state: DRAINING } : entry));
    const sidecars = [...sidecarsFor(["s1"], drained, 10), sidecar("s2", { connected: false, capacity: 0 })];
    const result = run({ desired: deployment(2), observed: drained, sidecars, state, nowMs: T0 + 1000, newInstanceId: idSource("r") });
    expect(commands(result.actions).filter((command) => command.startsWith("stop"))).toEqual([]);
  });
});
