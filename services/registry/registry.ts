import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { matchesLabelSelector } from "../../sdk/ts/src/core/label-selector.js";
import { MeshError, invalidArgument } from "../../sdk/ts/src/core/mesh-error.js";
import { compareVersionsDescending, parseVersionRange } from "../../sdk/ts/src/core/semver-match.js";
import { type LabelSelector, WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { AgentInstance, type AgentManifest, HealthState, type Load } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type HealthEvent, healthStateName, isRoutable, nextHealthState } from "./domain/health-state.js";
import {
  heartbeatIntervalMsOf,
  validateCapabilityName,
  validateEndpoint,
  validateInstanceId,
  validateLabelSelector,
  validateManifest,
} from "./domain/validate.js";
import type { ChangeFeed, ChangeSubscription, InstanceStore, RegistryEvent, RemoteRegistrations } from "./ports.js";

export interface RegisterInput {
  manifest: AgentManifest | undefined;
  instanceId: string;
  endpoint: string;
  host: string;
  /** SPIFFE ID of the caller; becomes the instance's owner. */
  owner: string;
  deployment?: string;
}

export interface ListInput {
  name: string;
  labelSelector: LabelSelector | undefined;
  states: HealthState[];
  pageSize: number;
  pageToken: string;
}

export interface DiscoverInput {
  capability: string;
  versionRange: string;
  labelSelector: LabelSelector | undefined;
  limit: number;
  includeUnhealthy: boolean;
}

export interface StateChange {
  instance: AgentInstance;
  previousState: HealthState;
  reason: string;
  /** Made by another replica (already audited and counted there). */
  remote?: boolean;
}

export interface RegistryHooks {
  /** `remote`: registered through another replica (already audited there). */
  onRegistered?(instance: AgentInstance, replaced: boolean, remote: boolean): void;
  onRemoved?(instance: AgentInstance, reason: string, remote: boolean): void;
  onStateChange?(change: StateChange): void;
}

interface CapabilityIndexEntry {
  /** version → instance ids offering the capability at that version. */
  byVersion: Map<string, Set<string>>;
  /** Versions newest first; rebuilt lazily when the set of versions changes. */
  sortedVersions: string[] | undefined;
}

const MAX_PAGE_SIZE = 1000;
const DEFAULT_PAGE_SIZE = 100;
const MAX_DISCOVER_LIMIT = 1000;
const DEFAULT_DISCOVER_LIMIT = 100;

/**
 * The registry domain service: validates and stores registrations, keeps the
 * capability index that Discover reads, runs the health state machine, and
 * publishes every change in revision order.
 */
export class Registry implements RemoteRegistrations {
  private readonly instances = new Map<string, AgentInstance>();
  private readonly capabilityIndex = new Map<string, CapabilityIndexEntry>();
  private revision = 0;
  /**
   * This registry's history: registrations are soft state, so each start is a new
   * history whose revisions begin again at 1. A Watch resume names the epoch it
   * came from, and one from another epoch gets a snapshot, never a wrong resume.
   */
  readonly epoch: string = randomUUID();

  constructor(
    private readonly store: InstanceStore,
    private readonly feed: ChangeFeed,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly hooks: RegistryHooks = {},
    private readonly newInstanceId: () => string = randomUUID,
    private readonly maxInstancesPerOwner = 10_000,
  ) {}

  private readonly instancesByOwner = new Map<string, number>();

  get currentRevision(): number {
    return this.revision;
  }

  get size(): number {
    return this.instances.size;
  }

