import type { Deployment, DeploymentStatus, Rollout, StartAgent } from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type AgentInstance, HealthState } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { isRoutable } from "../../registry/domain/health-state.js";
import { type InstanceClaim, type LostRules, lostReason } from "./claims.js";
import { type InstanceTemplate, type ResolvedStrategy, resolveStrategy, revisionOfManifest, startCommandOf, templateOf } from "./deployment-spec.js";
import { type Placement, type SidecarSnapshot, hostOf, placeInstances, planMove, withPlacements } from "./placement.js";
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
  /** Template revision from its manifest's revision label; "" when it carries none. */
  revision: string;
  /** Sidecar that runs it: the one whose session reports it, else the last one that did, else its registered host. */
  sidecarId: string;
  /** Who vouches for it (claims.ts). */
  claim: InstanceClaim;
  state: HealthState;
  /** When its start was asked for, or when it registered. */
  startedAtMs: number;
  /** When it was first READY; undefined until then. */
  readyAtMs?: number | undefined;
  /** From the last heartbeat's Load, 0..1. */
  errorRate: number;
}

/**
 * An AgentInstance from the registry as plan() sees it. `sidecarId` and `claim`
 * come from claims.ts classifyClaim; `readyAtMs` is when it was first seen
 * READY, if ever.
 */
