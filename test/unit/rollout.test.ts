import { describe, expect, it } from "vitest";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { type Deployment, Rollout_Phase, type UpdateStrategy } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type ResolvedStrategy, resolveStrategy, revisionOfManifest, templateOf } from "../../services/orchestrator/domain/deployment-spec.js";
import type { SidecarSnapshot } from "../../services/orchestrator/domain/placement.js";
import { type ObservedInstance, type PlanResult, type ReconcileAction, type ReconcileState, plan } from "../../services/orchestrator/domain/reconcile.js";
import {
  type RolloutInstance,
  type RolloutPhase,
  type RolloutState,
  startRollout,
  toRolloutMessage,
  trafficSplit,
  transitionRollout,
} from "../../services/orchestrator/domain/rollout.js";
import { manifest } from "../helpers/manifests.js";

const { HEALTH_STATE_STARTING: STARTING, HEALTH_STATE_READY: READY, HEALTH_STATE_DEGRADED: DEGRADED } = HealthState;
const { HEALTH_STATE_DRAINING: DRAINING, HEALTH_STATE_FAILED: FAILED } = HealthState;
const T0 = 1_700_000_000_000;
const STEP_MS = 1000;

function deployment(version: string, replicas: number, strategy?: Partial<UpdateStrategy>, args = ["examples/agents/word-stats.mjs"]): Deployment {
  return {
    name: "word-stats",
    manifest: manifest({ name: "word-stats", version }),
    process: { command: "node", args, env: {}, cwd: "", image: "" },
    replicas,
    restartPolicy: undefined,
    strategy: strategy
      ? { maxSurge: 1, maxUnavailable: 0, readyTimeoutMs: 0, maxErrorRate: 0, canaryWeightPercent: 0, ...strategy }
      : undefined,
    minReady: 0,
    generation: 1,
    status: undefined,
    createdAtMs: T0,
    updatedAtMs: T0,
  };
}

/**
 * A pretend mesh for the reconciler: sidecars that carry out every command at
 * once (start registers STARTING, drain turns DRAINING, stop deregisters) and
 * agents that turn READY when the test says so.
 */
class SimulatedMesh {
  readonly instances = new Map<string, ObservedInstance>();
  state: ReconcileState | undefined;
  nowMs = T0;
  lastResult: PlanResult | undefined;
  readonly log: ReconcileAction[] = [];
  private nextId = 0;

  constructor(
    public desired: Deployment,
    private readonly sidecarIds: readonly string[] = ["s1", "s2", "s3"],
  ) {}

  /** One reconcile pass; its commands are carried out before it returns. */
  reconcile(): PlanResult {
    const result = plan({
      desired: this.desired,
      observed: [...this.instances.values()],
      sidecars: this.sidecars(),
      nowMs: this.nowMs,
      state: this.state,
      newInstanceId: () => `i-${++this.nextId}`,
    });
    this.state = result.state;
    this.lastResult = result;
    this.log.push(...result.actions);
    for (const action of result.actions) this.carryOut(action);
    return result;
  }

  /** Agents of `version` that are starting report READY (and this error rate). */
  becomeReady(version: string, errorRate = 0): void {
    for (const instance of this.instances.values()) {
      if (instance.version === version && instance.state === STARTING) {
        this.instances.set(instance.instanceId, { ...instance, state: READY, readyAtMs: this.nowMs, errorRate });
      }
    }
  }

  setErrorRate(instanceId: string, errorRate: number): void {
    const instance = this.instances.get(instanceId);
    if (instance) this.instances.set(instanceId, { ...instance, errorRate });
  }

  advance(ms = STEP_MS): void {
    this.nowMs += ms;
  }

  count(state: HealthState, version?: string): number {
    return [...this.instances.values()].filter((instance) => instance.state === state && (version === undefined || instance.version === version)).length;
  }

  /** Instances that exist and are not on their way out. */
  liveCount(): number {
    return [...this.instances.values()].filter((instance) => instance.state !== DRAINING).length;
  }

  phase(): RolloutPhase | undefined {
    return this.state?.rollout.phase;
  }