  async register(input: RegisterInput): Promise<{ instance: AgentInstance; revision: number }> {
    validateManifest(input.manifest);
    const manifest = input.manifest;
    if (input.instanceId !== "") validateInstanceId(input.instanceId);
    validateEndpoint(input.endpoint);
    if (input.host.length > 253) throw invalidArgument("host: longer than 253 characters");
    const instanceId = input.instanceId === "" ? this.newInstanceId() : input.instanceId;
    const existing = this.instances.get(instanceId);
    if (existing && existing.spiffeId !== input.owner) {
      throw new MeshError("denied", "instance_id: owned by another identity");
    }
    if (existing && existing.manifest?.name !== manifest.name) {
      throw new MeshError("alreadyExists", "instance_id: already registered for another agent");
    }
    if (!existing && (this.instancesByOwner.get(input.owner) ?? 0) >= this.maxInstancesPerOwner) {
      throw new MeshError("overLimit", "limit exceeded: registered instances per identity");
    }
    const nowMs = this.clock.nowMs();
    const instance: AgentInstance = {
      instanceId,
      spiffeId: input.owner,
      manifest,
      endpoint: input.endpoint,
      host: input.host,
      // Re-registration keeps a live instance's health; a new one starts from STARTING.
      state: existing?.state ?? HealthState.HEALTH_STATE_STARTING,
      load: existing?.load ?? emptyLoad(),
      registeredAtMs: existing?.registeredAtMs ?? nowMs,
      lastHeartbeatAtMs: existing?.lastHeartbeatAtMs ?? 0,
      stateReason: existing ? existing.stateReason : "registered",
      deployment: input.deployment ?? existing?.deployment ?? "",
      // A rollout's share is set by the orchestrator's next pass; a re-registration keeps it meanwhile.
      trafficPercent: existing?.trafficPercent ?? 0,
    };
    // Counted before the write, so concurrent registrations cannot pass the limit together.
    if (!existing) this.instancesByOwner.set(input.owner, (this.instancesByOwner.get(input.owner) ?? 0) + 1);
    try {
      await this.store.put(instance, "register");
    } catch (error) {
      if (!existing) this.releaseOwnerCount(input.owner);
      throw error;
    }
    const current = this.instances.get(instanceId);
    if (current) {
      this.unindex(current);
      // Registered concurrently by another call (or replica) meanwhile: one count, not two.
      if (!existing) this.releaseOwnerCount(input.owner);
    }
    this.instances.set(instanceId, instance);
    this.index(instance);
    const type = existing ? WatchResponse_EventType.EVENT_TYPE_UPDATED : WatchResponse_EventType.EVENT_TYPE_ADDED;
    const event = this.publish(type, instance, existing?.state ?? HealthState.HEALTH_STATE_UNSPECIFIED);
    this.log.info(
      { agentName: manifest.name, instanceId, spiffeId: input.owner, state: healthStateName(instance.state), replaced: Boolean(existing) },
      existing ? "agent re-registered" : "agent registered",
    );
    this.hooks.onRegistered?.(instance, Boolean(existing), false);
    return { instance, revision: event.revision };
  }

  /**
   * Another replica registered or changed the instance: index it and tell local
   * watchers, as if it had happened here (ADR 0008). Its liveness stays with the
   * replica that holds it.
   */
  applyRemote(remote: AgentInstance): void {
    const existing = this.instances.get(remote.instanceId);
    const instance: AgentInstance = { ...copyInstance(remote), load: existing?.load ?? remote.load ?? emptyLoad() };
    if (existing) this.unindex(existing);
    else this.instancesByOwner.set(instance.spiffeId, (this.instancesByOwner.get(instance.spiffeId) ?? 0) + 1);
    this.instances.set(instance.instanceId, instance);
    this.index(instance);
    const previousState = existing?.state ?? HealthState.HEALTH_STATE_UNSPECIFIED;
    const type = existing ? WatchResponse_EventType.EVENT_TYPE_UPDATED : WatchResponse_EventType.EVENT_TYPE_ADDED;
    this.publish(type, instance, previousState);
    if (!existing) this.hooks.onRegistered?.(instance, false, true);
    else if (existing.state !== instance.state) this.hooks.onStateChange?.({ instance, previousState, reason: instance.stateReason, remote: true });
  }

  applyRemoteTraffic(instanceId: string, trafficPercent: number): void {
    const instance = this.instances.get(instanceId);
    if (!instance || instance.trafficPercent === trafficPercent) return;
    instance.trafficPercent = trafficPercent;
    this.publish(WatchResponse_EventType.EVENT_TYPE_UPDATED, instance, instance.state);
  }

