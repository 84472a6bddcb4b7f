import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { type Rollout, Rollout_Phase } from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { HealthState } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { isRoutable } from "../../registry/domain/health-state.js";
import type { ResolvedStrategy } from "./deployment-spec.js";

/**
 * progressing: replacing instances of other revisions with `toRevision`;
 * complete: every live instance runs `toRevision` and enough are READY;
 * paused: nothing moves (asked for, or a failure with no earlier version to return to);
 * rolling_back: a new instance failed, `fromRevision` is being restored;
 * rolled_back: `fromRevision` serves again at full replicas.
 *
 * Instances are told apart by template revision (deployment-spec.ts), not by
 * version: a changed env or args with the same version is a rollout too.
 * Versions are kept for people (messages) and for the traffic split, which
 * routers apply per capability version.
 */
export type RolloutPhase = "progressing" | "complete" | "paused" | "rolling_back" | "rolled_back";

/** A rolling update of one deployment. Plain data, so it can be stored or logged as JSON. */
export interface RolloutState {
  deployment: string;
  /** Deployment generation that started this rollout. */
  generation: number;
  /** "" when no earlier version is known (first deploy, or state lost in a server restart). */
  fromVersion: string;
  toVersion: string;
  /** Template revisions (deployment-spec.ts templateRevision); fromRevision "" when unknown. */
  fromRevision: string;
  toRevision: string;
  /** False when the earlier version's spec is unknown: a failure then pauses instead of rolling back. */
  canRollBack: boolean;
  phase: RolloutPhase;
  desiredReplicas: number;
  /** Live instances that are routable (READY or DEGRADED), every version. */
  readyReplicas: number;
  /** Live instances running `toRevision`. */
  updatedReplicas: number;
  /** Routable live instances per version; what `trafficSplit` weighs by. */
  readyByVersion: Record<string, number>;
  canaryWeightPercent: number;
  message: string;
  startedAtMs: number;
  phaseChangedAtMs: number;
}

/**
 * One live instance as the rollout judges it. Instances being drained or stopped
 * on purpose are left out; starts not yet registered come in as STARTING.
 */
export interface RolloutInstance {
  instanceId: string;
  version: string;
  revision: string;
  state: HealthState;
  /** When the start was asked for or, failing that, when it registered. */
  startedAtMs: number;
  /** Set once the instance has been READY; a later fall is health's business, not readiness'. */
  readyAtMs?: number | undefined;
  errorRate: number;
}

export type RolloutEvent =
  | {
      type: "observe";
      nowMs: number;
      desiredReplicas: number;
      strategy: ResolvedStrategy;
      instances: readonly RolloutInstance[];
    }
  | { type: "pause"; nowMs: number; reason: string }
  | { type: "resume"; nowMs: number };

export interface StartRolloutInput {
  deployment: string;
  generation: number;
  fromVersion: string;
  toVersion: string;
  fromRevision: string;
  toRevision: string;
  canRollBack: boolean;
  desiredReplicas: number;
  canaryWeightPercent: number;
  nowMs: number;
}

export function startRollout(input: StartRolloutInput): RolloutState {
  return {
    deployment: input.deployment,
    generation: input.generation,
    fromVersion: input.fromVersion,
    toVersion: input.toVersion,
    fromRevision: input.fromRevision,
    toRevision: input.toRevision,
    canRollBack: input.canRollBack,
    phase: "progressing",
    desiredReplicas: input.desiredReplicas,
    readyReplicas: 0,
    updatedReplicas: 0,
    readyByVersion: {},
    canaryWeightPercent: input.canaryWeightPercent,
    message:
      input.fromVersion === "" && input.fromRevision === ""
        ? `starting ${input.toVersion}`
        : `updating ${describeRevision(input.fromVersion, input.fromRevision, input.toVersion)} to ${describeRevision(input.toVersion, input.toRevision, input.fromVersion)}`,
    startedAtMs: input.nowMs,
    phaseChangedAtMs: input.nowMs,
  };
}

/**
 * The one transition function of the rollout state machine. `observe` updates
 * the counts and moves the phase (failure, completion, end of rollback);
 * `pause` and `resume` are an operator's, and throw failedPrecondition where
 * they make no sense.
 */
