import type { Deployment, DeploymentStatus, Rollout, StartAgent } from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type AgentInstance, HealthState } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { isRoutable } from "../../registry/domain/health-state.js";
import {
  type InstanceTemplate,
  type ResolvedStrategy,
  resolveStrategy,
  sameTemplate,
  startCommandOf,
  templateOf,
} from "./deployment-spec.js";
import { type Placement, type SidecarSnapshot, placeInstances, withPlacements } from "./placement.js";
import {
  type RolloutInstance,
  type RolloutState,
  startRollout,
  toRolloutMessage,
  transitionRollout,
} from "./rollout.js";

/** Makes instance ids for new instances (1-64 of [A-Za-z0-9._-], unique). Injected so tests are reproducible. */
export type IdSource = () => string;

/** One instance of the deployment as the registry and the Connect streams see it now. */
export interface ObservedInstance {
  instanceId: string;
  deployment: string;
  /** manifest.version */
  version: string;
  /** Sidecar that started it (or announced it). */
  sidecarId: string;
  state: HealthState;
  /** When its start was asked for, or when it registered. */
  startedAtMs: number;
  /** When it was first READY; undefined until then. */
  readyAtMs?: number | undefined;
  /** From the last heartbeat's Load, 0..1. */
  errorRate: number;
}

/**
 * An AgentInstance from the registry as plan() sees it. `sidecarId` is the
 * sidecar it was started on (or whose Hello announced it); `readyAtMs` is when
 * it was first seen READY, if ever.
 */
export function observeInstance(instance: AgentInstance, sidecarId: string, readyAtMs: number | undefined): ObservedInstance {
  return {
    instanceId: instance.instanceId,
    deployment: instance.deployment,
    version: instance.manifest?.version ?? "",
    sidecarId,
    state: instance.state,
    startedAtMs: instance.registeredAtMs,
    readyAtMs,
    errorRate: instance.load?.errorRate ?? 0,
  };
}

/** A start command sent whose instance has not registered yet. */
export interface PendingStart {
  instanceId: string;
  sidecarId: string;
  version: string;
  requestedAtMs: number;
}

/**
 * An instance on its way out because of this reconciler: drain sent, stop sent,
 * or forgotten because its sidecar is gone. Dropped once the instance is no
 * longer observed.
 */
export interface LeavingInstance {
  instanceId: string;
  sidecarId: string;
  step: "draining" | "stopping" | "forgotten";
  /** When the current step's command went out. */
  sinceMs: number;
  reason: string;
}

/**
 * What the reconciler remembers of one deployment between passes; plain JSON.
 * Starts in flight live here, so planning twice on the same observation never
 * starts twice.
 */
export interface ReconcileState {
  deployment: string;
  /** The spec the deployment asks for now. */
  target: InstanceTemplate;
  /** The last spec that completed a rollout: what a rollback restores. */
  stable: InstanceTemplate | undefined;
  rollout: RolloutState;
  pendingStarts: PendingStart[];
  leaving: LeavingInstance[];
}

export interface ReconcileOptions {
  /** Given to DrainInstance; also how long to wait for the sidecar to confirm DRAINING before stopping anyway. */
  drainGraceMs: number;
  /** Given to StopInstance: SIGTERM to SIGKILL. */
  stopGraceMs: number;
  /** A start whose instance has not registered by then is given up (and a stop sent in case it shows up). */
  registerTimeoutMs: number;
  /** A stop still not done after stopGraceMs plus this is sent again. */
  stopRetryMs: number;
}

export const defaultReconcileOptions: ReconcileOptions = {
  drainGraceMs: 10_000,
  stopGraceMs: 5_000,
  registerTimeoutMs: 60_000,
  stopRetryMs: 15_000,
};

export interface StartAction {
  type: "start";
  sidecarId: string;
  instanceId: string;
  version: string;
  /** Ready to put in a Command (add command_id and the signature). */
  command: StartAgent;
  reason: string;
}