  removeRemote(instanceId: string, reason: string): void {
    const instance = this.instances.get(instanceId);
    if (instance) this.removeFromIndex(instance, reason, true);
  }

  /**
   * Taken over from a replica that went away (or from this server's previous run):
   * its sidecar needs time to reconnect before silence means anything, as a cut
   * stream gets its reconnect grace. The failure detector counts from `untilMs`.
   */
  graceLiveness(instanceId: string, untilMs: number): void {
    if (this.instances.has(instanceId)) this.livenessGrace.set(instanceId, untilMs);
  }

  /** When the instance was last seen alive, for the failure detector. */
  lastSeenMs(instance: AgentInstance): number {
    return Math.max(instance.lastHeartbeatAtMs, instance.registeredAtMs, this.livenessGrace.get(instance.instanceId) ?? 0);
  }

  private readonly livenessGrace = new Map<string, number>();

  /** Whether this replica judges the instance's liveness (always, with one server). */
  holdsLiveness(instanceId: string): boolean {
    return this.store.holdsLiveness?.(instanceId) ?? true;
  }

  /**
   * A session on this replica now speaks for the instance (its sidecar connected
   * here): this replica judges its liveness from now on.
   */
  claimLiveness(instanceId: string): void {
    const instance = this.instances.get(instanceId);
    if (!instance || this.holdsLiveness(instanceId)) return;
    // Its timeout counts from the claim, not from a heartbeat seen on another replica.
    instance.lastHeartbeatAtMs = this.clock.nowMs();
    this.store.put(instance, "register").catch((error: unknown) => this.log.error({ err: error, instanceId }, "store write failed"));
  }

  async deregister(instanceId: string, reason: string): Promise<number> {
    const instance = this.require(instanceId);
    await this.store.remove(instanceId);
    // Removed meanwhile (deregistered through another replica): nothing more to tell.
    if (this.instances.get(instanceId) !== instance) return this.revision;
    return this.removeFromIndex(instance, reason);
  }

  private removeFromIndex(instance: AgentInstance, reason: string, remote = false): number {
    this.instances.delete(instance.instanceId);
    this.livenessGrace.delete(instance.instanceId);
    this.releaseOwnerCount(instance.spiffeId);
    this.unindex(instance);
    const event = this.publish(WatchResponse_EventType.EVENT_TYPE_REMOVED, instance, instance.state);
    this.log.info({ agentName: instance.manifest?.name, instanceId: instance.instanceId, reason }, "agent deregistered");
    this.hooks.onRemoved?.(instance, reason, remote);
    return event.revision;
  }

  private releaseOwnerCount(owner: string): void {
    const owned = (this.instancesByOwner.get(owner) ?? 1) - 1;
    if (owned <= 0) this.instancesByOwner.delete(owner);
    else this.instancesByOwner.set(owner, owned);
  }

  get(instanceId: string): AgentInstance | undefined {
    return this.instances.get(instanceId);
  }

  require(instanceId: string): AgentInstance {
    if (instanceId === "") throw invalidArgument("instance_id: required");
    const instance = this.instances.get(instanceId);
    if (!instance) throw new MeshError("notFound", "instance not found");
    return instance;
  }

  all(): IterableIterator<AgentInstance> {
    return this.instances.values();
  }

