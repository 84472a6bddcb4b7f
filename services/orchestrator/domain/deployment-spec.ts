import { createHash } from "node:crypto";
import {
  type Deployment,
  type ProcessSpec,
  type RestartPolicy,
  RestartPolicy_Mode,
  type StartAgent,
} from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { AgentManifest } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";

/** Explicit limits on a Deployment; documented in docs/deployments.md. */
export const deploymentLimits = {
  replicasMax: 1000,
  maxSurgeMax: 1000,
  maxUnavailableMax: 1000,
  readyTimeoutMsMin: 1000,
  readyTimeoutMsMax: 3_600_000,
  argsMax: 256,
  argMaxBytes: 4096,
  envMax: 256,
  envValueMaxBytes: 32 * 1024,
  commandMaxBytes: 4096,
  cwdMaxBytes: 4096,
  imageMaxBytes: 1024,
  maxRestartsMax: 1000,
  windowMsMin: 1000,
  windowMsMax: 86_400_000,
  initialBackoffMsMax: 600_000,
  maxBackoffMsMax: 3_600_000,
} as const;

/** What zero (or an absent strategy / restart policy) stands for. */
export const deploymentDefaults = {
  maxSurge: 1,
  maxUnavailable: 0,
  readyTimeoutMs: 30_000,
  maxErrorRate: 0.5,
  restartMode: RestartPolicy_Mode.MODE_ALWAYS,
  maxRestarts: 5,
  restartWindowMs: 60_000,
  initialBackoffMs: 200,
  maxBackoffMs: 30_000,
} as const;

/** An UpdateStrategy with every default filled in. */
export interface ResolvedStrategy {
  maxSurge: number;
  maxUnavailable: number;
  readyTimeoutMs: number;
  maxErrorRate: number;
  /** 0 = traffic follows READY replica counts. */
  canaryWeightPercent: number;
}

/**
 * Fills in the strategy defaults. maxSurge and maxUnavailable default (1 / 0) only
 * when the strategy is absent: inside a strategy message proto3 cannot tell 0 from
 * unset, and 0 is a meaningful value for both. readyTimeoutMs and maxErrorRate treat
 * 0 as "default", as the proto documents.
 */
export function resolveStrategy(deployment: Deployment): ResolvedStrategy {
  const strategy = deployment.strategy;
  if (!strategy) {
    return {
      maxSurge: deploymentDefaults.maxSurge,
      maxUnavailable: deploymentDefaults.maxUnavailable,
      readyTimeoutMs: deploymentDefaults.readyTimeoutMs,
      maxErrorRate: deploymentDefaults.maxErrorRate,
      canaryWeightPercent: 0,
    };
  }
  return {
    maxSurge: strategy.maxSurge,
    maxUnavailable: strategy.maxUnavailable,
    readyTimeoutMs: strategy.readyTimeoutMs === 0 ? deploymentDefaults.readyTimeoutMs : strategy.readyTimeoutMs,
    maxErrorRate: strategy.maxErrorRate === 0 ? deploymentDefaults.maxErrorRate : strategy.maxErrorRate,
    canaryWeightPercent: strategy.canaryWeightPercent,
  };
}

/** The restart policy sent to sidecars: every 0 replaced by its default, so sidecars need none. */
export function resolveRestartPolicy(policy: RestartPolicy | undefined): RestartPolicy {
  const pick = (value: number | undefined, fallback: number) => (value === undefined || value === 0 ? fallback : value);
  return {
    mode: pick(policy?.mode, deploymentDefaults.restartMode),
    maxRestarts: pick(policy?.maxRestarts, deploymentDefaults.maxRestarts),
    windowMs: pick(policy?.windowMs, deploymentDefaults.restartWindowMs),
    initialBackoffMs: pick(policy?.initialBackoffMs, deploymentDefaults.initialBackoffMs),
    maxBackoffMs: pick(policy?.maxBackoffMs, deploymentDefaults.maxBackoffMs),
  };
}

/**
 * The manifest label that carries an instance's template revision, so the
 * revision survives a server restart (sidecars re-register the manifest they were
 * started with), as Kubernetes' pod-template-hash does. Reserved: a deployment's
 * own labels may not use the `agentmesh.io/` prefix.
 */
export const revisionLabel = "agentmesh.io/template-hash";
export const reservedLabelPrefix = "agentmesh.io/";

/**
 * What one instance of a deployment runs: the part of the spec a rolling update
 * replaces (the pod template, in Kubernetes terms). `revision` is a hash of all
 * of it, so any change to the manifest (version, capabilities, labels, resources,
 * health policy), the process (command, args, env, cwd, image) or the restart
 * policy is a new revision, rolled out like a new version; replicas, strategy and
 * min_ready are not part of it.
 */
export interface InstanceTemplate {
  deployment: string;
  version: string;
  /** 10 hex digits; see templateRevision. */
  revision: string;
  manifest: AgentManifest;
  process: ProcessSpec;
  restartPolicy: RestartPolicy;
}

/** The template of a validated deployment. */
export function templateOf(deployment: Deployment): InstanceTemplate {
  const manifest = structuredClone(deployment.manifest as AgentManifest);
  const process = structuredClone(deployment.process ?? { command: "", args: [], env: {}, cwd: "", image: "" });
  const restartPolicy = resolveRestartPolicy(deployment.restartPolicy);
  return {
    deployment: deployment.name,
    version: manifest.version,
    revision: templateRevision(manifest, process, restartPolicy),
    manifest,
    process,
    restartPolicy,
  };
}

/**
 * Hash of what an instance runs. Canonical JSON (sorted keys, absent fields
 * dropped) so equal specs hash equal however their maps were built; the
 * revision label itself is left out, so a manifest read back from a running
 * instance hashes like the one it was started from.
 */
export function templateRevision(manifest: AgentManifest, process: ProcessSpec, restartPolicy: RestartPolicy): string {
  const { [revisionLabel]: _revision, ...labels } = manifest.labels;
  const canonical = canonicalJson({ manifest: { ...manifest, labels }, process, restartPolicy });
  return createHash("sha256").update(canonical).digest("hex").slice(0, 10);
}

/** The revision an instance was started from, read from its manifest; "" when it carries none (unmanaged, or started by an older server). */
export function revisionOfManifest(manifest: AgentManifest | undefined): string {
  return manifest?.labels[revisionLabel] ?? "";
}

/** The StartAgent a sidecar receives for a new instance of `template`; its manifest carries the revision label. */
export function startCommandOf(template: InstanceTemplate, instanceId: string): StartAgent {
  const manifest = structuredClone(template.manifest);
  manifest.labels = { ...manifest.labels, [revisionLabel]: template.revision };
  return {
    deployment: template.deployment,
    instanceId,
    manifest,
    process: structuredClone(template.process),
    restartPolicy: { ...template.restartPolicy },
  };
}

/**
 * True when two deployments ask for the same thing; status, generation and
 * timestamps are the server's and do not count. ApplyDeployment bumps the
 * generation only when this is false.
 */
export function sameSpec(left: Deployment, right: Deployment): boolean {
  const spec = ({ status: _status, generation: _generation, createdAtMs: _created, updatedAtMs: _updated, ...rest }: Deployment) => rest;
  return canonicalJson(spec(left)) === canonicalJson(spec(right));
}

/** JSON with object keys sorted, so equal specs compare equal whatever order maps were built in. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, entry]) => entry !== undefined)
      .sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0));
    return `{${entries.map(([key, entry]) => `${JSON.stringify(key)}:${canonicalJson(entry)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