export type ReconcileAction =
  | StartAction
  | { type: "drain"; sidecarId: string; instanceId: string; graceMs: number; reason: string }
  | { type: "stop"; sidecarId: string; instanceId: string; graceMs: number; reason: string }
  /** The instance's sidecar is gone: deregister `instanceId`, then carry out `start` elsewhere. */
  | { type: "reschedule"; instanceId: string; fromSidecarId: string; start: StartAction }
  /** Deregister an instance nobody can stop any more (its sidecar is gone). */
  | { type: "forget"; instanceId: string; reason: string }
  /** The rollout's counts, phase or message changed: store it for GetRollout, show it to `ctl rollout status`. */
  | { type: "rolloutProgress"; rollout: Rollout }
  /** A rollout failed and rolling back began: audit and alert. */
  | { type: "rollback"; fromVersion: string; toVersion: string; reason: string };

export interface PlanInput {
  /** A validated deployment (validateDeployment). */
  desired: Deployment;
  /** Instances of this deployment; others are ignored. */
  observed: readonly ObservedInstance[];
  sidecars: readonly SidecarSnapshot[];
  nowMs: number;
  /** What the previous pass returned; undefined on the first pass (or after a server restart). */
  state: ReconcileState | undefined;
  newInstanceId: IdSource;
  options?: Partial<ReconcileOptions>;
}

export interface PlanResult {
  actions: ReconcileAction[];
  /** Pass it to the next plan() of this deployment. */
  state: ReconcileState;
  status: DeploymentStatus;
}

/** The live instances one pass works with, sorted into what it may do with them. */
interface Census {
  /** Counted towards replicas: not leaving, not failed, on a reachable sidecar or within its grace. */
  live: ObservedInstance[];
  /** FAILED on a connected sidecar, not yet being stopped. */
  failed: ObservedInstance[];
  /** On a sidecar that is gone, health already given up on, not yet forgotten. */
  lost: { instance: ObservedInstance; wasLive: boolean }[];
}

/**
 * One reconcile pass for one deployment: compares the desired state with what
 * is observed and returns the commands that move one towards the other, plus
 * the state to remember. Pure: same input, same output; time and ids come in.
 *
 * Scale: starts until `replicas` instances of the serving version exist
 * (placed by `placeInstances`); removes surplus unhealthy-first, newest-first,
 * draining routable ones before stopping them. FAILED instances are stopped and
 * replaced; instances of a vanished sidecar are forgotten and started elsewhere.
 * A new manifest.version starts a rolling update (see rollout.ts).
 */