export function transitionRollout(rollout: RolloutState, event: RolloutEvent): RolloutState {
  switch (event.type) {
    case "pause":
      if (rollout.phase !== "progressing") throw illegal(rollout, "pause");
      return enter(rollout, "paused", `paused: ${event.reason}`, event.nowMs);
    case "resume":
      if (rollout.phase !== "paused") throw illegal(rollout, "resume");
      return enter(rollout, "progressing", `updating to ${toLabel(rollout)}`, event.nowMs);
    case "observe":
      return observe(rollout, event);
  }
}

function observe(rollout: RolloutState, event: Extract<RolloutEvent, { type: "observe" }>): RolloutState {
  const readyByVersion: Record<string, number> = {};
  for (const instance of event.instances) {
    if (isRoutable(instance.state)) readyByVersion[instance.version] = (readyByVersion[instance.version] ?? 0) + 1;
  }
  const counted: RolloutState = {
    ...rollout,
    desiredReplicas: event.desiredReplicas,
    canaryWeightPercent: event.strategy.canaryWeightPercent,
    readyByVersion,
    readyReplicas: Object.values(readyByVersion).reduce((sum, count) => sum + count, 0),
    updatedReplicas: event.instances.filter((instance) => instance.revision === rollout.toRevision && instance.state !== HealthState.HEALTH_STATE_FAILED).length,
  };
  switch (rollout.phase) {
    case "progressing": {
      const failure = findFailure(counted, event);
      if (failure !== undefined) {
        return counted.canRollBack
          ? enter(counted, "rolling_back", `rolling back to ${fromLabel(counted)}: ${failure}`, event.nowMs)
          : enter(counted, "paused", `paused: ${failure}`, event.nowMs);
      }
      if (converged(counted, event, counted.toRevision)) return enter(counted, "complete", completeMessage(counted, event), event.nowMs);
      return { ...counted, message: progressMessage(counted, event) };
    }
    case "paused":
      return converged(counted, event, counted.toRevision) ? enter(counted, "complete", completeMessage(counted, event), event.nowMs) : counted;
    case "rolling_back":
      if (!converged(counted, event, counted.fromRevision)) return counted;
      return enter(counted, "rolled_back", counted.message.replace(/^rolling back to/, "rolled back to"), event.nowMs);
    case "complete":
      return { ...counted, message: completeMessage(counted, event) };
    case "rolled_back":
      return counted;
  }
}

/** Why the update must stop, or undefined while every new instance is on time and healthy. */
function findFailure(rollout: RolloutState, event: Extract<RolloutEvent, { type: "observe" }>): string | undefined {
  const { readyTimeoutMs, maxErrorRate } = event.strategy;
  const target = toLabel(rollout);
  for (const instance of event.instances) {
    if (instance.revision !== rollout.toRevision) continue;
    if (instance.state === HealthState.HEALTH_STATE_FAILED) return `instance ${instance.instanceId} of ${target} FAILED`;
    const routable = isRoutable(instance.state);
    if (!routable && instance.readyAtMs === undefined && event.nowMs - instance.startedAtMs >= readyTimeoutMs) {
      return `instance ${instance.instanceId} of ${target} not READY within ${readyTimeoutMs} ms`;
    }
    if (routable && instance.errorRate > maxErrorRate) {
      return `instance ${instance.instanceId} of ${target} error rate ${instance.errorRate.toFixed(2)} above ${maxErrorRate}`;
    }
  }
  return undefined;
}

/** Every live instance runs `revision` and at least the desired number of them are routable. */
function converged(rollout: RolloutState, event: Extract<RolloutEvent, { type: "observe" }>, revision: string): boolean {
  if (event.instances.some((instance) => instance.revision !== revision)) return false;
  return readyOf(event, revision) >= rollout.desiredReplicas;
}

function readyOf(event: Extract<RolloutEvent, { type: "observe" }>, revision: string): number {
  return event.instances.filter((instance) => instance.revision === revision && isRoutable(instance.state)).length;
}

function enter(rollout: RolloutState, phase: RolloutPhase, message: string, nowMs: number): RolloutState {
  return { ...rollout, phase, message, phaseChangedAtMs: nowMs };
}

function progressMessage(rollout: RolloutState, event: Extract<RolloutEvent, { type: "observe" }>): string {
  const ready = readyOf(event, rollout.toRevision);
  return `${rollout.updatedReplicas} of ${rollout.desiredReplicas} replicas updated to ${toLabel(rollout)}, ${ready} READY`;
}

function completeMessage(rollout: RolloutState, event: Extract<RolloutEvent, { type: "observe" }>): string {
  return `${readyOf(event, rollout.toRevision)} of ${rollout.desiredReplicas} replicas of ${toLabel(rollout)} READY`;
}

