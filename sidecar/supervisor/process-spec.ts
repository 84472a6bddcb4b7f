import type { LivenessTiming } from "../../sdk/ts/src/core/liveness.js";
import { invalidArgument } from "../../sdk/ts/src/core/mesh-error.js";

/** always: restart on any exit; on-failure: only on a non-zero exit, a signal or a kill by us; never: never. */
export type RestartMode = "always" | "on-failure" | "never";

export interface RestartPolicy {
  mode: RestartMode;
  /** More than this many restarts within windowMs → FAILED ("crash loop"). */
  maxRestarts: number;
  windowMs: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** Uptime after which the backoff starts over from initialBackoffMs; defaults to windowMs. */
  resetBackoffAfterMs?: number;
}

/**
 * How READY is decided. grpc-health: poll the agent's grpc.health.v1 Check at agentAddr (markReady() is
 * accepted too). external: only markReady(), for SDK agents that receive calls over their Attach stream
 * and listen on no port.
 */
export type ReadinessMode = "grpc-health" | "external";

export interface ProcessSpec {
  instanceId: string;
  agentName: string;
  command: string;
  args: readonly string[];
  /** Added to a short allowlist of the sidecar's own environment (see Supervisor). */
  env: Readonly<Record<string, string>>;
  cwd?: string;
  restartPolicy: RestartPolicy;
  /** Resident set size above which the child is SIGKILLed; undefined = no limit. */
  memoryLimitBytes?: number;
  readinessTimeoutMs: number;
  /** Time between SIGTERM and SIGKILL on a graceful stop. */
  gracefulStopMs: number;
  /** host:port the agent must serve on; given to it as AGENTMESH_AGENT_ADDR. */
  agentAddr: string;
  /** host:port of the sidecar's local port; given to it as AGENTMESH_SIDECAR_ADDR. */
  sidecarAddr: string;
  readiness?: ReadinessMode;
  /** grpc.health.v1 service name to check; "" (the default) means the whole server. */
  healthService?: string;
  /**
   * Keep checking grpc.health.v1 after READY at this cadence (agents that became ready by
   * their health check, i.e. plain agents); undefined = no checks after READY.
   */
  liveness?: LivenessTiming;
  /** Unresponsive (hung) this long → SIGKILL and restart under the restart policy; undefined = never. */
  hungRestartAfterMs?: number;
}

const hostPortPattern = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

/** Throws MeshError(invalidArgument) naming the first bad field. */
export function validateProcessSpec(spec: ProcessSpec): void {
  if (spec.instanceId.length === 0) throw invalidArgument("instanceId must not be empty");
  if (spec.agentName.length === 0) throw invalidArgument("agentName must not be empty");
  if (spec.command.length === 0) throw invalidArgument("command must not be empty");
  if (!hostPortPattern.test(spec.agentAddr)) throw invalidArgument("agentAddr must be host:port");
  if (!hostPortPattern.test(spec.sidecarAddr)) throw invalidArgument("sidecarAddr must be host:port");
  const policy = spec.restartPolicy;
  if (!["always", "on-failure", "never"].includes(policy.mode)) {
    throw invalidArgument("restartPolicy.mode must be always, on-failure or never");
  }
  requireNonNegativeInteger(policy.maxRestarts, "restartPolicy.maxRestarts");
  requirePositive(policy.windowMs, "restartPolicy.windowMs");
  requireNonNegative(policy.initialBackoffMs, "restartPolicy.initialBackoffMs");
  requireNonNegative(policy.maxBackoffMs, "restartPolicy.maxBackoffMs");
  if (policy.maxBackoffMs < policy.initialBackoffMs) {
    throw invalidArgument("restartPolicy.maxBackoffMs must be at least initialBackoffMs");
  }
  if (policy.resetBackoffAfterMs !== undefined) {
    requireNonNegative(policy.resetBackoffAfterMs, "restartPolicy.resetBackoffAfterMs");
  }
  if (spec.memoryLimitBytes !== undefined) requirePositive(spec.memoryLimitBytes, "memoryLimitBytes");
  requirePositive(spec.readinessTimeoutMs, "readinessTimeoutMs");
  requireNonNegative(spec.gracefulStopMs, "gracefulStopMs");
  if (spec.liveness !== undefined) {
    requirePositive(spec.liveness.probeIntervalMs, "liveness.probeIntervalMs");
    requirePositive(spec.liveness.deadlineMs, "liveness.deadlineMs");
  }
  if (spec.hungRestartAfterMs !== undefined) requirePositive(spec.hungRestartAfterMs, "hungRestartAfterMs");
  if (spec.readiness !== undefined && spec.readiness !== "grpc-health" && spec.readiness !== "external") {
    throw invalidArgument("readiness must be grpc-health or external");
  }
}

function requireNonNegative(value: number, field: string): void {
  if (!Number.isFinite(value) || value < 0) throw invalidArgument(`${field} must be a non-negative number`);
}

function requirePositive(value: number, field: string): void {
  if (!Number.isFinite(value) || value <= 0) throw invalidArgument(`${field} must be a positive number`);
}

function requireNonNegativeInteger(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0) throw invalidArgument(`${field} must be a non-negative integer`);
}