export function plan(input: PlanInput): PlanResult {
  const options: ReconcileOptions = { ...defaultReconcileOptions, ...input.options };
  const { desired, nowMs } = input;
  const strategy = resolveStrategy(desired);
  const observed = input.observed
    .filter((instance) => instance.deployment === desired.name)
    .sort((left, right) => compareStrings(left.instanceId, right.instanceId));
  const observedById = new Map(observed.map((instance) => [instance.instanceId, instance]));
  const connected = new Set(input.sidecars.filter((sidecar) => sidecar.connected).map((sidecar) => sidecar.sidecarId));
  const actions: ReconcileAction[] = [];
  const removals: ReconcileAction[] = [];

  const adopted = adopt(input.state, desired, strategy, observed, nowMs);
  let leaving = adopted.leaving.filter((entry) => observedById.has(entry.instanceId));
  let pendingStarts = settlePendingStarts(adopted.pendingStarts, observedById, connected, nowMs, options, strategy, removals);
  const census = takeCensus(observed, leaving, connected);

  const observe = (rolloutBefore: RolloutState, pending: readonly PendingStart[]) =>
    transitionRollout(rolloutBefore, {
      type: "observe",
      nowMs,
      desiredReplicas: desired.replicas,
      strategy,
      instances: rolloutInstances(census, pending),
    });
  const rollout = observe(adopted.rollout, pendingStarts);
  if (rollout.phase === "rolling_back" && adopted.rollout.phase !== "rolling_back") {
    actions.push({ type: "rollback", fromVersion: rollout.fromVersion, toVersion: rollout.toVersion, reason: rollout.message });
  }
  const stable = rollout.phase === "complete" ? adopted.target : adopted.stable;
  const serving = servingTemplate({ ...adopted, rollout, stable });

  const forget = (instance: ObservedInstance, reason: string) => {
    removals.push({ type: "forget", instanceId: instance.instanceId, reason });
    leaving = upsertLeaving(leaving, { instanceId: instance.instanceId, sidecarId: instance.sidecarId, step: "forgotten", sinceMs: nowMs, reason });
  };
  const remove = (instance: ObservedInstance, reason: string) => {
    const drain = isRoutable(instance.state);
    removals.push(
      drain
        ? { type: "drain", sidecarId: instance.sidecarId, instanceId: instance.instanceId, graceMs: options.drainGraceMs, reason }
        : { type: "stop", sidecarId: instance.sidecarId, instanceId: instance.instanceId, graceMs: options.stopGraceMs, reason },
    );
    leaving = upsertLeaving(leaving, {
      instanceId: instance.instanceId,
      sidecarId: instance.sidecarId,
      step: drain ? "draining" : "stopping",
      sinceMs: nowMs,
      reason,
    });
  };

  leaving = advanceLeaving(leaving, observedById, connected, nowMs, options, removals);
  for (const instance of census.failed) remove(instance, "failed");
  if (isRollingBack(rollout)) {
    // Starts of the version being rolled back are called off; the sidecar may already be spawning them.
    for (const pending of pendingStarts.filter((start) => start.version !== serving.version)) {
      removals.push({ type: "stop", sidecarId: pending.sidecarId, instanceId: pending.instanceId, graceMs: options.stopGraceMs, reason: "rollback" });
    }
    pendingStarts = pendingStarts.filter((start) => start.version === serving.version);
  }

  const decision = decide(census.live, pendingStarts, serving.version, rollout, desired.replicas, strategy);
  for (const { instance, reason } of decision.remove) remove(instance, reason);

  const placementSnapshot = withPlacements(
    input.sidecars,
    pendingStarts.map((pending) => ({ sidecarId: pending.sidecarId, deployment: desired.name })),
  );
  const starts: StartAction[] = placeInstances(placementSnapshot, desired.name, decision.starts).map((sidecarId) => {
    const instanceId = input.newInstanceId();
    return { type: "start", sidecarId, instanceId, version: serving.version, command: startCommandOf(serving, instanceId), reason: decision.startReason };
  });
  pendingStarts = [
    ...pendingStarts,
    ...starts.map((start) => ({ instanceId: start.instanceId, sidecarId: start.sidecarId, version: start.version, requestedAtMs: nowMs })),
  ];

  // A lost instance that counted as live is replaced by one of this pass's starts: pair them up.
  const replaceable = census.lost.filter((lost) => lost.wasLive);
  const placed: ReconcileAction[] = starts.map((start, index) => {
    const lost = replaceable[index];
    if (!lost) return start;
    const { instanceId, sidecarId } = lost.instance;
    leaving = upsertLeaving(leaving, { instanceId, sidecarId, step: "forgotten", sinceMs: nowMs, reason: "sidecar gone" });
    return { type: "reschedule", instanceId, fromSidecarId: sidecarId, start: { ...start, reason: "sidecar gone" } };
  });
  for (const lost of [...census.lost.filter((entry) => !entry.wasLive), ...replaceable.slice(starts.length)]) {
    forget(lost.instance, "sidecar gone");
  }

  // Observed once more with this pass's starts, so the counts GetRollout shows include them at once.
  const counted = observe(rollout, pendingStarts);
  const state: ReconcileState = { deployment: desired.name, target: adopted.target, stable, rollout: counted, pendingStarts, leaving };
  if (input.state === undefined || !sameRollout(input.state.rollout, counted)) {
    actions.push({ type: "rolloutProgress", rollout: toRolloutMessage(counted) });
  }
  actions.push(...removals, ...placed);
  const unplaced = decision.starts - starts.length;
  return { actions, state, status: statusOf(census, pendingStarts, counted, unplaced) };
}