/** The version, with the revision when the other side has the same version (an env or args change). */
function describeRevision(version: string, revision: string, otherVersion: string): string {
  return version === otherVersion && revision !== "" ? `${version} (revision ${revision})` : version;
}

function toLabel(rollout: RolloutState): string {
  return describeRevision(rollout.toVersion, rollout.toRevision, rollout.fromVersion);
}

function fromLabel(rollout: RolloutState): string {
  return describeRevision(rollout.fromVersion, rollout.fromRevision, rollout.toVersion);
}

function illegal(rollout: RolloutState, action: string): MeshError {
  return new MeshError("failedPrecondition", `rollout: cannot ${action} while ${rollout.phase}`);
}

/**
 * Percent of traffic per version for the router (DESIGN §5: "unless a rollout's
 * traffic split says otherwise"). While progressing or paused, the new version
 * gets `canaryWeightPercent` when set and both sides have READY instances,
 * otherwise traffic follows READY replica counts. A rollback takes the new
 * version out at once; a complete rollout sends everything to it. Versions with
 * no READY instance get nothing; an empty result means "no opinion".
 */
export function trafficSplit(
  rollout: RolloutState,
  readyByVersion: Readonly<Record<string, number>> = rollout.readyByVersion,
): Record<string, number> {
  const ready = Object.fromEntries(Object.entries(readyByVersion).filter(([, count]) => count > 0));
  const newReady = ready[rollout.toVersion] ?? 0;
  const others = Object.fromEntries(Object.entries(ready).filter(([version]) => version !== rollout.toVersion));
  switch (rollout.phase) {
    case "rolling_back":
    case "rolled_back":
      return proportional(others, 100);
    case "complete":
      return newReady > 0 ? { [rollout.toVersion]: 100 } : proportional(others, 100);
    case "progressing":
    case "paused": {
      const weight = rollout.canaryWeightPercent;
      if (weight === 0 || newReady === 0 || Object.keys(others).length === 0) return proportional(ready, 100);
      return { ...proportional(others, 100 - weight), [rollout.toVersion]: weight };
    }
  }
}

/** Splits `total` percent by count with largest remainders, so the parts always add up to `total`. */
function proportional(counts: Readonly<Record<string, number>>, total: number): Record<string, number> {
  const versions = Object.keys(counts).sort();
  const sum = versions.reduce((accumulated, version) => accumulated + (counts[version] ?? 0), 0);
  if (sum === 0 || total === 0) return {};
  const shares = versions.map((version) => {
    const exact = ((counts[version] ?? 0) * total) / sum;
    return { version, floor: Math.floor(exact), remainder: exact - Math.floor(exact) };
  });
  let left = total - shares.reduce((accumulated, share) => accumulated + share.floor, 0);
  for (const share of [...shares].sort((a, b) => b.remainder - a.remainder || (a.version < b.version ? -1 : 1))) {
    if (left === 0) break;
    share.floor += 1;
    left -= 1;
  }
  return Object.fromEntries(shares.filter((share) => share.floor > 0).map((share) => [share.version, share.floor]));
}

const phaseToProto: Record<RolloutPhase, Rollout_Phase> = {
  progressing: Rollout_Phase.PHASE_PROGRESSING,
  complete: Rollout_Phase.PHASE_COMPLETE,
  paused: Rollout_Phase.PHASE_PAUSED,
  rolling_back: Rollout_Phase.PHASE_ROLLING_BACK,
  rolled_back: Rollout_Phase.PHASE_ROLLED_BACK,
};

/** The GetRollout answer; `waitingForCapacity` comes from placement (reconcile.ts), not from the rollout itself. */
export function toRolloutMessage(rollout: RolloutState, waitingForCapacity = 0): Rollout {
  return {
    deployment: rollout.deployment,
    fromVersion: rollout.fromVersion,
    toVersion: rollout.toVersion,
    phase: phaseToProto[rollout.phase],
    updatedReplicas: rollout.updatedReplicas,
    readyReplicas: rollout.readyReplicas,
    desiredReplicas: rollout.desiredReplicas,
    message: rollout.message,
    startedAtMs: rollout.startedAtMs,
    generation: rollout.generation,
    fromRevision: rollout.fromRevision,
    toRevision: rollout.toRevision,
    waitingForCapacity,
  };
}
