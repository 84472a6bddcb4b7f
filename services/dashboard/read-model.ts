// What the dashboard reads, as a handful of callbacks the server wiring supplies,
// and the plain JSON views the page renders. Nothing here knows the Registry,
// Lifecycle, alert engine or audit log classes: only these ports.
import { type Deployment, type Rollout, Rollout_Phase } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { AgentInstance, Load } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { healthStateName } from "../registry/domain/health-state.js";

/** One registry change as Watch delivers it: ADDED per instance and SYNCED first, then live changes. */
export interface InstanceChange {
  revision: number;
  type: WatchResponse_EventType;
  instance: AgentInstance;
}

export interface FiringAlert {
  fingerprint: string;
  alertname: string;
  severity: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAtMs: number;
}

/** The routable set one capability resolves to, with the load the balancer weighs and its share of picks. */
export interface RoutingEntry {
  instance: AgentInstance;
  load: number;
  share: number;
}

/** The dashboard's only way into the control plane. */
export interface DashboardSources {
  /** A registry Watch from the start (snapshot, then changes); one per open page. */
  watchInstances(onChange: (change: InstanceChange) => void): { close(): void };
  /** The registered instances now, to refresh load (heartbeat load publishes no Watch event). */
  listInstances(): Iterable<AgentInstance>;
  listDeployments(): Promise<Deployment[]>;
  /** The deployment's latest rollout, if it had one. */
  rollout(deployment: string): Rollout | undefined;
  alertsFiring(): FiringAlert[];
  /** The newest `limit` audit lines, oldest first, as stored (JSON). */
  auditTail(limit: number): Promise<string[]>;
  /** Throws MeshError("invalidArgument") for a malformed capability name. */
  routing(capability: string): RoutingEntry[];
}

export interface LoadView {
  inFlight: number;
  queueDepth: number;
  cpuMillis: number;
  rssBytes: number;
  p50Ms: number;
  errorRate: number;
}

export interface InstanceView {
  id: string;
  name: string;
  version: string;
  host: string;
  state: string;
  reason: string;
  deployment: string;
  owner: string;
  endpoint: string;
  capabilities: string[];
  labels: Record<string, string>;
  load: LoadView;
  registeredAtMs: number;
  lastHeartbeatAtMs: number;
}

export function instanceView(instance: AgentInstance): InstanceView {
  const manifest = instance.manifest;
  return {
    id: instance.instanceId,
    name: manifest?.name ?? "",
    version: manifest?.version ?? "",
    host: instance.host,
    state: healthStateName(instance.state),
    reason: instance.stateReason,
    deployment: instance.deployment,
    owner: instance.spiffeId,
    endpoint: instance.endpoint,
    capabilities: (manifest?.capabilities ?? []).map((capability) => `${capability.name}@${capability.version}`),
    labels: { ...(manifest?.labels ?? {}) },
    load: loadView(instance.load),
    registeredAtMs: instance.registeredAtMs,
    lastHeartbeatAtMs: instance.lastHeartbeatAtMs,
  };
}

/**
 * Rounded so that jitter below what the page shows is not a change: load deltas
 * are sent only for instances whose rounded load moved.
 */
export function loadView(load: Load | undefined): LoadView {
  return {
    inFlight: load?.inFlight ?? 0,
    queueDepth: load?.queueDepth ?? 0,
    cpuMillis: Math.round(load?.cpuMillis ?? 0),
    rssBytes: Math.round((load?.rssBytes ?? 0) / 65_536) * 65_536,
    p50Ms: Math.round((load?.p50Ms ?? 0) * 10) / 10,
    errorRate: Math.round((load?.errorRate ?? 0) * 1000) / 1000,
  };
}

export type ChangeKind = "added" | "updated" | "removed" | "synced";

export function changeKind(type: WatchResponse_EventType): ChangeKind | undefined {
  switch (type) {
    case WatchResponse_EventType.EVENT_TYPE_ADDED:
      return "added";
    case WatchResponse_EventType.EVENT_TYPE_UPDATED:
      return "updated";
    case WatchResponse_EventType.EVENT_TYPE_REMOVED:
      return "removed";
    case WatchResponse_EventType.EVENT_TYPE_SYNCED:
      return "synced";
    default:
      return undefined;
  }
}