/** Adds the starts other deployments have in flight to a snapshot, so one pass does not overfill a sidecar. */
export function reservePendingStarts(sidecars: readonly SidecarSnapshot[], states: Iterable<ReconcileState>): SidecarSnapshot[] {
  const placements: Placement[] = [];
  for (const state of states) {
    for (const pending of state.pendingStarts) placements.push({ sidecarId: pending.sidecarId, deployment: state.deployment });
  }
  return withPlacements(sidecars, placements);
}

/** Takes in a (possibly changed) spec: a new version starts a rollout, anything else is used for future starts. */
function adopt(
  previous: ReconcileState | undefined,
  desired: Deployment,
  strategy: ResolvedStrategy,
  observed: readonly ObservedInstance[],
  nowMs: number,
): ReconcileState {
  const target = templateOf(desired);
  const begin = (from: InstanceTemplate | undefined) =>
    startRollout({
      deployment: desired.name,
      generation: desired.generation,
      fromVersion: from?.version ?? mostCommonOtherVersion(observed, target.version),
      toVersion: target.version,
      canRollBack: from !== undefined,
      desiredReplicas: desired.replicas,
      canaryWeightPercent: strategy.canaryWeightPercent,
      nowMs,
    });
  if (!previous) return { deployment: desired.name, target, stable: undefined, rollout: begin(undefined), pendingStarts: [], leaving: [] };
  // After a rollback the same version may be applied again with a fixed spec: that is worth another try.
  const retry = isRollingBack(previous.rollout) && !sameTemplate(target, previous.target);
  if (target.version !== previous.target.version || retry) return { ...previous, target, rollout: begin(previous.stable) };
  return { ...previous, target };
}

/** Drops starts that registered, whose sidecar went away, or that never registered in time. */
function settlePendingStarts(
  pendingStarts: readonly PendingStart[],
  observedById: ReadonlyMap<string, ObservedInstance>,
  connected: ReadonlySet<string>,
  nowMs: number,
  options: ReconcileOptions,
  strategy: ResolvedStrategy,
  removals: ReconcileAction[],
): PendingStart[] {
  // Never before the readiness deadline, or a start that hangs would end the wait the rollout judges it by.
  const timeoutMs = Math.max(options.registerTimeoutMs, strategy.readyTimeoutMs);
  return pendingStarts.filter((pending) => {
    if (observedById.has(pending.instanceId) || !connected.has(pending.sidecarId)) return false;
    if (nowMs - pending.requestedAtMs < timeoutMs) return true;
    // In case the process shows up after all.
    removals.push({ type: "stop", sidecarId: pending.sidecarId, instanceId: pending.instanceId, graceMs: options.stopGraceMs, reason: "never registered" });
    return false;
  });
}

const givenUpStates = new Set([HealthState.HEALTH_STATE_UNHEALTHY, HealthState.HEALTH_STATE_STOPPED, HealthState.HEALTH_STATE_FAILED]);

function takeCensus(observed: readonly ObservedInstance[], leaving: readonly LeavingInstance[], connected: ReadonlySet<string>): Census {
  const leavingById = new Map(leaving.map((entry) => [entry.instanceId, entry]));
  const census: Census = { live: [], failed: [], lost: [] };
  for (const instance of observed) {
    const entry = leavingById.get(instance.instanceId);
    // A disconnected sidecar may come back within the reconnect grace; only once health has given up
    // on the instance (the Connect hub marks it UNHEALTHY after the grace) is it lost.
    if (!connected.has(instance.sidecarId) && givenUpStates.has(instance.state)) {
      if (entry?.step !== "forgotten") {
        census.lost.push({ instance, wasLive: entry === undefined && instance.state !== HealthState.HEALTH_STATE_STOPPED });
      }
      continue;
    }
    if (entry) continue;
    if (instance.state === HealthState.HEALTH_STATE_FAILED) census.failed.push(instance);
    // STOPPED: exited, its sidecar deregisters it. DRAINING without our entry: an operator's DrainAgent.
    else if (instance.state !== HealthState.HEALTH_STATE_STOPPED && instance.state !== HealthState.HEALTH_STATE_DRAINING) {
      census.live.push(instance);
    }
  }
  return census;
}