  list(input: ListInput): { instances: AgentInstance[]; nextPageToken: string; total: number } {
    if (input.name !== "" && input.name.length > 63) throw invalidArgument("name: longer than 63 characters");
    validateLabelSelector(input.labelSelector);
    if (input.pageSize > MAX_PAGE_SIZE) throw invalidArgument(`page_size: at most ${MAX_PAGE_SIZE}`);
    for (const state of input.states) {
      if (!(state in HealthState) || state === HealthState.HEALTH_STATE_UNSPECIFIED || state < 0) {
        throw invalidArgument("states: unknown health state");
      }
    }
    const after = decodePageToken(input.pageToken);
    const pageSize = input.pageSize === 0 ? DEFAULT_PAGE_SIZE : input.pageSize;
    const states = new Set(input.states);
    const matching: AgentInstance[] = [];
    for (const instance of this.instances.values()) {
      if (input.name !== "" && instance.manifest?.name !== input.name) continue;
      if (states.size > 0 && !states.has(instance.state)) continue;
      if (!matchesLabelSelector(instance.manifest?.labels ?? {}, input.labelSelector)) continue;
      matching.push(instance);
    }
    matching.sort((left, right) => compareStrings(left.instanceId, right.instanceId));
    const start = after === undefined ? 0 : firstIndexAfter(matching, after);
    const page = matching.slice(start, start + pageSize);
    const last = page[page.length - 1];
    const nextPageToken = start + pageSize < matching.length && last ? encodePageToken(last.instanceId) : "";
    return { instances: page, nextPageToken, total: matching.length };
  }

  discover(input: DiscoverInput): AgentInstance[] {
    validateCapabilityName(input.capability);
    const range = parseVersionRange(input.versionRange);
    validateLabelSelector(input.labelSelector);
    if (input.limit > MAX_DISCOVER_LIMIT) throw invalidArgument(`limit: at most ${MAX_DISCOVER_LIMIT}`);
    const limit = input.limit === 0 ? DEFAULT_DISCOVER_LIMIT : input.limit;
    const entry = this.capabilityIndex.get(input.capability);
    if (!entry) return [];
    const result: AgentInstance[] = [];
    for (const version of this.sortedVersions(entry)) {
      if (!range.satisfiedBy(version)) continue;
      const group: AgentInstance[] = [];
      for (const instanceId of entry.byVersion.get(version) ?? []) {
        const instance = this.instances.get(instanceId);
        if (!instance) continue;
        if (!input.includeUnhealthy && !isRoutable(instance.state)) continue;
        if (!matchesLabelSelector(instance.manifest?.labels ?? {}, input.labelSelector)) continue;
        group.push(instance);
      }
      group.sort(byReadinessThenId);
      for (const instance of group) {
        result.push(instance);
        if (result.length >= limit) return result;
      }
    }
    return result;
  }

  /**
   * The routable instances of the newest capability version that has any, by the
   * Discover rules, unsorted: what Resolve chooses among, without building and
   * sorting the whole Discover answer on every call.
   */
  newestRoutable(capability: string, versionRange: string, labelSelector: LabelSelector | undefined, exclude: ReadonlySet<string>): AgentInstance[] {
    validateCapabilityName(capability);
    const range = parseVersionRange(versionRange);
    validateLabelSelector(labelSelector);
    const entry = this.capabilityIndex.get(capability);
    if (!entry) return [];
    for (const version of this.sortedVersions(entry)) {
      if (!range.satisfiedBy(version)) continue;
      const group: AgentInstance[] = [];
      for (const instanceId of entry.byVersion.get(version) ?? []) {
        const instance = this.instances.get(instanceId);
        if (!instance || exclude.has(instanceId) || !isRoutable(instance.state)) continue;
        if (matchesLabelSelector(instance.manifest?.labels ?? {}, labelSelector)) group.push(instance);
      }
      if (group.length > 0) return group;
    }
    return [];
  }

  /**
   * Records a heartbeat. Returns the state change it caused, if any; load updates
   * alone publish nothing (they would flood every Watch at 10,000 agents/s).
   */
  recordHeartbeat(instanceId: string, load: Load | undefined, reported: "ready" | "degraded"): StateChange | undefined {
    const instance = this.instances.get(instanceId);
    if (!instance) return undefined;
    // Heartbeats come only from a session on this replica: it speaks for the instance,
    // whatever another replica assumed meanwhile (a takeover while Redis was restarting).
    this.claimLiveness(instanceId);
    instance.lastHeartbeatAtMs = this.clock.nowMs();
    if (load) instance.load = load;
    this.livenessGrace.delete(instanceId);
    return this.transition(instance, { type: "heartbeat", reported }, reported === "degraded" ? "reported degraded" : "heartbeat");
  }