export interface RolloutView {
  fromVersion: string;
  toVersion: string;
  phase: string;
  updated: number;
  ready: number;
  desired: number;
  message: string;
  startedAtMs: number;
}

export interface DeploymentView {
  name: string;
  version: string;
  generation: number;
  replicas: number;
  ready: number;
  updated: number;
  phase: string;
  message: string;
  rollout: RolloutView | undefined;
}

export function deploymentView(deployment: Deployment, rollout: Rollout | undefined): DeploymentView {
  const status = deployment.status;
  return {
    name: deployment.name,
    version: deployment.manifest?.version ?? "",
    generation: deployment.generation,
    replicas: deployment.replicas,
    ready: status?.readyReplicas ?? 0,
    updated: status?.updatedReplicas ?? 0,
    phase: status?.phase ?? "",
    message: status?.message ?? "",
    rollout: rollout
      ? {
          fromVersion: rollout.fromVersion,
          toVersion: rollout.toVersion,
          phase: rolloutPhaseName(rollout.phase),
          updated: rollout.updatedReplicas,
          ready: rollout.readyReplicas,
          desired: rollout.desiredReplicas,
          message: rollout.message,
          startedAtMs: rollout.startedAtMs,
        }
      : undefined,
  };
}

function rolloutPhaseName(phase: Rollout_Phase): string {
  return (Rollout_Phase[phase] ?? "PHASE_UNSPECIFIED").replace("PHASE_", "").toLowerCase();
}

export interface AlertView {
  fingerprint: string;
  alertname: string;
  severity: string;
  labels: Record<string, string>;
  summary: string;
  description: string;
  startsAtMs: number;
}

export function alertView(alert: FiringAlert): AlertView {
  return {
    fingerprint: alert.fingerprint,
    alertname: alert.alertname,
    severity: alert.severity,
    labels: { ...alert.labels },
    summary: alert.annotations.summary ?? "",
    description: alert.annotations.description ?? "",
    startsAtMs: alert.startsAtMs,
  };
}

export interface AuditView {
  seq: number;
  time: string;
  actor: string;
  action: string;
  target: string;
  outcome: string;
  details: Record<string, unknown> | undefined;
}

/** One stored audit line as the page shows it; undefined for a line that is not an audit entry. */
export function auditView(line: string): AuditView | undefined {
  let entry: unknown;
  try {
    entry = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof entry !== "object" || entry === null) return undefined;
  const record = entry as Record<string, unknown>;
  const text = (key: string) => (typeof record[key] === "string" ? (record[key] as string) : "");
  const details = record.details;
  return {
    seq: typeof record.seq === "number" ? record.seq : 0,
    time: text("time"),
    actor: text("actor"),
    action: text("action"),
    target: text("target"),
    outcome: text("outcome"),
    details: typeof details === "object" && details !== null && !Array.isArray(details) ? (details as Record<string, unknown>) : undefined,
  };
}

export interface RoutingView {
  capability: string;
  /** The version the routable set offers (newest routable wins), empty when nothing is routable. */
  version: string;
  candidates: Array<{ id: string; name: string; version: string; host: string; state: string; load: number; share: number; p50Ms: number }>;
}

export function routingView(capability: string, entries: RoutingEntry[]): RoutingView {
  const offered = (instance: AgentInstance) => instance.manifest?.capabilities.find((entry) => entry.name === capability)?.version ?? "";
  const first = entries[0];
  return {
    capability,
    version: first ? offered(first.instance) : "",
    candidates: entries
      .map(({ instance, load, share }) => ({
        id: instance.instanceId,
        name: instance.manifest?.name ?? "",
        version: instance.manifest?.version ?? "",
        host: instance.host,
        state: healthStateName(instance.state),
        load,
        share,
        p50Ms: Math.round((instance.load?.p50Ms ?? 0) * 10) / 10,
      }))
      .sort((left, right) => right.share - left.share || (left.id < right.id ? -1 : 1)),
  };
}
