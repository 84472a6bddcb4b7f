import { invalidArgument } from "../../../sdk/ts/src/core/mesh-error.js";
import {
  type Deployment,
  type ProcessSpec,
  type RestartPolicy,
  RestartPolicy_Mode,
  type UpdateStrategy,
} from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { manifestLimits } from "../../registry/domain/limits.js";
import { validateAgentName, validateManifest } from "../../registry/domain/validate.js";
import { deploymentLimits as limits, reservedLabelPrefix, resolveRestartPolicy } from "./deployment-spec.js";

const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** The sidecar sets these for every agent (DESIGN §1 contract); a deployment may not override them. */
const reservedEnvNames = new Set(["AGENTMESH_AGENT_ADDR", "AGENTMESH_SIDECAR_ADDR"]);

/**
 * Checks the spec part of a Deployment (status, generation and timestamps belong
 * to the server). Throws MeshError("invalidArgument", "<field>: ...") naming the
 * first bad field by its proto name, like the registry's manifest validation.
 */
export function validateDeployment(deployment: Deployment | undefined): asserts deployment is Deployment {
  if (!deployment) throw invalidArgument("deployment: required");
  validateAgentName(deployment.name, "name");
  validateManifest(deployment.manifest);
  if (deployment.manifest.name !== deployment.name) throw invalidArgument("manifest.name: must equal name");
  validateDeploymentLabels(deployment.manifest.labels);
  validateProcess(deployment.process);
  validateReplicas(deployment.replicas, "replicas");
  // Not tied to replicas, so ScaleDeployment never has to touch it; the effective minimum is min(min_ready, replicas).
  validateReplicas(deployment.minReady, "min_ready");
  validateRestartPolicy(deployment.restartPolicy);
  validateStrategy(deployment.strategy, deployment.replicas);
}

/** The orchestrator adds its revision label to every instance it starts: the prefix is its, and one label slot too. */
function validateDeploymentLabels(labels: Readonly<Record<string, string>>): void {
  for (const key of Object.keys(labels)) {
    if (key.startsWith(reservedLabelPrefix)) throw invalidArgument(`manifest.labels[${key.slice(0, 60)}]: the ${reservedLabelPrefix} prefix is reserved`);
  }
  const max = manifestLimits.labelsMax - 1;
  if (Object.keys(labels).length > max) throw invalidArgument(`manifest.labels: more than ${max} labels in a deployment`);
}

export function validateReplicas(replicas: number, field: string): void {
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > limits.replicasMax) {
    throw invalidArgument(`${field}: must be 0..${limits.replicasMax}`);
  }
}

function validateProcess(process: ProcessSpec | undefined): void {
  if (!process) throw invalidArgument("process: required");
  if (process.command === "" && process.image === "") throw invalidArgument("process.command: command or image required");
  checkText(process.command, limits.commandMaxBytes, "process.command");
  checkText(process.image, limits.imageMaxBytes, "process.image");
  checkText(process.cwd, limits.cwdMaxBytes, "process.cwd");
  if (process.args.length > limits.argsMax) throw invalidArgument(`process.args: more than ${limits.argsMax}`);
  process.args.forEach((arg, index) => checkText(arg, limits.argMaxBytes, `process.args[${index}]`));
  const env = Object.entries(process.env);
  if (env.length > limits.envMax) throw invalidArgument(`process.env: more than ${limits.envMax} variables`);
  for (const [name, value] of env) {
    const field = `process.env[${name.length > 40 ? `${name.slice(0, 40)}…` : name}]`;
    if (!envNamePattern.test(name) || name.length > 256) throw invalidArgument(`${field}: name must match [A-Za-z_][A-Za-z0-9_]*`);
    if (reservedEnvNames.has(name)) throw invalidArgument(`${field}: set by the sidecar, may not be overridden`);
    checkText(value, limits.envValueMaxBytes, field);
  }
}

function validateRestartPolicy(policy: RestartPolicy | undefined): void {
  if (!policy) return;
  const modes = [
    RestartPolicy_Mode.MODE_UNSPECIFIED,
    RestartPolicy_Mode.MODE_ALWAYS,
    RestartPolicy_Mode.MODE_ON_FAILURE,
    RestartPolicy_Mode.MODE_NEVER,
  ];
  if (!modes.includes(policy.mode)) throw invalidArgument("restart_policy.mode: must be always, on-failure or never");
  checkRange(policy.maxRestarts, 0, limits.maxRestartsMax, "restart_policy.max_restarts");
  if (policy.windowMs !== 0) checkRange(policy.windowMs, limits.windowMsMin, limits.windowMsMax, "restart_policy.window_ms");
  checkRange(policy.initialBackoffMs, 0, limits.initialBackoffMsMax, "restart_policy.initial_backoff_ms");
  checkRange(policy.maxBackoffMs, 0, limits.maxBackoffMsMax, "restart_policy.max_backoff_ms");
  const resolved = resolveRestartPolicy(policy);
  if (resolved.maxBackoffMs < resolved.initialBackoffMs) {
    throw invalidArgument("restart_policy.max_backoff_ms: must be at least initial_backoff_ms");
  }
}

function validateStrategy(strategy: UpdateStrategy | undefined, replicas: number): void {
  if (!strategy) return;
  checkRange(strategy.maxSurge, 0, limits.maxSurgeMax, "strategy.max_surge");
  checkRange(strategy.maxUnavailable, 0, limits.maxUnavailableMax, "strategy.max_unavailable");
  // Both 0 would leave a rolling update no room to move: it could neither add nor remove an instance.
  if (strategy.maxSurge === 0 && strategy.maxUnavailable === 0 && replicas > 0) {
    throw invalidArgument("strategy.max_surge: max_surge and max_unavailable may not both be 0");
  }
  if (strategy.readyTimeoutMs !== 0) {
    checkRange(strategy.readyTimeoutMs, limits.readyTimeoutMsMin, limits.readyTimeoutMsMax, "strategy.ready_timeout_ms");
  }
  if (!(strategy.maxErrorRate >= 0 && strategy.maxErrorRate <= 1)) throw invalidArgument("strategy.max_error_rate: must be 0..1");
  checkRange(strategy.canaryWeightPercent, 0, 100, "strategy.canary_weight_percent");
}

function checkRange(value: number, min: number, max: number, field: string): void {
  if (!Number.isInteger(value) || value < min || value > max) throw invalidArgument(`${field}: must be ${min}..${max}`);
}

function checkText(value: string, maxBytes: number, field: string): void {
  if (value.includes("\0")) throw invalidArgument(`${field}: may not contain NUL`);
  if (Buffer.byteLength(value) > maxBytes) throw invalidArgument(`${field}: over ${maxBytes} bytes`);
}