  /** A sign of life without a readiness claim: keeps a STARTING instance from timing out. */
  touch(instanceId: string, load: Load | undefined): void {
    const instance = this.instances.get(instanceId);
    if (!instance) return;
    this.claimLiveness(instanceId);
    instance.lastHeartbeatAtMs = this.clock.nowMs();
    if (load) instance.load = load;
  }

  /**
   * Sets the traffic shares of a deployment's instances from a rollout's split (percent
   * by deployment version; empty = no split) and publishes each instance that changed, so
   * sidecars route by it from their Watch.
   */
  setTrafficSplit(deployment: string, percentByVersion: Readonly<Record<string, number>>): void {
    for (const instance of this.instances.values()) {
      if (instance.deployment !== deployment) continue;
      const percent = percentByVersion[instance.manifest?.version ?? ""] ?? 0;
      if (instance.trafficPercent === percent) continue;
      instance.trafficPercent = percent;
      this.publish(WatchResponse_EventType.EVENT_TYPE_UPDATED, instance, instance.state);
      this.store.put(instance, "traffic").catch((error: unknown) => this.log.error({ err: error, instanceId: instance.instanceId }, "store write failed"));
    }
  }

  /** Applies a health event (timeout, stream lost, drain...) and publishes the change. */
  applyHealthEvent(instanceId: string, event: HealthEvent, reason: string): StateChange | undefined {
    const instance = this.instances.get(instanceId);
    if (!instance) return undefined;
    return this.transition(instance, event, reason);
  }

  /**
   * Streams changes to `onEvent`: a snapshot first when `sinceRevision` is 0 or no
   * longer retained (ADDED per instance, then SYNCED), then live events.
   */
  watch(sinceRevision: number, capability: string, onEvent: (event: RegistryEvent) => void, epoch = this.epoch): ChangeSubscription {
    if (capability !== "") validateCapabilityName(capability);
    if (sinceRevision < 0) throw invalidArgument("since_revision: must not be negative");
    // Another history (the server restarted): its revisions mean nothing here, start over.
    if (epoch !== this.epoch) sinceRevision = 0;
    if (sinceRevision > this.revision) throw invalidArgument("since_revision: not a known revision of this epoch");
    const matches = (instance: AgentInstance) =>
      capability === "" || (instance.manifest?.capabilities.some((offered) => offered.name === capability) ?? false);
    const forward = (event: RegistryEvent) => {
      if (matches(event.instance)) onEvent(event);
    };
    if (sinceRevision > 0) {
      const resumed = this.feed.subscribe(sinceRevision, forward);
      if (resumed) return resumed;
    }
    const snapshotRevision = this.revision;
    for (const instance of this.instances.values()) {
      if (!matches(instance)) continue;
      onEvent({
        revision: snapshotRevision,
        type: WatchResponse_EventType.EVENT_TYPE_ADDED,
        instance: copyInstance(instance),
        previousState: HealthState.HEALTH_STATE_UNSPECIFIED,
      });
    }
    onEvent({
      revision: snapshotRevision,
      type: WatchResponse_EventType.EVENT_TYPE_SYNCED,
      instance: emptyInstance(),
      previousState: HealthState.HEALTH_STATE_UNSPECIFIED,
    });
    const live = this.feed.subscribe(snapshotRevision, forward);
    if (!live) throw new MeshError("unavailable", "watch could not subscribe");
    return live;
  }

  countByState(): Map<HealthState, number> {
    const counts = new Map<HealthState, number>();
    for (const instance of this.instances.values()) counts.set(instance.state, (counts.get(instance.state) ?? 0) + 1);
    return counts;
  }

  heartbeatIntervalMs(instance: AgentInstance): number {
    return instance.manifest ? heartbeatIntervalMsOf(instance.manifest) : 1000;
  }