function rolloutInstances(census: Census, pendingStarts: readonly PendingStart[]): RolloutInstance[] {
  return [
    ...[...census.live, ...census.failed].map((instance) => ({
      instanceId: instance.instanceId,
      version: instance.version,
      state: instance.state,
      startedAtMs: instance.startedAtMs,
      readyAtMs: instance.readyAtMs,
      errorRate: instance.errorRate,
    })),
    ...pendingStarts.map((pending) => ({
      instanceId: pending.instanceId,
      version: pending.version,
      state: HealthState.HEALTH_STATE_STARTING,
      startedAtMs: pending.requestedAtMs,
      errorRate: 0,
    })),
  ];
}

/** Drain → stop once the sidecar confirms the drain (or the grace passes); stops that hang are sent again. */
function advanceLeaving(
  leaving: readonly LeavingInstance[],
  observedById: ReadonlyMap<string, ObservedInstance>,
  connected: ReadonlySet<string>,
  nowMs: number,
  options: ReconcileOptions,
  removals: ReconcileAction[],
): LeavingInstance[] {
  return leaving.map((entry) => {
    const instance = observedById.get(entry.instanceId);
    if (!instance || !connected.has(entry.sidecarId) || instance.state === HealthState.HEALTH_STATE_STOPPED) return entry;
    const stop = (): ReconcileAction => ({
      type: "stop",
      sidecarId: entry.sidecarId,
      instanceId: entry.instanceId,
      graceMs: options.stopGraceMs,
      reason: entry.reason,
    });
    if (entry.step === "draining") {
      const outOfRouting = !isRoutable(instance.state);
      if (!outOfRouting && nowMs - entry.sinceMs < options.drainGraceMs) return entry;
      removals.push(stop());
      return { ...entry, step: "stopping", sinceMs: nowMs };
    }
    if (entry.step === "stopping" && nowMs - entry.sinceMs >= options.stopGraceMs + options.stopRetryMs) {
      removals.push(stop());
      return { ...entry, sinceMs: nowMs };
    }
    return entry;
  });
}

interface Decision {
  starts: number;
  startReason: string;
  remove: { instance: ObservedInstance; reason: string }[];
}

/** How many instances of the serving version to start and which live instances to take away. */
function decide(
  live: readonly ObservedInstance[],
  pendingStarts: readonly PendingStart[],
  version: string,
  rollout: RolloutState,
  replicas: number,
  strategy: ResolvedStrategy,
): Decision {
  const serving = live.filter((instance) => instance.version === version);
  const others = live.filter((instance) => instance.version !== version);
  const servingCount = serving.length + pendingStarts.filter((pending) => pending.version === version).length;
  const otherCount = others.length + pendingStarts.filter((pending) => pending.version !== version).length;
  if (otherCount === 0) {
    if (servingCount < replicas) return { starts: replicas - servingCount, startReason: "scale up", remove: [] };
    const surplus = removalOrder(serving).slice(0, servingCount - replicas);
    return { starts: 0, startReason: "", remove: surplus.map((instance) => ({ instance, reason: "scale down" })) };
  }
  switch (rollout.phase) {
    case "rolling_back":
    case "rolled_back":
      return {
        starts: Math.max(0, replicas - servingCount),
        startReason: "rollback",
        remove: removalOrder(others).map((instance) => ({ instance, reason: "rollback" })),
      };
    case "paused":
      return { starts: 0, startReason: "", remove: [] };
    case "progressing":
    case "complete":
      return rollingStep(serving, others, servingCount, otherCount, replicas, strategy);
  }
}

/**
 * One step of a rolling update, Kubernetes style: start new instances while the
 * total stays within replicas + maxSurge; remove old ones while the routable
 * count stays at or above replicas - maxUnavailable. Old instances that are not
 * routable go first, since removing them costs no availability.
 */