  /** Reconcile, make `readyVersions` READY, advance time; until the phase is `until` or steps run out. */
  runUntil(until: RolloutPhase, readyVersions: readonly string[], onStep: () => void = () => {}, maxSteps = 100): number {
    for (let step = 1; step <= maxSteps; step += 1) {
      this.reconcile();
      onStep();
      if (this.phase() === until && this.lastResult?.actions.every((action) => action.type === "rolloutProgress")) return step;
      for (const version of readyVersions) this.becomeReady(version);
      onStep();
      this.advance();
    }
    throw new Error(`still ${this.phase()} after ${maxSteps} steps`);
  }

  private sidecars(): SidecarSnapshot[] {
    return this.sidecarIds.map((sidecarId) => {
      const here = [...this.instances.values()].filter((instance) => instance.sidecarId === sidecarId);
      return { sidecarId, capacity: 10, instanceCount: here.length, byDeployment: { "word-stats": here.length }, connected: true };
    });
  }

  private carryOut(action: ReconcileAction): void {
    switch (action.type) {
      case "start":
        this.instances.set(action.instanceId, {
          instanceId: action.instanceId,
          deployment: action.command.deployment,
          version: action.command.manifest?.version ?? "",
          revision: revisionOfManifest(action.command.manifest),
          sidecarId: action.sidecarId,
          claim: { kind: "claimed" },
          state: STARTING,
          startedAtMs: this.nowMs,
          errorRate: 0,
        });
        return;
      case "drain": {
        const instance = this.instances.get(action.instanceId);
        if (instance) this.instances.set(action.instanceId, { ...instance, state: DRAINING });
        return;
      }
      case "stop":
      case "forget":
        this.instances.delete(action.instanceId);
        return;
      case "reschedule":
        this.instances.delete(action.instanceId);
        this.carryOut(action.start);
        return;
      case "rolloutProgress":
      case "rollback":
      case "move":
        return;
    }
  }
}

/** A mesh running `replicas` READY instances of 1.0.0 after a completed first rollout. */
function meshAt100(replicas: number, strategy?: Partial<UpdateStrategy>): SimulatedMesh {
  const mesh = new SimulatedMesh(deployment("1.0.0", replicas, strategy));
  mesh.runUntil("complete", ["1.0.0"]);
  expect(mesh.count(READY, "1.0.0")).toBe(replicas);
  return mesh;
}

