import type { Clock, RandomSource } from "../../sdk/ts/src/core/clock.js";
import { matchesLabelSelector } from "../../sdk/ts/src/core/label-selector.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { balance, balancedLoad } from "../../sdk/ts/src/core/balancer.js";
import { keyFraction } from "../../sdk/ts/src/core/session-affinity.js";
import { compareVersionsDescending, parseVersionRange } from "../../sdk/ts/src/core/semver-match.js";
import { type LabelSelector, type WatchResponse, WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { PeakEwma } from "./peak-ewma.js";

export interface Pick {
  instance: AgentInstance;
  version: string;
}

/**
 * The sidecar's copy of the routing table, fed by the registry's Watch stream, so
 * no call needs a control-plane round trip. Picks by the Discover rules (newest
 * matching version first) and then power of two choices on this sidecar's own
 * outstanding calls, with peak-EWMA latency as the tie-break.
 */
export class EndpointCache {
  private readonly instances = new Map<string, AgentInstance>();
  /** capability name → ids of the instances offering it. */
  private readonly byCapability = new Map<string, Set<string>>();
  private readonly outstanding = new Map<string, number>();
  private readonly latency = new Map<string, PeakEwma>();
  /** Instances a failed call took out of routing, until when. */
  private readonly unroutableUntilMs = new Map<string, number>();
  /** Sidecar endpoints known not to answer now (tunnel unresponsive or reconnecting). */
  private readonly avoidedEndpoints = new Set<string>();
  private synced = false;
  private revision = 0;
  private currentEpoch = "";
  private readonly syncWaiters: Array<() => void> = [];

  private resyncFrom: Map<string, AgentInstance> | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly random: RandomSource = Math.random,
    private readonly staleGraceMs = 10_000,
    private readonly unroutableForMs = 5_000,
  ) {}

  get lastRevision(): number {
    return this.revision;
  }

  /** The registry history lastRevision belongs to ("" before the first event). */
  get epoch(): string {
    return this.currentEpoch;
  }

  get isSynced(): boolean {
    return this.synced;
  }

  /** Resolves once the initial snapshot has arrived. */
  waitSynced(): Promise<void> {
    return this.synced ? Promise.resolve() : new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  /** Applies one Watch event. A fresh snapshot (after a resync) replaces everything. */
  apply(event: WatchResponse): void {
    if (event.epoch !== "" && event.epoch !== this.currentEpoch) {
      // Another history (the server restarted): what follows is its snapshot, which replaces ours.
      if (this.currentEpoch !== "" && !this.resyncFrom) this.reset();
      this.currentEpoch = event.epoch;
      this.revision = event.revision;
    } else if (event.revision > this.revision) this.revision = event.revision;
    switch (event.type) {
      case WatchResponse_EventType.EVENT_TYPE_SYNCED:
        this.finishResync();
        this.synced = true;
        for (const resolve of this.syncWaiters.splice(0)) resolve();
        return;
      case WatchResponse_EventType.EVENT_TYPE_ADDED:
      case WatchResponse_EventType.EVENT_TYPE_UPDATED:
        if (event.instance) this.put(event.instance);
        return;
      case WatchResponse_EventType.EVENT_TYPE_REMOVED:
        if (event.instance) this.forget(event.instance.instanceId);
        return;
      default:
        return;
    }
  }

  /**
   * Starts over from a snapshot (the Watch could not resume, e.g. the server restarted).
   * The old entries keep routing until the snapshot is complete; those it does not
   * contain stay `staleGraceMs` longer, since a restarted server learns its instances
   * again only as their sidecars re-register. Then they go, unless they came back.
   */
  reset(): void {
    this.resyncFrom = new Map(this.instances);
    this.synced = false;
  }

  private finishResync(): void {
    const previous = this.resyncFrom;
    if (!previous) return;
    this.resyncFrom = undefined;
    const stale = [...previous].filter(([instanceId, instance]) => this.instances.get(instanceId) === instance);
    if (stale.length === 0) return;
    setTimeout(() => {
      // Same object as before the resync: no event has mentioned it since.
      for (const [instanceId, instance] of stale) if (this.instances.get(instanceId) === instance) this.forget(instanceId);
    }, this.staleGraceMs).unref();
  }

  /**
   * Takes an instance out of routing at once (a call to it failed): for
   * `unroutableForMs`, or until the registry says more about it, whichever comes
   * first. By then a dead instance is UNHEALTHY in the registry too; one that was
   * only briefly unreachable (restarting) comes back without waiting for an event
   * that may never come. `pickedAs` is the entry the failed call was routed by:
   * when a Watch event has replaced it since (the instance is READY again after a
   * restart while the call was failing), the newer word stands and nothing is marked.
   */
  markUnroutable(instanceId: string, pickedAs?: AgentInstance): void {
    const instance = this.instances.get(instanceId);
    if (!instance || (pickedAs !== undefined && instance !== pickedAs)) return;
    this.unroutableUntilMs.set(instanceId, this.clock.nowMs() + this.unroutableForMs);
  }

  /**
   * Routes around (or back to) every instance behind one sidecar endpoint: its
   * tunnel stopped answering or broke. Unlike markUnroutable this follows the
   * tunnel, so the instances are used again the moment their sidecar answers.
   */
  avoidEndpoint(endpoint: string, avoid: boolean): void {
    if (avoid) this.avoidedEndpoints.add(endpoint);
    else this.avoidedEndpoints.delete(endpoint);
  }

  get(instanceId: string): AgentInstance | undefined {
    return this.instances.get(instanceId);
  }

  candidates(capability: string, versionRange: string, selector: LabelSelector | undefined, exclude: ReadonlySet<string> = new Set()): Pick[] {
    const range = parseVersionRange(versionRange);
    const result: Pick[] = [];
    // Only the instances offering the capability: a call never scans the whole mesh.
    for (const instanceId of this.byCapability.get(capability) ?? []) {
      const instance = this.instances.get(instanceId);
      if (!instance || exclude.has(instanceId)) continue;
      if (instance.state !== HealthState.HEALTH_STATE_READY && instance.state !== HealthState.HEALTH_STATE_DEGRADED) continue;
      if (this.avoidedEndpoints.size > 0 && this.avoidedEndpoints.has(instance.endpoint)) continue;
      if (this.unroutableUntilMs.size > 0 && this.isUnroutable(instanceId)) continue;
      const offered = instance.manifest?.capabilities.find((candidate) => candidate.name === capability);
      if (!offered || !range.satisfiedBy(offered.version)) continue;
      if (!matchesLabelSelector(instance.manifest?.labels ?? {}, selector)) continue;
      result.push({ instance, version: offered.version });
    }
    return result.sort((left, right) => compareVersionsDescending(left.version, right.version) || (left.instance.instanceId < right.instance.instanceId ? -1 : 1));
  }

  /**
   * One instance for a call. With a `sessionKey` the choice is sticky (session-affinity.ts):
   * the traffic split's version is drawn by the key, and the instance by rendezvous hashing
   * with bounded load, so the key stays put while its instance is routable.
   */
  pick(capability: string, versionRange: string, selector: LabelSelector | undefined, exclude: ReadonlySet<string> = new Set(), sessionKey = ""): Pick {
    const all = this.candidates(capability, versionRange, selector, exclude);
    const eligible = splitShare(all, sessionKey === "" ? this.random : () => keyFraction(sessionKey)) ?? newestVersion(all);
    const nowMs = this.clock.nowMs();
    const chosen = balance(eligible, {
      load: (candidate) => balancedLoad(candidate.instance.state, this.outstanding.get(candidate.instance.instanceId) ?? 0),
      tieBreak: (candidate) => this.latency.get(candidate.instance.instanceId)?.get(nowMs) ?? 0,
      idOf: (candidate) => candidate.instance.instanceId,
      random: this.random,
      sessionKey,
    });
    if (!chosen) throw new MeshError("noHealthyInstance", "no healthy instance for capability");
    return chosen;
  }

  /** Brackets one call to an instance, for the balancer's load and latency view. */
  begin(instanceId: string): () => void {
    this.outstanding.set(instanceId, (this.outstanding.get(instanceId) ?? 0) + 1);
    const startedAtMs = this.clock.nowMs();
    return () => {
      const left = (this.outstanding.get(instanceId) ?? 1) - 1;
      if (left <= 0) this.outstanding.delete(instanceId);
      else this.outstanding.set(instanceId, left);
      let ewma = this.latency.get(instanceId);
      if (!ewma) {
        ewma = new PeakEwma();
        this.latency.set(instanceId, ewma);
      }
      const nowMs = this.clock.nowMs();
      ewma.observe(nowMs - startedAtMs, nowMs);
    };
  }

  private isUnroutable(instanceId: string): boolean {
    const untilMs = this.unroutableUntilMs.get(instanceId);
    if (untilMs === undefined) return false;
    if (this.clock.nowMs() < untilMs) return true;
    this.unroutableUntilMs.delete(instanceId);
    return false;
  }

  private put(instance: AgentInstance): void {
    // The registry's newer word on the instance replaces what a failed call guessed.
    this.unroutableUntilMs.delete(instance.instanceId);
    const previous = this.instances.get(instance.instanceId);
    if (previous) this.unindex(previous);
    this.instances.set(instance.instanceId, instance);
    for (const capability of instance.manifest?.capabilities ?? []) {
      let ids = this.byCapability.get(capability.name);
      if (!ids) {
        ids = new Set();
        this.byCapability.set(capability.name, ids);
      }
      ids.add(instance.instanceId);
    }
  }

  private unindex(instance: AgentInstance): void {
    for (const capability of instance.manifest?.capabilities ?? []) {
      const ids = this.byCapability.get(capability.name);
      ids?.delete(instance.instanceId);
      if (ids?.size === 0) this.byCapability.delete(capability.name);
    }
  }

  private forget(instanceId: string): void {
    const instance = this.instances.get(instanceId);
    if (instance) this.unindex(instance);
    this.instances.delete(instanceId);
    this.latency.delete(instanceId);
    this.unroutableUntilMs.delete(instanceId);
  }
}

/** The candidates of the newest version (Discover's rule when no rollout splits traffic). */
function newestVersion(all: readonly Pick[]): Pick[] {
  const newest = all[0]?.version;
  return all.filter((candidate) => candidate.version === newest);
}

/**
 * A rollout's traffic split (AgentInstance.traffic_percent, from the Watch): when any
 * candidate carries a share, one deployment version is drawn by its percent among the
 * versions present, and the balancer picks within it. Undefined when no split is in force.
 */
export function splitShare(all: readonly Pick[], random: RandomSource): Pick[] | undefined {
  const percentByVersion = new Map<string, number>();
  for (const candidate of all) {
    const percent = candidate.instance.trafficPercent;
    if (percent > 0) percentByVersion.set(deploymentVersion(candidate), percent);
  }
  if (percentByVersion.size === 0) return undefined;
  if (percentByVersion.size > 1) {
    const total = [...percentByVersion.values()].reduce((sum, percent) => sum + percent, 0);
    let draw = random() * total;
    for (const [version, percent] of percentByVersion) {
      draw -= percent;
      if (draw < 0) return all.filter((candidate) => candidate.instance.trafficPercent > 0 && deploymentVersion(candidate) === version);
    }
  }
  const [only] = percentByVersion.keys();
  return all.filter((candidate) => candidate.instance.trafficPercent > 0 && deploymentVersion(candidate) === only);
}

function deploymentVersion(candidate: Pick): string {
  return `${candidate.instance.deployment}@${candidate.instance.manifest?.version ?? ""}`;
}