function rollingStep(
  serving: readonly ObservedInstance[],
  others: readonly ObservedInstance[],
  servingCount: number,
  otherCount: number,
  replicas: number,
  strategy: ResolvedStrategy,
): Decision {
  const total = servingCount + otherCount;
  const available = [...serving, ...others].filter((instance) => isRoutable(instance.state)).length;
  let budget = available - Math.max(0, replicas - strategy.maxUnavailable);
  const remove: Decision["remove"] = [];
  const take = (instance: ObservedInstance, reason: string): boolean => {
    if (isRoutable(instance.state)) {
      if (budget <= 0) return false;
      budget -= 1;
    }
    remove.push({ instance, reason });
    return true;
  };
  const orderedOthers = removalOrder(others);
  for (const instance of orderedOthers.filter((candidate) => !isRoutable(candidate.state))) take(instance, "rolling update");
  for (const instance of orderedOthers.filter((candidate) => isRoutable(candidate.state))) take(instance, "rolling update");
  // replicas lowered in the middle of an update
  let surplus = servingCount - replicas;
  for (const instance of removalOrder(serving)) {
    if (surplus <= 0) break;
    if (take(instance, "scale down")) surplus -= 1;
  }
  const starts = Math.max(0, Math.min(replicas - servingCount, replicas + strategy.maxSurge - total));
  return { starts, startReason: "rolling update", remove };
}

const removalRank: Partial<Record<HealthState, number>> = {
  [HealthState.HEALTH_STATE_UNHEALTHY]: 0,
  [HealthState.HEALTH_STATE_STARTING]: 1,
  [HealthState.HEALTH_STATE_DEGRADED]: 2,
  [HealthState.HEALTH_STATE_READY]: 3,
};

/** Unhealthy first, then starting, degraded, ready; newest first within each. */
function removalOrder(instances: readonly ObservedInstance[]): ObservedInstance[] {
  return [...instances].sort(
    (left, right) =>
      (removalRank[left.state] ?? 0) - (removalRank[right.state] ?? 0) ||
      right.startedAtMs - left.startedAtMs ||
      compareStrings(right.instanceId, left.instanceId),
  );
}

function servingTemplate(state: ReconcileState): InstanceTemplate {
  return isRollingBack(state.rollout) && state.stable ? state.stable : state.target;
}

function isRollingBack(rollout: RolloutState): boolean {
  return rollout.phase === "rolling_back" || rollout.phase === "rolled_back";
}

function upsertLeaving(leaving: readonly LeavingInstance[], entry: LeavingInstance): LeavingInstance[] {
  return [...leaving.filter((existing) => existing.instanceId !== entry.instanceId), entry];
}

function mostCommonOtherVersion(observed: readonly ObservedInstance[], version: string): string {
  const counts = new Map<string, number>();
  for (const instance of observed) if (instance.version !== version) counts.set(instance.version, (counts.get(instance.version) ?? 0) + 1);
  let best = "";
  let bestCount = 0;
  for (const [candidate, count] of [...counts].sort(([left], [right]) => compareStrings(left, right))) {
    if (count > bestCount) [best, bestCount] = [candidate, count];
  }
  return best;
}

function sameRollout(left: RolloutState, right: RolloutState): boolean {
  return JSON.stringify(toRolloutMessage(left)) === JSON.stringify(toRolloutMessage(right));
}

function statusOf(census: Census, pendingStarts: readonly PendingStart[], rollout: RolloutState, unplaced: number): DeploymentStatus {
  const waiting = unplaced > 0 ? `; ${unplaced} instance(s) wait for sidecar capacity` : "";
  return {
    replicas: census.live.length + pendingStarts.length,
    readyReplicas: census.live.filter((instance) => isRoutable(instance.state)).length,
    updatedReplicas: rollout.updatedReplicas,
    phase: rollout.phase,
    message: `${rollout.message}${waiting}`,
  };
}

function compareStrings(left: string, right: string): number {
  return left < right ? -1 : left > right ? 1 : 0;
}
