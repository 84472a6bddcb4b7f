import { invalidArgument } from "../../../sdk/ts/src/core/mesh-error.js";
import { isValidVersion } from "../../../sdk/ts/src/core/semver-match.js";
import type { LabelSelector } from "../../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { LabelRequirement_Operator } from "../../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { AgentManifest } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { manifestLimits as limits } from "./limits.js";

const agentNamePattern = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const capabilityNamePattern = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/;
const labelNamePattern = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;
const labelValuePattern = /^([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$/;
const dnsSubdomainPattern = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
const metadataKeyPattern = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const instanceIdPattern = /^[A-Za-z0-9._-]{1,64}$/;
const endpointPattern = /^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/;

export function validateAgentName(name: string, field = "manifest.name"): void {
  if (name === "") throw invalidArgument(`${field}: required`);
  if (name.length > limits.nameMaxLength) throw invalidArgument(`${field}: longer than ${limits.nameMaxLength} characters`);
  if (!agentNamePattern.test(name)) throw invalidArgument(`${field}: must be a DNS label (a-z, 0-9, '-')`);
}

export function validateCapabilityName(name: string, field = "capability"): void {
  if (name === "") throw invalidArgument(`${field}: required`);
  if (name.length > limits.capabilityNameMaxLength) {
    throw invalidArgument(`${field}: longer than ${limits.capabilityNameMaxLength} characters`);
  }
  if (!capabilityNamePattern.test(name)) throw invalidArgument(`${field}: must be dotted lowercase, like sql.query`);
}

export function validateVersion(version: string, field: string): void {
  if (version === "") throw invalidArgument(`${field}: required`);
  if (!isValidVersion(version)) throw invalidArgument(`${field}: not a semver 2.0.0 version`);
}

export function validateLabelKey(key: string, field: string): void {
  const slash = key.lastIndexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && (prefix.length > limits.labelPrefixMaxLength || !dnsSubdomainPattern.test(prefix))) {
    throw invalidArgument(`${field}: key prefix must be a DNS subdomain`);
  }
  if (name === "" || name.length > limits.labelNameMaxLength || !labelNamePattern.test(name)) {
    throw invalidArgument(`${field}: key must be 1-${limits.labelNameMaxLength} of [A-Za-z0-9._-], alphanumeric at both ends`);
  }
}

export function validateLabels(labels: Readonly<Record<string, string>>, field: string): void {
  const entries = Object.entries(labels);
  if (entries.length > limits.labelsMax) throw invalidArgument(`${field}: more than ${limits.labelsMax} labels`);
  for (const [key, value] of entries) {
    validateLabelKey(key, `${field}[${truncate(key)}]`);
    if (value.length > limits.labelValueMaxLength || !labelValuePattern.test(value)) {
      throw invalidArgument(`${field}[${truncate(key)}]: value must be 0-${limits.labelValueMaxLength} of [A-Za-z0-9._-]`);
    }
  }
}

export function validateLabelSelector(selector: LabelSelector | undefined, field = "label_selector"): void {
  if (!selector) return;
  const requirements = Object.keys(selector.matchLabels).length + selector.matchExpressions.length;
  if (requirements > limits.labelsMax) throw invalidArgument(`${field}: more than ${limits.labelsMax} requirements`);
  for (const [key, value] of Object.entries(selector.matchLabels)) {
    validateLabelKey(key, `${field}.match_labels[${truncate(key)}]`);
    if (value.length > limits.labelValueMaxLength || !labelValuePattern.test(value)) {
      throw invalidArgument(`${field}.match_labels[${truncate(key)}]: invalid value`);
    }
  }
  selector.matchExpressions.forEach((requirement, index) => {
    const requirementField = `${field}.match_expressions[${index}]`;
    validateLabelKey(requirement.key, `${requirementField}.key`);
    const operator = requirement.operator;
    if (operator === LabelRequirement_Operator.OPERATOR_IN || operator === LabelRequirement_Operator.OPERATOR_NOT_IN) {
      if (requirement.values.length === 0) throw invalidArgument(`${requirementField}.values: required for In and NotIn`);
      if (requirement.values.length > limits.selectorValuesMax) throw invalidArgument(`${requirementField}.values: more than ${limits.selectorValuesMax}`);
      requirement.values.forEach((value, valueIndex) => {
        if (value.length > limits.labelValueMaxLength || !labelValuePattern.test(value)) {
          throw invalidArgument(`${requirementField}.values[${valueIndex}]: must be 0-${limits.labelValueMaxLength} of [A-Za-z0-9._-]`);
        }
      });
    } else if (
      operator === LabelRequirement_Operator.OPERATOR_EXISTS ||
      operator === LabelRequirement_Operator.OPERATOR_DOES_NOT_EXIST
    ) {
      if (requirement.values.length > 0) throw invalidArgument(`${requirementField}.values: must be empty for Exists`);
    } else {
      throw invalidArgument(`${requirementField}.operator: unknown operator`);
    }
  });
}

/** Invoke metadata travels to the agent with every call: bounded like every other field. */
export function validateMetadata(metadata: Readonly<Record<string, string>>, field = "metadata"): void {
  const entries = Object.entries(metadata);
  if (entries.length > limits.metadataEntriesMax) throw invalidArgument(`${field}: more than ${limits.metadataEntriesMax} entries`);
  let totalBytes = 0;
  for (const [key, value] of entries) {
    if (key.length > limits.metadataKeyMaxLength || !metadataKeyPattern.test(key)) {
      throw invalidArgument(`${field}[${truncate(key)}]: key must be 1-${limits.metadataKeyMaxLength} of [A-Za-z0-9._-]`);
    }
    const valueBytes = Buffer.byteLength(value);
    if (valueBytes > limits.metadataValueMaxBytes) throw invalidArgument(`${field}[${truncate(key)}]: value over ${limits.metadataValueMaxBytes} bytes`);
    totalBytes += key.length + valueBytes;
  }
  if (totalBytes > limits.metadataTotalMaxBytes) throw invalidArgument(`${field}: over ${limits.metadataTotalMaxBytes} bytes in all`);
}

export function validateInstanceId(instanceId: string, field = "instance_id"): void {
  if (!instanceIdPattern.test(instanceId)) throw invalidArgument(`${field}: must be 1-64 of [A-Za-z0-9._-]`);
}

export function validateEndpoint(endpoint: string, field = "endpoint"): void {
  if (endpoint === "") return;
  if (endpoint.length > limits.endpointMaxLength || !endpointPattern.test(endpoint)) {
    throw invalidArgument(`${field}: must be host:port`);
  }
  const port = Number(endpoint.slice(endpoint.lastIndexOf(":") + 1));
  if (port < 1 || port > 65535) throw invalidArgument(`${field}: port out of range`);
}

/** Checks every field of a manifest; throws INVALID_ARGUMENT naming the first bad one. */
export function validateManifest(manifest: AgentManifest | undefined): asserts manifest is AgentManifest {
  if (!manifest) throw invalidArgument("manifest: required");
  validateAgentName(manifest.name);
  validateVersion(manifest.version, "manifest.version");
  if (manifest.capabilities.length === 0) throw invalidArgument("manifest.capabilities: at least one required");
  if (manifest.capabilities.length > limits.capabilitiesMax) {
    throw invalidArgument(`manifest.capabilities: more than ${limits.capabilitiesMax}`);
  }
  const seen = new Set<string>();
  manifest.capabilities.forEach((capability, index) => {
    const field = `manifest.capabilities[${index}]`;
    validateCapabilityName(capability.name, `${field}.name`);
    if (seen.has(capability.name)) throw invalidArgument(`${field}.name: duplicate capability`);
    seen.add(capability.name);
    validateVersion(capability.version, `${field}.version`);
    const attributes = Object.entries(capability.attributes);
    if (attributes.length > limits.attributesMax) throw invalidArgument(`${field}.attributes: more than ${limits.attributesMax}`);
    for (const [key, value] of attributes) {
      validateLabelKey(key, `${field}.attributes[${truncate(key)}]`);
      if (Buffer.byteLength(value) > limits.attributeValueMaxBytes) {
        throw invalidArgument(`${field}.attributes[${truncate(key)}]: value over ${limits.attributeValueMaxBytes} bytes`);
      }
    }
  });
  validateLabels(manifest.labels, "manifest.labels");
  const interval = manifest.healthPolicy?.heartbeatIntervalMs ?? 0;
  if (interval !== 0 && (interval < limits.minHeartbeatIntervalMs || interval > limits.maxHeartbeatIntervalMs)) {
    throw invalidArgument(
      `manifest.health_policy.heartbeat_interval_ms: must be ${limits.minHeartbeatIntervalMs}-${limits.maxHeartbeatIntervalMs}`,
    );
  }
  const errorRate = manifest.healthPolicy?.degradedErrorRate ?? 0;
  if (!(errorRate >= 0 && errorRate <= 1)) throw invalidArgument("manifest.health_policy.degraded_error_rate: must be 0..1");
  if ((manifest.healthPolicy?.hungRestartAfterMs ?? 0) > limits.maxHungRestartAfterMs) {
    throw invalidArgument(`manifest.health_policy.hung_restart_after_ms: at most ${limits.maxHungRestartAfterMs} (24 h)`);
  }
  const resources = manifest.resources;
  if (resources) {
    if (!(resources.invokeRatePerSecond >= 0) || !Number.isFinite(resources.invokeRatePerSecond)) {
      throw invalidArgument("manifest.resources.invoke_rate_per_second: must be a finite number >= 0");
    }
  }
  if (Buffer.byteLength(manifest.agentCardJson) > limits.agentCardMaxBytes) {
    throw invalidArgument(`manifest.agent_card_json: over ${limits.agentCardMaxBytes} bytes`);
  }
  if (manifest.agentCardJson !== "") {
    try {
      const card: unknown = JSON.parse(manifest.agentCardJson);
      if (typeof card !== "object" || card === null || Array.isArray(card)) throw new Error("not an object");
    } catch {
      throw invalidArgument("manifest.agent_card_json: must be a JSON object");
    }
  }
}

export function heartbeatIntervalMsOf(manifest: AgentManifest): number {
  const interval = manifest.healthPolicy?.heartbeatIntervalMs ?? 0;
  return interval === 0 ? limits.defaultHeartbeatIntervalMs : interval;
}

/** Echo at most 40 printable characters of caller input back in an error message. */
function truncate(text: string): string {
  const printable = text.replace(/[^\x20-\x7e]/g, "?");
  return printable.length > 40 ? `${printable.slice(0, 40)}…` : printable;
}