  private transition(instance: AgentInstance, event: HealthEvent, reason: string): StateChange | undefined {
    // Another replica's session speaks for it: that replica judges its health.
    if (!this.holdsLiveness(instance.instanceId)) return undefined;
    const previousState = instance.state;
    const nextState = nextHealthState(previousState, event);
    if (nextState === previousState) return undefined;
    instance.state = nextState;
    instance.stateReason = reason;
    this.publish(WatchResponse_EventType.EVENT_TYPE_UPDATED, instance, previousState);
    this.log.info(
      {
        agentName: instance.manifest?.name,
        instanceId: instance.instanceId,
        from: healthStateName(previousState),
        to: healthStateName(nextState),
        reason,
      },
      "agent state changed",
    );
    const change = { instance, previousState, reason };
    this.hooks.onStateChange?.(change);
    // Only state changes are persisted; the durable store never sees load.
    this.store.put(instance, "health").catch((error: unknown) => this.log.error({ err: error, instanceId: instance.instanceId }, "store write failed"));
    return change;
  }

  private publish(type: WatchResponse_EventType, instance: AgentInstance, previousState: HealthState): RegistryEvent {
    this.revision += 1;
    const event: RegistryEvent = { revision: this.revision, type, instance: copyInstance(instance), previousState };
    this.feed.publish(event);
    return event;
  }

  private index(instance: AgentInstance): void {
    for (const capability of instance.manifest?.capabilities ?? []) {
      let entry = this.capabilityIndex.get(capability.name);
      if (!entry) {
        entry = { byVersion: new Map(), sortedVersions: undefined };
        this.capabilityIndex.set(capability.name, entry);
      }
      let ids = entry.byVersion.get(capability.version);
      if (!ids) {
        ids = new Set();
        entry.byVersion.set(capability.version, ids);
        entry.sortedVersions = undefined;
      }
      ids.add(instance.instanceId);
    }
  }

  private unindex(instance: AgentInstance): void {
    for (const capability of instance.manifest?.capabilities ?? []) {
      const entry = this.capabilityIndex.get(capability.name);
      const ids = entry?.byVersion.get(capability.version);
      if (!entry || !ids) continue;
      ids.delete(instance.instanceId);
      if (ids.size === 0) {
        entry.byVersion.delete(capability.version);
        entry.sortedVersions = undefined;
        if (entry.byVersion.size === 0) this.capabilityIndex.delete(capability.name);
      }
    }
  }

  private sortedVersions(entry: CapabilityIndexEntry): string[] {
    if (!entry.sortedVersions) entry.sortedVersions = [...entry.byVersion.keys()].sort(compareVersionsDescending);
    return entry.sortedVersions;
  }
}

function byReadinessThenId(left: AgentInstance, right: AgentInstance): number {
  if (left.state !== right.state) return left.state === HealthState.HEALTH_STATE_READY ? -1 : 1;
  return compareStrings(left.instanceId, right.instanceId);
}

function compareStrings(left: string, right: string): number {
  return left < right ? -1 : left > right ? 1 : 0;
}

function firstIndexAfter(sorted: AgentInstance[], instanceId: string): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((sorted[middle] as AgentInstance).instanceId <= instanceId) low = middle + 1;
    else high = middle;
  }
  return low;
}

function encodePageToken(instanceId: string): string {
  return Buffer.from(`after:${instanceId}`).toString("base64url");
}

function decodePageToken(token: string): string | undefined {
  if (token === "") return undefined;
  const decoded = Buffer.from(token, "base64url").toString();
  if (!decoded.startsWith("after:") || token.length > 200) throw invalidArgument("page_token: not a token from this server");
  return decoded.slice("after:".length);
}

export function emptyLoad(): Load {
  return { inFlight: 0, queueDepth: 0, cpuMillis: 0, rssBytes: 0, p50Ms: 0, errorRate: 0 };
}

function emptyInstance(): AgentInstance {
  return AgentInstance.fromPartial({});
}

function copyInstance(instance: AgentInstance): AgentInstance {
  return { ...instance, load: instance.load ? { ...instance.load } : undefined };
}