export function observeInstance(
  instance: AgentInstance,
  seen: { sidecarId: string; claim: InstanceClaim; readyAtMs: number | undefined },
): ObservedInstance {
  const { sidecarId, claim, readyAtMs } = seen;
  return {
    instanceId: instance.instanceId,
    deployment: instance.deployment,
    version: instance.manifest?.version ?? "",
    revision: revisionOfManifest(instance.manifest),
    sidecarId,
    claim,
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
  /** The sidecar's session when the start was sent (SidecarSnapshot.sessionId); a new session never got it. */
  sessionId?: string | undefined;
  version: string;
  revision: string;
  requestedAtMs: number;
}

/**
 * A rebalancing move in progress, make-before-break: `instanceId` was started
 * on `toSidecarId`; once it is READY, `fromInstanceId` is drained and stopped.
 */
export interface MoveState {
  instanceId: string;
  toSidecarId: string;
  fromInstanceId: string;
  fromSidecarId: string;
  startedAtMs: number;
  /** desired.replicas when it began: a scale change calls the move off. */
  replicas: number;
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
  /** At most one move per deployment at a time. */
  move?: MoveState | undefined;
  /** After a move that failed, none before then (no flapping onto a host that cannot run it). */
  moveBlockedUntilMs?: number | undefined;
  /** Instances the last pass could not place: no connected sidecar had capacity. Shown by GetRollout. */
  waitingForCapacity?: number | undefined;
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
  /** An instance no session reports, out of routing this long, is lost: replaced, then deregistered (claims.ts). */
  lostInstanceTimeoutMs: number;
  /** False: replicas are spread when placed, but never moved afterwards. */
  rebalance: boolean;
  /** After a move fails (the new instance never READY, or lost), no move of this deployment for this long. */
  moveBackoffMs: number;
}

export const defaultReconcileOptions: ReconcileOptions = {
  drainGraceMs: 10_000,
  stopGraceMs: 5_000,
  registerTimeoutMs: 60_000,
  stopRetryMs: 15_000,
  lostInstanceTimeoutMs: 15_000,
  rebalance: true,
  moveBackoffMs: 60_000,
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
  /** The instance is lost (claims.ts): deregister `instanceId`, then carry out `start`, on any sidecar. */
  | { type: "reschedule"; instanceId: string; fromSidecarId: string; start: StartAction; reason: string }
  /** Deregister an instance nobody can stop any more (it is lost). */
  | { type: "forget"; instanceId: string; reason: string }
  /** A rebalancing move began (start on `toSidecarId`) or ended: log it. */
  | { type: "move"; phase: "started" | "completed" | "abandoned"; instanceId: string; fromSidecarId: string; toSidecarId: string; reason: string }
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
  /** Nobody will vouch for it again (claims.ts lostReason), not yet forgotten. */
  lost: { instance: ObservedInstance; wasLive: boolean; reason: string }[];
}

/**
 * One reconcile pass for one deployment: compares the desired state with what
 * is observed and returns the commands that move one towards the other, plus
 * the state to remember. Pure: same input, same output; time and ids come in.
 *
 * Scale: starts until `replicas` instances of the serving revision exist
 * (placed by `placeInstances`, spread over hosts); removes surplus
 * unhealthy-first, from the most crowded host, newest-first, draining routable
 * ones before stopping them. FAILED instances are stopped and replaced; lost
 * instances (claims.ts: nobody vouches for them) are replaced and deregistered.
 * A new template revision (any change to what an instance runs) starts a
 * rolling update (see rollout.ts). Once all is settled, one instance at a time
 * is moved towards a better spread (make-before-break).
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
  const sessions = new Map(input.sidecars.filter((sidecar) => sidecar.connected).map((sidecar) => [sidecar.sidecarId, sidecar.sessionId]));
  const hostBySidecar = new Map(input.sidecars.map((sidecar) => [sidecar.sidecarId, hostOf(sidecar)]));
  const hostOfInstance = (instance: ObservedInstance) => hostBySidecar.get(instance.sidecarId) ?? instance.sidecarId;
  const actions: ReconcileAction[] = [];
  const removals: ReconcileAction[] = [];

  const adopted = adopt(input.state, desired, strategy, observed, nowMs);
  const lostRules = { connected, nowMs, lostAfterMs: options.lostInstanceTimeoutMs, managed: true };
  let leaving = adoptDrained(
    adopted.leaving.filter((entry) => observedById.has(entry.instanceId)),
    observed,
    lostRules,
    nowMs,
  );
  let pendingStarts = settlePendingStarts(adopted.pendingStarts, observedById, sessions, nowMs, options, strategy, removals);
  const census = takeCensus(observed, leaving, lostRules);

  const observe = (rolloutBefore: RolloutState, pending: readonly PendingStart[], live: readonly ObservedInstance[]) =>
    transitionRollout(rolloutBefore, {
      type: "observe",
      nowMs,
      desiredReplicas: desired.replicas,
      strategy,
      instances: rolloutInstances(live, census.failed, pending),
    });
  const rollout = observe(adopted.rollout, pendingStarts, census.live);
  if (rollout.phase === "rolling_back" && adopted.rollout.phase !== "rolling_back") {
    actions.push({ type: "rollback", fromVersion: rollout.fromVersion, toVersion: rollout.toVersion, reason: rollout.message });
  }
  const stable = rollout.phase === "complete" ? adopted.target : adopted.stable;
  const serving = servingTemplate({ ...adopted, rollout, stable });

  const taken = new Set<string>();
  const forget = (instance: ObservedInstance, reason: string) => {
    removals.push({ type: "forget", instanceId: instance.instanceId, reason });
    leaving = upsertLeaving(leaving, { instanceId: instance.instanceId, sidecarId: instance.sidecarId, step: "forgotten", sinceMs: nowMs, reason });
  };
  const remove = (instance: ObservedInstance, reason: string) => {
    const drain = isRoutable(instance.state);
    taken.add(instance.instanceId);
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
    // Starts of the revision being rolled back are called off; the sidecar may already be spawning them.
    for (const pending of pendingStarts.filter((start) => start.revision !== serving.revision)) {
      removals.push({ type: "stop", sidecarId: pending.sidecarId, instanceId: pending.instanceId, graceMs: options.stopGraceMs, reason: "rollback" });
    }
    pendingStarts = pendingStarts.filter((start) => start.revision === serving.revision);
  }

  const moved = advanceMove(adopted, { census, pendingStarts, servingRevision: serving.revision, rollout, nowMs, strategy, options, replicas: desired.replicas });
  if (moved.event) actions.push(moved.event);
  if (moved.removeSource) remove(moved.removeSource, "rebalance");
  if (moved.stopTarget) remove(moved.stopTarget, "rebalance abandoned");
  pendingStarts = pendingStarts.filter((pending) => pending.instanceId !== moved.cancelPending?.instanceId);
  if (moved.cancelPending) {
    const { sidecarId, instanceId } = moved.cancelPending;
    removals.push({ type: "stop", sidecarId, instanceId, graceMs: options.stopGraceMs, reason: "rebalance abandoned" });
  }
  let move = moved.move;
  const moveBlockedUntilMs = moved.blockedUntilMs !== undefined && nowMs < moved.blockedUntilMs ? moved.blockedUntilMs : undefined;

  const live = census.live.filter((instance) => !taken.has(instance.instanceId));
  const spread = spreadOf(live, hostOfInstance);
  // A move in progress runs one instance over replicas until its source is drained.
  const replicas = desired.replicas + (move ? 1 : 0);
  const decision = decide(live, pendingStarts, serving.revision, rollout, replicas, strategy, spread);
  for (const { instance, reason } of decision.remove) remove(instance, reason);

  const placementSnapshot = withPlacements(
    input.sidecars,
    pendingStarts.map((pending) => ({ sidecarId: pending.sidecarId, deployment: desired.name })),
  );
  const newStart = (sidecarId: string, reason: string): StartAction => {
    const instanceId = input.newInstanceId();
    return { type: "start", sidecarId, instanceId, version: serving.version, command: startCommandOf(serving, instanceId), reason };
  };
  const starts: StartAction[] = placeInstances(placementSnapshot, desired.name, decision.starts).map((sidecarId) => newStart(sidecarId, decision.startReason));
  const unplaced = decision.starts - starts.length;

  // A lost instance that counted as live is replaced by one of this pass's starts: pair them up.
  const replaceable = census.lost.filter((lost) => lost.wasLive);
  const placed: ReconcileAction[] = starts.map((start, index) => {
    const lost = replaceable[index];
    if (!lost) return start;
    const { instanceId, sidecarId } = lost.instance;
    leaving = upsertLeaving(leaving, { instanceId, sidecarId, step: "forgotten", sinceMs: nowMs, reason: lost.reason });
    return { type: "reschedule", instanceId, fromSidecarId: sidecarId, start: { ...start, reason: "replaces a lost instance" }, reason: lost.reason };
  });
  for (const lost of [...census.lost.filter((entry) => !entry.wasLive), ...replaceable.slice(starts.length)]) {
    forget(lost.instance, lost.reason);
  }

  const settled =
    options.rebalance &&
    move === undefined &&
    moveBlockedUntilMs === undefined &&
    rollout.phase === "complete" &&
    starts.length === 0 &&
    removals.length === 0 &&
    pendingStarts.length === 0 &&
    leaving.length === 0 &&
    census.lost.length === 0 &&
    live.length === desired.replicas &&
    live.every((instance) => instance.revision === serving.revision && isRoutable(instance.state));
  if (settled) {
    const begun = beginMove(placementSnapshot, desired.name, live, spread, strategy);
    if (begun?.kind === "makeBeforeBreak") {
      const start = newStart(begun.toSidecarId, "rebalance");
      starts.push(start);
      placed.push(start);
      move = {
        instanceId: start.instanceId,
        toSidecarId: begun.toSidecarId,
        fromInstanceId: begun.source.instanceId,
        fromSidecarId: begun.source.sidecarId,
        startedAtMs: nowMs,
        replicas: desired.replicas,
      };
      actions.push({ type: "move", phase: "started", instanceId: begun.source.instanceId, fromSidecarId: begun.source.sidecarId, toSidecarId: begun.toSidecarId, reason: "spread replicas over hosts" });
    } else if (begun?.kind === "breakBeforeMake") {
      // maxSurge 0: take one away from the crowded host; the next pass places its replacement by spread.
      remove(begun.source, "rebalance");
      actions.push({ type: "move", phase: "started", instanceId: begun.source.instanceId, fromSidecarId: begun.source.sidecarId, toSidecarId: begun.toSidecarId, reason: "spread replicas over hosts (maxSurge 0)" });
    }
  }

  pendingStarts = [
    ...pendingStarts,
    ...starts.map((start) => ({
      instanceId: start.instanceId,
      sidecarId: start.sidecarId,
      sessionId: sessions.get(start.sidecarId),
      version: start.version,
      revision: serving.revision,
      requestedAtMs: nowMs,
    })),
  ];

  // Observed once more with this pass's starts, so the counts GetRollout shows include them at once.
  const counted = observe(rollout, pendingStarts, live);
  const state: ReconcileState = {
    deployment: desired.name,
    target: adopted.target,
    stable,
    rollout: counted,
    pendingStarts,
    leaving,
    move,
    moveBlockedUntilMs,
    waitingForCapacity: unplaced,
  };
  if (input.state === undefined || !sameRollout(input.state.rollout, counted) || (input.state.waitingForCapacity ?? 0) !== unplaced) {
    actions.push({ type: "rolloutProgress", rollout: toRolloutMessage(counted, unplaced) });
  }
  actions.push(...removals, ...placed);
  return { actions, state, status: statusOf(live, pendingStarts, counted, unplaced, move) };
}

/** Adds the starts other deployments have in flight to a snapshot, so one pass does not overfill a sidecar. */
export function reservePendingStarts(sidecars: readonly SidecarSnapshot[], states: Iterable<ReconcileState>): SidecarSnapshot[] {
  const placements: Placement[] = [];
  for (const state of states) {
    for (const pending of state.pendingStarts) placements.push({ sidecarId: pending.sidecarId, deployment: state.deployment });
  }
  return withPlacements(sidecars, placements);
}

/** Takes in a (possibly changed) spec: a new template revision starts a rollout, anything else (replicas, strategy) applies at once. */
function adopt(
  previous: ReconcileState | undefined,
  desired: Deployment,
  strategy: ResolvedStrategy,
  observed: readonly ObservedInstance[],
  nowMs: number,
): ReconcileState {
  const target = templateOf(desired);
  const begin = (from: InstanceTemplate | undefined) => {
    const other = from ? { version: from.version, revision: from.revision } : mostCommonOther(observed, target.revision);
    return startRollout({
      deployment: desired.name,
      generation: desired.generation,
      fromVersion: other.version,
      toVersion: target.version,
      fromRevision: other.revision,
      toRevision: target.revision,
      canRollBack: from !== undefined,
      desiredReplicas: desired.replicas,
      canaryWeightPercent: strategy.canaryWeightPercent,
      nowMs,
    });
  };
  if (!previous) return { deployment: desired.name, target, stable: undefined, rollout: begin(undefined), pendingStarts: [], leaving: [] };
  // Also after a rollback: the same version applied again with a fixed spec is a new revision, worth another try.
  if (target.revision !== previous.target.revision) return { ...previous, target, rollout: begin(previous.stable) };
  return { ...previous, target };
}

/** Drops starts that registered, whose sidecar went away or reconnected (the new session never got them), or that never registered in time. */
function settlePendingStarts(
  pendingStarts: readonly PendingStart[],
  observedById: ReadonlyMap<string, ObservedInstance>,
  sessions: ReadonlyMap<string, string | undefined>,
  nowMs: number,
  options: ReconcileOptions,
  strategy: ResolvedStrategy,
  removals: ReconcileAction[],
): PendingStart[] {
  // Never before the readiness deadline, or a start that hangs would end the wait the rollout judges it by.
  const timeoutMs = Math.max(options.registerTimeoutMs, strategy.readyTimeoutMs);
  return pendingStarts.filter((pending) => {
    if (observedById.has(pending.instanceId) || !sessions.has(pending.sidecarId)) return false;
    const session = sessions.get(pending.sidecarId);
    if (pending.sessionId !== undefined && session !== undefined && session !== pending.sessionId) return false;
    if (nowMs - pending.requestedAtMs < timeoutMs) return true;
    // In case the process shows up after all.
    removals.push({ type: "stop", sidecarId: pending.sidecarId, instanceId: pending.instanceId, graceMs: options.stopGraceMs, reason: "never registered" });
    return false;
  });
}

function takeCensus(observed: readonly ObservedInstance[], leaving: readonly LeavingInstance[], rules: LostRules): Census {
  const leavingById = new Map(leaving.map((entry) => [entry.instanceId, entry]));
  const census: Census = { live: [], failed: [], lost: [] };
  for (const instance of observed) {
    const entry = leavingById.get(instance.instanceId);
    const reason = lostReason(instance, rules);
    if (reason !== undefined) {
      if (entry?.step !== "forgotten") {
        census.lost.push({ instance, wasLive: entry === undefined && instance.state !== HealthState.HEALTH_STATE_STOPPED, reason });
      }
      continue;
    }
    if (entry) continue;
    if (instance.state === HealthState.HEALTH_STATE_FAILED) census.failed.push(instance);
    // STOPPED: exited, its sidecar deregisters it. (DRAINING ones are in `leaving`: adoptDrained.)
    else if (instance.state !== HealthState.HEALTH_STATE_STOPPED && instance.state !== HealthState.HEALTH_STATE_DRAINING) {
      census.live.push(instance);
    }
  }
  return census;
}

function rolloutInstances(live: readonly ObservedInstance[], failed: readonly ObservedInstance[], pendingStarts: readonly PendingStart[]): RolloutInstance[] {
  return [
    ...[...live, ...failed].map((instance) => ({
      instanceId: instance.instanceId,
      version: instance.version,
      revision: instance.revision,
      state: instance.state,
      startedAtMs: instance.startedAtMs,
      readyAtMs: instance.readyAtMs,
      errorRate: instance.errorRate,
    })),
    ...pendingStarts.map((pending) => ({
      instanceId: pending.instanceId,
      version: pending.version,
      revision: pending.revision,
      state: HealthState.HEALTH_STATE_STARTING,
      startedAtMs: pending.requestedAtMs,
      errorRate: 0,
    })),
  ];
}

/**
 * An instance DRAINING that this reconciler did not drain was drained by an
 * operator (DrainAgent, `ctl drain`) or by its sidecar: it has left routing for
 * good. Finish the job like a scale-down: stop it, which frees its slot on the
 * sidecar, and count it out, so a replacement is placed (docs/deployments.md,
 * "Commands on one instance"). Left alone it would hold the slot for ever.
 */
function adoptDrained(leaving: readonly LeavingInstance[], observed: readonly ObservedInstance[], rules: LostRules, nowMs: number): LeavingInstance[] {
  const known = new Set(leaving.map((entry) => entry.instanceId));
  const drained = observed.filter(
    (instance) => instance.state === HealthState.HEALTH_STATE_DRAINING && !known.has(instance.instanceId) && lostReason(instance, rules) === undefined,
  );
  return [
    ...leaving,
    ...drained.map((instance): LeavingInstance => ({ instanceId: instance.instanceId, sidecarId: instance.sidecarId, step: "draining", sinceMs: nowMs, reason: "drained" })),
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

interface MoveContext {
  replicas: number;
  census: Census;
  pendingStarts: readonly PendingStart[];
  servingRevision: string;
  rollout: RolloutState;
  nowMs: number;
  strategy: ResolvedStrategy;
  options: ReconcileOptions;
}

interface MoveProgress {
  move: MoveState | undefined;
  blockedUntilMs: number | undefined;
  event?: ReconcileAction;
  /** The new instance is READY: drain and stop the one it replaces. */
  removeSource?: ObservedInstance;
  /** The new instance did not make it: stop it. */
  stopTarget?: ObservedInstance;
  /** The new instance never registered and the move is off: call off its start. */
  cancelPending?: PendingStart;
}

/** One step of a move in progress: finish it once the new instance is READY, give it up when it cannot finish. */
function advanceMove(state: ReconcileState, context: MoveContext): MoveProgress {
  const move = state.move;
  const blockedUntilMs = state.moveBlockedUntilMs;
  if (!move) return { move, blockedUntilMs };
  const { census, nowMs } = context;
  const ended = (phase: "completed" | "abandoned", reason: string, blocked: boolean): MoveProgress => ({
    move: undefined,
    blockedUntilMs: blocked ? nowMs + context.options.moveBackoffMs : blockedUntilMs,
    event: { type: "move", phase, instanceId: move.fromInstanceId, fromSidecarId: move.fromSidecarId, toSidecarId: move.toSidecarId, reason },
  });
  const target = census.live.find((instance) => instance.instanceId === move.instanceId);
  const pending = context.pendingStarts.find((start) => start.instanceId === move.instanceId);
  const source = census.live.find((instance) => instance.instanceId === move.fromInstanceId);
  // An update, a rollback or a scale change takes over: the extra instance is just one more for decide() to weigh.
  if (context.rollout.phase !== "complete" || context.replicas !== move.replicas) return ended("abandoned", "the deployment changed", false);
  const started = target ?? pending;
  if (!started) return ended("abandoned", "the new instance failed, was lost or never registered", true);
  if (started.revision !== context.servingRevision) return ended("abandoned", "the deployment changed", false);
  if (!source) return ended("completed", "the instance it replaces is gone", false);
  if (target && isRoutable(target.state)) return { ...ended("completed", "new instance READY", false), removeSource: source };
  const startedAtMs = target?.startedAtMs ?? move.startedAtMs;
  if (nowMs - Math.min(startedAtMs, move.startedAtMs) >= context.strategy.readyTimeoutMs) {
    const reason = `new instance not READY within ${context.strategy.readyTimeoutMs} ms`;
    return target ? { ...ended("abandoned", reason, true), stopTarget: target } : { ...ended("abandoned", reason, true), cancelPending: pending };
  }
  return { move, blockedUntilMs };
}

type BegunMove =
  | { kind: "makeBeforeBreak"; toSidecarId: string; source: ObservedInstance }
  | { kind: "breakBeforeMake"; toSidecarId: string; source: ObservedInstance };

/**
 * Chooses the next move of a settled deployment (placement.ts planMove) and how to
 * make it without losing availability: start first when maxSurge allows one more
 * instance, else stop first when maxUnavailable allows one fewer, else not at all.
 */
function beginMove(
  sidecars: readonly SidecarSnapshot[],
  deployment: string,
  live: readonly ObservedInstance[],
  spread: Spread,
  strategy: ResolvedStrategy,
): BegunMove | undefined {
  const planned = planMove(sidecars, deployment);
  if (!planned) return undefined;
  const [source] = removalOrder(
    live.filter((instance) => instance.sidecarId === planned.fromSidecarId),
    spread,
  );
  if (!source) return undefined;
  if (strategy.maxSurge >= 1) return { kind: "makeBeforeBreak", toSidecarId: planned.toSidecarId, source };
  if (strategy.maxUnavailable >= 1) return { kind: "breakBeforeMake", toSidecarId: planned.toSidecarId, source };
  return undefined;
}

interface Decision {
  starts: number;
  startReason: string;
  remove: { instance: ObservedInstance; reason: string }[];
}

/** How many instances of the serving revision to start and which live instances to take away. */
function decide(
  live: readonly ObservedInstance[],
  pendingStarts: readonly PendingStart[],
  revision: string,
  rollout: RolloutState,
  replicas: number,
  strategy: ResolvedStrategy,
  spread: Spread,
): Decision {
  const serving = live.filter((instance) => instance.revision === revision);
  const others = live.filter((instance) => instance.revision !== revision);
  const servingCount = serving.length + pendingStarts.filter((pending) => pending.revision === revision).length;
  const otherCount = others.length + pendingStarts.filter((pending) => pending.revision !== revision).length;
  if (otherCount === 0) {
    if (servingCount < replicas) return { starts: replicas - servingCount, startReason: "scale up", remove: [] };
    const surplus = removalOrder(serving, spread).slice(0, servingCount - replicas);
    return { starts: 0, startReason: "", remove: surplus.map((instance) => ({ instance, reason: "scale down" })) };
  }
  switch (rollout.phase) {
    case "rolling_back":
    case "rolled_back":
      return {
        starts: Math.max(0, replicas - servingCount),
        startReason: "rollback",
        remove: removalOrder(others, spread).map((instance) => ({ instance, reason: "rollback" })),
      };
    case "paused":
      return { starts: 0, startReason: "", remove: [] };
    case "progressing":
    case "complete":
      return rollingStep(serving, others, servingCount, otherCount, replicas, strategy, spread);
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
  spread: Spread,
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
  const orderedOthers = removalOrder(others, spread);
  for (const instance of orderedOthers.filter((candidate) => !isRoutable(candidate.state))) take(instance, "rolling update");
  for (const instance of orderedOthers.filter((candidate) => isRoutable(candidate.state))) take(instance, "rolling update");
  // replicas lowered in the middle of an update
  let surplus = servingCount - replicas;
  for (const instance of removalOrder(serving, spread)) {
    if (surplus <= 0) break;
    if (take(instance, "scale down")) surplus -= 1;
  }
  const starts = Math.max(0, Math.min(replicas - servingCount, replicas + strategy.maxSurge - total));
  return { starts, startReason: "rolling update", remove };
}

/** Live instances of the deployment per host, and how to find an instance's host. */
interface Spread {
  counts: ReadonlyMap<string, number>;
  hostOf: (instance: ObservedInstance) => string;
}

function spreadOf(live: readonly ObservedInstance[], hostOfInstance: (instance: ObservedInstance) => string): Spread {
  const counts = new Map<string, number>();
  for (const instance of live) counts.set(hostOfInstance(instance), (counts.get(hostOfInstance(instance)) ?? 0) + 1);
  return { counts, hostOf: hostOfInstance };
}

const removalRank: Partial<Record<HealthState, number>> = {
  [HealthState.HEALTH_STATE_UNHEALTHY]: 0,
  [HealthState.HEALTH_STATE_STARTING]: 1,
  [HealthState.HEALTH_STATE_DEGRADED]: 2,
  [HealthState.HEALTH_STATE_READY]: 3,
};

/**
 * Unhealthy first, then starting, degraded, ready; within each, from the host
 * with the most instances of the deployment (counted again after every pick, so
 * scaling 4 → 2 over two hosts takes one from each), then newest first.
 */
function removalOrder(instances: readonly ObservedInstance[], spread: Spread): ObservedInstance[] {
  const counts = new Map(spread.counts);
  const remaining = [...instances];
  const ordered: ObservedInstance[] = [];
  const crowding = (instance: ObservedInstance) => counts.get(spread.hostOf(instance)) ?? 0;
  const compare = (left: ObservedInstance, right: ObservedInstance) =>
    (removalRank[left.state] ?? 0) - (removalRank[right.state] ?? 0) ||
    crowding(right) - crowding(left) ||
    right.startedAtMs - left.startedAtMs ||
    compareStrings(right.instanceId, left.instanceId);
  while (remaining.length > 0) {
    let best = 0;
    for (let index = 1; index < remaining.length; index += 1) {
      if (compare(remaining[index] as ObservedInstance, remaining[best] as ObservedInstance) < 0) best = index;
    }
    const [chosen] = remaining.splice(best, 1) as [ObservedInstance];
    ordered.push(chosen);
    counts.set(spread.hostOf(chosen), crowding(chosen) - 1);
  }
  return ordered;
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

/** The revision most observed instances run other than `revision`, with its version; "" when there is none. */
function mostCommonOther(observed: readonly ObservedInstance[], revision: string): { version: string; revision: string } {
  const counts = new Map<string, { version: string; count: number }>();
  for (const instance of observed) {
    if (instance.revision === revision) continue;
    const entry = counts.get(instance.revision) ?? { version: instance.version, count: 0 };
    entry.count += 1;
    counts.set(instance.revision, entry);
  }
  let best = { version: "", revision: "" };
  let bestCount = 0;
  for (const [candidate, entry] of [...counts].sort(([left], [right]) => compareStrings(left, right))) {
    if (entry.count > bestCount) [best, bestCount] = [{ version: entry.version, revision: candidate }, entry.count];
  }
  return best;
}

function sameRollout(left: RolloutState, right: RolloutState): boolean {
  return JSON.stringify(toRolloutMessage(left)) === JSON.stringify(toRolloutMessage(right));
}

function statusOf(
  live: readonly ObservedInstance[],
  pendingStarts: readonly PendingStart[],
  rollout: RolloutState,
  unplaced: number,
  move: MoveState | undefined,
): DeploymentStatus {
  const waiting = unplaced > 0 ? `; ${unplaced} instance(s) wait for sidecar capacity` : "";
  const moving = move ? `; moving an instance from ${move.fromSidecarId} to ${move.toSidecarId} to spread replicas` : "";
  return {
    replicas: live.length + pendingStarts.length,
    readyReplicas: live.filter((instance) => isRoutable(instance.state)).length,
    updatedReplicas: rollout.updatedReplicas,
    phase: rollout.phase,
    message: `${rollout.message}${waiting}${moving}`,
  };
}

function compareStrings(left: string, right: string): number {
  return left < right ? -1 : left > right ? 1 : 0;
}