describe("rolling update through plan()", () => {
  it("updates 4 replicas 1.0.0 → 1.1.0 with maxSurge 1 / maxUnavailable 0, never below 4 READY", () => {
    const mesh = meshAt100(4);
    mesh.desired = { ...deployment("1.1.0", 4), generation: 2 };
    let fewestReady = Number.POSITIVE_INFINITY;
    let mostLive = 0;
    const steps = mesh.runUntil("complete", ["1.1.0"], () => {
      fewestReady = Math.min(fewestReady, mesh.count(READY));
      mostLive = Math.max(mostLive, mesh.liveCount());
    });
    expect(fewestReady).toBe(4);
    expect(mostLive).toBe(5);
    expect(mesh.count(READY, "1.1.0")).toBe(4);
    expect(mesh.instances.size).toBe(4);
    expect(steps).toBeGreaterThanOrEqual(8);
    const rollout = toRolloutMessage(mesh.state?.rollout as RolloutState);
    expect(rollout).toMatchObject({
      deployment: "word-stats",
      fromVersion: "1.0.0",
      toVersion: "1.1.0",
      phase: Rollout_Phase.PHASE_COMPLETE,
      updatedReplicas: 4,
      readyReplicas: 4,
      desiredReplicas: 4,
      generation: 2,
    });
    // Old instances left only by drain-then-stop.
    const drained = mesh.log.filter((action) => action.type === "drain").map((action) => action.type === "drain" && action.instanceId);
    const stopped = mesh.log.filter((action) => action.type === "stop").map((action) => action.type === "stop" && action.instanceId);
    expect(drained).toHaveLength(4);
    expect(stopped).toEqual(drained);
  });

  it("rolls an env change with the same version like a new version: every instance replaced, never below 4 READY", () => {
    const mesh = meshAt100(4);
    const before = new Set(mesh.instances.keys());
    const changed = deployment("1.0.0", 4);
    mesh.desired = { ...changed, process: { ...(changed.process as NonNullable<Deployment["process"]>), env: { LOG_LEVEL: "debug" } }, generation: 2 };
    const revision = templateOf(mesh.desired).revision;
    let fewestReady = Number.POSITIVE_INFINITY;
    mesh.runUntil("complete", ["1.0.0"], () => {
      fewestReady = Math.min(fewestReady, mesh.count(READY));
    });
    expect(fewestReady).toBe(4);
    expect(mesh.instances.size).toBe(4);
    for (const instance of mesh.instances.values()) {
      expect(before.has(instance.instanceId)).toBe(false);
      expect(instance.revision).toBe(revision);
    }
    expect(mesh.state?.rollout).toMatchObject({ phase: "complete", toRevision: revision, fromVersion: "1.0.0", toVersion: "1.0.0", updatedReplicas: 4 });
    // Applied again unchanged: nothing moves.
    const again = mesh.reconcile();
    expect(again.actions.filter((action) => action.type !== "rolloutProgress")).toEqual([]);
  });

  it("walks the first steps exactly: surge one, wait READY, drain one old, stop it, surge the next", () => {
    const mesh = meshAt100(4);
    mesh.desired = deployment("1.1.0", 4);
    const commandsOf = (result: PlanResult) =>
      result.actions.filter((action) => action.type !== "rolloutProgress").map((action) => `${action.type} ${"instanceId" in action ? action.instanceId : ""}`);
    expect(commandsOf(mesh.reconcile())).toEqual(["start i-5"]);
    expect(mesh.phase()).toBe("progressing");
    expect(commandsOf(mesh.reconcile())).toEqual([]);
    mesh.becomeReady("1.1.0");
    expect(commandsOf(mesh.reconcile())).toEqual(["drain i-4"]);
    expect(mesh.count(READY)).toBe(4);
    expect(commandsOf(mesh.reconcile())).toEqual(["stop i-4", "start i-6"]);
    expect(mesh.lastResult?.status).toMatchObject({ updatedReplicas: 2, readyReplicas: 4, phase: "progressing" });
  });

  it("with maxSurge 0 / maxUnavailable 1 goes one down first and never exceeds 4 instances", () => {
    const mesh = meshAt100(4, { maxSurge: 0, maxUnavailable: 1 });
    mesh.desired = deployment("1.1.0", 4, { maxSurge: 0, maxUnavailable: 1 });
    let fewestReady = Number.POSITIVE_INFINITY;
    let mostLive = 0;
    mesh.runUntil("complete", ["1.1.0"], () => {
      fewestReady = Math.min(fewestReady, mesh.count(READY));
      mostLive = Math.max(mostLive, mesh.liveCount());
    });
    expect(fewestReady).toBe(3);
    expect(mostLive).toBe(4);
    expect(mesh.count(READY, "1.1.0")).toBe(4);
  });

  it("with maxSurge 2 surges two at a time", () => {
    const mesh = meshAt100(4, { maxSurge: 2 });
    mesh.desired = deployment("1.1.0", 4, { maxSurge: 2 });
    const first = mesh.reconcile();
    expect(first.actions.filter((action) => action.type === "start")).toHaveLength(2);
    let fewestReady = Number.POSITIVE_INFINITY;
    mesh.runUntil("complete", ["1.1.0"], () => {
      fewestReady = Math.min(fewestReady, mesh.count(READY));
    });
    expect(fewestReady).toBe(4);
  });

  it("rolls back when 1.1.0 never becomes READY: after readyTimeout, 1.0.0 stays at 4", () => {
    const mesh = meshAt100(4);
    mesh.desired = deployment("1.1.0", 4);
    let fewestOldReady = Number.POSITIVE_INFINITY;
    // 1.1.0 never reports READY; 1.0.0 replacements do.
    const steps = mesh.runUntil("rolled_back", ["1.0.0"], () => {
      fewestOldReady = Math.min(fewestOldReady, mesh.count(READY, "1.0.0"));
    });
    expect(fewestOldReady).toBe(4);
    expect(steps).toBeGreaterThanOrEqual(30);
    expect(mesh.count(READY, "1.0.0")).toBe(4);
    expect([...mesh.instances.values()].every((instance) => instance.version === "1.0.0")).toBe(true);
    const rollbacks = mesh.log.filter((action) => action.type === "rollback");
    expect(rollbacks).toEqual([
      { type: "rollback", fromVersion: "1.0.0", toVersion: "1.1.0", reason: "rolling back to 1.0.0: instance i-5 of 1.1.0 not READY within 30000 ms" },
    ]);
    expect(mesh.state?.rollout.message).toBe("rolled back to 1.0.0: instance i-5 of 1.1.0 not READY within 30000 ms");
    expect(toRolloutMessage(mesh.state?.rollout as RolloutState).phase).toBe(Rollout_Phase.PHASE_ROLLED_BACK);
    expect(mesh.lastResult?.status).toMatchObject({ phase: "rolled_back", readyReplicas: 4, updatedReplicas: 0 });

    // It stays rolled back: the failed version is not retried on every pass.
    const before = mesh.log.length;
    for (let pass = 0; pass < 10; pass += 1) {
      mesh.advance(30_000);
      mesh.reconcile();
    }
    expect(mesh.log.slice(before)).toEqual([]);
    expect(mesh.phase()).toBe("rolled_back");
  });

  it("times readiness from the start request, rolling back exactly at readyTimeout", () => {
    const mesh = meshAt100(2, { readyTimeoutMs: 5000 });
    mesh.desired = deployment("1.1.0", 2, { readyTimeoutMs: 5000 });
    mesh.reconcile();
    mesh.advance(4999);
    mesh.reconcile();
    expect(mesh.phase()).toBe("progressing");
    mesh.advance(1);
    const result = mesh.reconcile();
    expect(mesh.phase()).toBe("rolling_back");
    expect(result.actions.map((action) => action.type)).toEqual(["rollback", "rolloutProgress", "stop"]);
  });

  it("retries after a rollback only when the spec changes, not on a mere scale", () => {
    const mesh = meshAt100(2);
    mesh.desired = deployment("1.1.0", 2);
    mesh.runUntil("rolled_back", ["1.0.0"]);
    mesh.desired = deployment("1.1.0", 3);
    mesh.runUntil("rolled_back", ["1.0.0"]);
    expect(mesh.count(READY, "1.0.0")).toBe(3);
    expect(mesh.log.filter((action) => action.type === "start" && action.version === "1.1.0")).toHaveLength(1);
    mesh.desired = deployment("1.1.0", 3, undefined, ["examples/agents/word-stats.mjs", "--fixed"]);
    mesh.runUntil("complete", ["1.1.0"]);
    expect(mesh.count(READY, "1.1.0")).toBe(3);
    expect(mesh.state?.rollout).toMatchObject({ fromVersion: "1.0.0", toVersion: "1.1.0", phase: "complete" });
  });

  it("rolls back on a new instance's error rate and restores 1.0.0 to full replicas with the old spec", () => {
    const mesh = meshAt100(4);
    mesh.desired = deployment("1.1.0", 4, undefined, ["examples/agents/word-stats.mjs", "--v2"]);
    // First new instance READY and healthy; one old one is replaced.
    mesh.reconcile();
    mesh.becomeReady("1.1.0");
    mesh.reconcile(); // drain an old one
    mesh.reconcile(); // stop it, start the second new one
    expect(mesh.count(READY, "1.0.0")).toBe(3);
    mesh.setErrorRate("i-5", 0.8);
    const result = mesh.reconcile();
    expect(result.actions.find((action) => action.type === "rollback")).toMatchObject({
      reason: "rolling back to 1.0.0: instance i-5 of 1.1.0 error rate 0.80 above 0.5",
    });
    const restart = result.actions.find((action) => action.type === "start");
    expect(restart?.type === "start" && restart.command).toMatchObject({
      manifest: { version: "1.0.0" },
      process: { args: ["examples/agents/word-stats.mjs"] },
    });
    // The READY new instance is drained out of routing; the one still starting is simply stopped.
    const removals = result.actions.flatMap((action) => (action.type === "drain" || action.type === "stop" ? [`${action.type} ${action.instanceId}`] : []));
    expect(removals).toEqual(["stop i-6", "drain i-5"]);
    mesh.runUntil("rolled_back", ["1.0.0"]);
    expect(mesh.count(READY, "1.0.0")).toBe(4);
    expect(mesh.instances.size).toBe(4);
  });

  it("honours a lower maxErrorRate from the strategy", () => {
    const mesh = meshAt100(2, { maxErrorRate: 0.1 });
    mesh.desired = deployment("1.1.0", 2, { maxErrorRate: 0.1 });
    mesh.reconcile();
    mesh.becomeReady("1.1.0", 0.2);
    mesh.reconcile();
    expect(mesh.phase()).toBe("rolling_back");
  });

  it("rolls back when a new instance ends FAILED", () => {
    const mesh = meshAt100(2);
    mesh.desired = deployment("1.1.0", 2);
    mesh.reconcile();
    const newInstance = [...mesh.instances.values()].find((instance) => instance.version === "1.1.0") as ObservedInstance;
    mesh.instances.set(newInstance.instanceId, { ...newInstance, state: FAILED });
    mesh.reconcile();
    expect(mesh.state?.rollout.message).toContain(`instance ${newInstance.instanceId} of 1.1.0 FAILED`);
    mesh.runUntil("rolled_back", ["1.0.0"]);
    expect(mesh.count(READY, "1.0.0")).toBe(2);
  });

  it("pauses instead of rolling back a first deploy that fails readiness, and keeps its replicas", () => {
    const mesh = new SimulatedMesh(deployment("1.0.0", 2));
    for (let step = 0; step < 31; step += 1) {
      mesh.reconcile();
      mesh.advance();
    }
    expect(mesh.phase()).toBe("paused");
    expect(mesh.state?.rollout.message).toMatch(/^paused: instance i-1 of 1\.0\.0 not READY within 30000 ms$/);
    expect(mesh.instances.size).toBe(2);
    mesh.becomeReady("1.0.0");
    mesh.reconcile();
    expect(mesh.phase()).toBe("complete");
  });

  it("replaces a rollout still in progress: 1.2.0 applied mid-way rolls from the last complete version", () => {
    const mesh = meshAt100(3);
    mesh.desired = deployment("1.1.0", 3);
    mesh.reconcile();
    mesh.becomeReady("1.1.0");
    mesh.reconcile();
    mesh.desired = deployment("1.2.0", 3);
    mesh.runUntil("complete", ["1.2.0"]);
    expect(mesh.state?.rollout).toMatchObject({ fromVersion: "1.0.0", toVersion: "1.2.0" });
    expect([...mesh.instances.values()].map((instance) => instance.version)).toEqual(["1.2.0", "1.2.0", "1.2.0"]);
  });
});

