import { parse as parseYaml } from "yaml";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { defaultAlertCooldownMs } from "./alert-engine.js";
import { type AlertRule, parseAlertRules } from "./alert-rules.js";
import { defaultWebhookMaxAttempts, defaultWebhookTimeoutMs, type WebhookReceiver } from "./alertmanager-webhook.js";
import { parseDurationMs } from "./duration.js";

/** The `alerts` section, compiled: every duration in ms, every default filled in. */
export interface AlertsConfig {
  cooldownMs: number;
  evaluationIntervalMs: number;
  externalUrl: string;
  rules: AlertRule[];
  receivers: WebhookReceiver[];
}

export const defaultEvaluationIntervalMs = 1_000;

const topFields = ["cooldown", "evaluationInterval", "externalUrl", "defaultRules", "rules", "receivers"];
const receiverFields = ["name", "url", "timeout", "maxAttempts", "sendResolved"];
const receiverNamePattern = /^[A-Za-z0-9_.-]{1,64}$/;
const maxAttemptsLimit = 20;
const maxTimeoutMs = 5 * 60_000;

/**
 * Validates and compiles an alerts configuration object (already parsed from YAML or JSON).
 * `undefined` gives the defaults: the seven default rules, no webhooks (alerts still reach the
 * log and the gauge). Errors are MeshError("invalidArgument", "<path>: <problem>").
 */
export function parseAlertsConfig(input: unknown, path = "alerts"): AlertsConfig {
  const fields = input === undefined || input === null ? {} : asRecord(input, path);
  for (const field of Object.keys(fields)) {
    if (!topFields.includes(field)) throw invalid(`${path}.${field}`, "unknown field");
  }
  if (fields.defaultRules !== undefined && typeof fields.defaultRules !== "boolean") throw invalid(`${path}.defaultRules`, "must be true or false");
  const evaluationIntervalMs =
    fields.evaluationInterval === undefined ? defaultEvaluationIntervalMs : parseDurationMs(fields.evaluationInterval, `${path}.evaluationInterval`);
  if (evaluationIntervalMs < 10) throw invalid(`${path}.evaluationInterval`, "must be at least 10ms");
  return {
    cooldownMs: fields.cooldown === undefined ? defaultAlertCooldownMs : parseDurationMs(fields.cooldown, `${path}.cooldown`),
    evaluationIntervalMs,
    externalUrl: fields.externalUrl === undefined ? "" : parseUrl(fields.externalUrl, `${path}.externalUrl`),
    rules: parseAlertRules(fields.rules, { path: `${path}.rules`, includeDefaults: fields.defaultRules !== false }),
    receivers: parseReceivers(fields.receivers, `${path}.receivers`),
  };
}

/** The same from YAML (or JSON, which is YAML) text. */
export function parseAlertsConfigText(text: string, path = "alerts"): AlertsConfig {
  let input: unknown;
  try {
    input = parseYaml(text);
  } catch (error) {
    const line = (error as { linePos?: Array<{ line: number }> }).linePos?.[0]?.line;
    throw invalid(path, `not valid YAML${line === undefined ? "" : ` (line ${line})`}`);
  }
  return parseAlertsConfig(input, path);
}

function parseReceivers(input: unknown, path: string): WebhookReceiver[] {
  if (input === undefined) return [];
  if (!Array.isArray(input)) throw invalid(path, "must be a list of receivers");
  const receivers = input.map((entry: unknown, index) => parseReceiver(entry, `${path}[${index}]`));
  receivers.forEach((receiver, index) => {
    if (receivers.findIndex((other) => other.name === receiver.name) !== index) throw invalid(`${path}[${index}].name`, `duplicate receiver name ${receiver.name}`);
  });
  return receivers;
}

function parseReceiver(input: unknown, path: string): WebhookReceiver {
  const fields = asRecord(input, path);
  for (const field of Object.keys(fields)) {
    if (!receiverFields.includes(field)) throw invalid(`${path}.${field}`, "unknown field");
  }
  if (typeof fields.name !== "string" || !receiverNamePattern.test(fields.name)) {
    throw invalid(`${path}.name`, "required, 1 to 64 letters, digits, '_', '.' or '-'");
  }
  if (fields.url === undefined) throw invalid(`${path}.url`, "required");
  const timeoutMs = fields.timeout === undefined ? defaultWebhookTimeoutMs : parseDurationMs(fields.timeout, `${path}.timeout`);
  if (timeoutMs === 0 || timeoutMs > maxTimeoutMs) throw invalid(`${path}.timeout`, "must be above 0 and at most 5m");
  const maxAttempts = fields.maxAttempts ?? defaultWebhookMaxAttempts;
  if (typeof maxAttempts !== "number" || !Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > maxAttemptsLimit) {
    throw invalid(`${path}.maxAttempts`, `must be an integer from 1 to ${maxAttemptsLimit}`);
  }
  if (fields.sendResolved !== undefined && typeof fields.sendResolved !== "boolean") throw invalid(`${path}.sendResolved`, "must be true or false");
  return { name: fields.name, url: parseUrl(fields.url, `${path}.url`), timeoutMs, maxAttempts, sendResolved: fields.sendResolved !== false };
}

/** The message never echoes the URL: webhook URLs often embed a secret token. */
function parseUrl(value: unknown, path: string): string {
  if (typeof value !== "string") throw invalid(path, "must be an http or https URL");
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(path, "must be an http or https URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw invalid(path, "must be an http or https URL");
  return value;
}

function asRecord(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalid(path, "must be an object");
  return value as Record<string, unknown>;
}

function invalid(path: string, problem: string): MeshError {
  return new MeshError("invalidArgument", `${path}: ${problem}`);
}