const strategy: ResolvedStrategy = resolveStrategy(deployment("1.1.0", 4));

function rollout(overrides: Partial<RolloutState> = {}): RolloutState {
  return {
    ...startRollout({
      deployment: "word-stats",
      generation: 2,
      fromVersion: "1.0.0",
      toVersion: "1.1.0",
      // Revisions stand in as the versions here: one template per version.
      fromRevision: "1.0.0",
      toRevision: "1.1.0",
      canRollBack: true,
      desiredReplicas: 2,
      canaryWeightPercent: 0,
      nowMs: T0,
    }),
    ...overrides,
  };
}

function running(version: string, count: number, state = READY, overrides: Partial<RolloutInstance> = {}): RolloutInstance[] {
  return Array.from({ length: count }, (_, index) => ({
    instanceId: `${version}-${index}`,
    version,
    revision: version,
    state,
    startedAtMs: T0,
    readyAtMs: state === READY ? T0 : undefined,
    errorRate: 0,
    ...overrides,
  }));
}

const observe = (instances: RolloutInstance[], nowMs = T0 + 1000) => ({ type: "observe" as const, nowMs, desiredReplicas: 2, strategy, instances });

describe("transitionRollout", () => {
  it.each<[string, Partial<RolloutState>, RolloutInstance[], number, RolloutPhase, string]>([
    ["keeps progressing while new instances start", {}, [...running("1.0.0", 2), ...running("1.1.0", 1, STARTING)], T0 + 1000, "progressing", "1 of 2 replicas updated to 1.1.0, 0 READY"],
    ["completes when only READY new instances remain", {}, running("1.1.0", 2), T0 + 1000, "complete", "2 of 2 replicas of 1.1.0 READY"],
    ["counts DEGRADED as serving", {}, [...running("1.1.0", 1), ...running("1.1.0", 1, DEGRADED)].map((instance, index) => ({ ...instance, instanceId: `n${index}` })), T0 + 1000, "complete", "2 of 2 replicas of 1.1.0 READY"],
    ["is not complete while an old instance lives", {}, [...running("1.1.0", 2), ...running("1.0.0", 1)], T0 + 1000, "progressing", "2 of 2 replicas updated to 1.1.0, 2 READY"],
    ["rolls back on the ready timeout", {}, [...running("1.0.0", 2), ...running("1.1.0", 1, STARTING)], T0 + 30_000, "rolling_back", "rolling back to 1.0.0: instance 1.1.0-0 of 1.1.0 not READY within 30000 ms"],
    ["does not time out an instance that was READY before", {}, [...running("1.0.0", 2), ...running("1.1.0", 1, HealthState.HEALTH_STATE_UNHEALTHY, { readyAtMs: T0 })], T0 + 60_000, "progressing", "1 of 2 replicas updated to 1.1.0, 0 READY"],
    ["rolls back on an error rate at the threshold only when above it", {}, [...running("1.0.0", 2), ...running("1.1.0", 1, READY, { errorRate: 0.5 })], T0 + 1000, "progressing", "1 of 2 replicas updated to 1.1.0, 1 READY"],
    ["pauses when there is nothing to roll back to", { canRollBack: false, fromVersion: "" }, running("1.1.0", 1, FAILED), T0 + 1000, "paused", "paused: instance 1.1.0-0 of 1.1.0 FAILED"],
    ["finishes a rollback once only READY old instances remain", { phase: "rolling_back", message: "rolling back to 1.0.0: x" }, running("1.0.0", 2), T0 + 1000, "rolled_back", "rolled back to 1.0.0: x"],
    ["keeps rolling back while a new instance lives", { phase: "rolling_back", message: "rolling back to 1.0.0: x" }, [...running("1.0.0", 2), ...running("1.1.0", 1)], T0 + 1000, "rolling_back", "rolling back to 1.0.0: x"],
    ["keeps rolling back until old replicas are READY", { phase: "rolling_back", message: "m" }, [...running("1.0.0", 1), ...running("1.0.0", 1, STARTING).map((instance) => ({ ...instance, instanceId: "s" }))], T0 + 1000, "rolling_back", "m"],
    ["stays rolled back", { phase: "rolled_back", message: "m" }, running("1.1.0", 2), T0 + 1000, "rolled_back", "m"],
    ["stays complete", { phase: "complete" }, [...running("1.1.0", 1, FAILED), ...running("1.0.0", 1)], T0 + 90_000, "complete", "0 of 2 replicas of 1.1.0 READY"],
    ["completes from paused when converged", { phase: "paused", message: "paused: x" }, running("1.1.0", 2), T0 + 1000, "complete", "2 of 2 replicas of 1.1.0 READY"],
  ])("%s", (_label, overrides, instances, nowMs, phase, message) => {
    const next = transitionRollout(rollout(overrides), observe(instances, nowMs));
    expect(next.phase).toBe(phase);
    expect(next.message).toBe(message);
  });

  it("records counts and when the phase changed", () => {
    const next = transitionRollout(rollout(), observe([...running("1.0.0", 1), ...running("1.1.0", 2)], T0 + 5000));
    expect(next).toMatchObject({ readyReplicas: 3, updatedReplicas: 2, readyByVersion: { "1.0.0": 1, "1.1.0": 2 }, phaseChangedAtMs: T0 });
    const done = transitionRollout(next, observe(running("1.1.0", 2), T0 + 6000));
    expect(done).toMatchObject({ phase: "complete", phaseChangedAtMs: T0 + 6000, startedAtMs: T0 });
  });

  it("pauses and resumes by operator, and refuses either where it makes no sense", () => {
    const paused = transitionRollout(rollout(), { type: "pause", nowMs: T0 + 1, reason: "operator" });
    expect(paused).toMatchObject({ phase: "paused", message: "paused: operator", phaseChangedAtMs: T0 + 1 });
    expect(transitionRollout(paused, { type: "resume", nowMs: T0 + 2 }).phase).toBe("progressing");
    for (const [phase, event] of [
      ["complete", { type: "pause", nowMs: T0, reason: "x" }],
      ["rolled_back", { type: "pause", nowMs: T0, reason: "x" }],
      ["paused", { type: "pause", nowMs: T0, reason: "x" }],
      ["progressing", { type: "resume", nowMs: T0 }],
      ["rolling_back", { type: "resume", nowMs: T0 }],
    ] as const) {
      expect(() => transitionRollout(rollout({ phase }), event)).toThrow(MeshError);
      expect(() => transitionRollout(rollout({ phase }), event)).toThrow(`rollout: cannot ${event.type} while ${phase}`);
    }
  });

  it("maps every phase to the proto enum", () => {
    const phases: [RolloutPhase, Rollout_Phase][] = [
      ["progressing", Rollout_Phase.PHASE_PROGRESSING],
      ["complete", Rollout_Phase.PHASE_COMPLETE],
      ["paused", Rollout_Phase.PHASE_PAUSED],
      ["rolling_back", Rollout_Phase.PHASE_ROLLING_BACK],
      ["rolled_back", Rollout_Phase.PHASE_ROLLED_BACK],
    ];
    for (const [phase, proto] of phases) expect(toRolloutMessage(rollout({ phase })).phase).toBe(proto);
  });
});

describe("trafficSplit", () => {
  it.each<[string, Partial<RolloutState>, Record<string, number>, Record<string, number>]>([
    ["follows READY replicas while progressing", {}, { "1.0.0": 3, "1.1.0": 1 }, { "1.0.0": 75, "1.1.0": 25 }],
    ["rounds so the parts add up to 100", {}, { "1.0.0": 2, "1.1.0": 1 }, { "1.0.0": 67, "1.1.0": 33 }],
    ["gives the canary its weight whatever the counts", { canaryWeightPercent: 10 }, { "1.0.0": 3, "1.1.0": 3 }, { "1.0.0": 90, "1.1.0": 10 }],
    ["gives the canary nothing until it has a READY instance", { canaryWeightPercent: 10 }, { "1.0.0": 4, "1.1.0": 0 }, { "1.0.0": 100 }],
    ["gives the canary everything when no old instance is READY", { canaryWeightPercent: 10 }, { "1.1.0": 2 }, { "1.1.0": 100 }],
    ["splits the rest among several old versions", { canaryWeightPercent: 20 }, { "0.9.0": 1, "1.0.0": 3, "1.1.0": 1 }, { "0.9.0": 20, "1.0.0": 60, "1.1.0": 20 }],
    ["applies while paused", { phase: "paused", canaryWeightPercent: 5 }, { "1.0.0": 1, "1.1.0": 1 }, { "1.0.0": 95, "1.1.0": 5 }],
    ["sends everything to the new version once complete", { phase: "complete" }, { "1.0.0": 1, "1.1.0": 4 }, { "1.1.0": 100 }],
    ["takes the new version out the moment a rollback begins", { phase: "rolling_back", canaryWeightPercent: 50 }, { "1.0.0": 3, "1.1.0": 2 }, { "1.0.0": 100 }],
    ["keeps it out once rolled back", { phase: "rolled_back" }, { "1.0.0": 4, "1.1.0": 1 }, { "1.0.0": 100 }],
    ["has no opinion when nothing is READY", {}, {}, {}],
  ])("%s", (_label, overrides, ready, expected) => {
    expect(trafficSplit(rollout(overrides), ready)).toEqual(expected);
  });

  it("uses the READY counts of the last observation by default", () => {
    const observed = transitionRollout(rollout({ canaryWeightPercent: 0 }), observe([...running("1.0.0", 1), ...running("1.1.0", 1)]));
    expect(trafficSplit(observed)).toEqual({ "1.0.0": 50, "1.1.0": 50 });
  });
});
