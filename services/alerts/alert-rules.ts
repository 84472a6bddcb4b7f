import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { AlertLabels } from "./alert-fingerprint.js";
import { templatePlaceholders } from "./alert-template.js";
import { parseDurationMs } from "./duration.js";

export const alertRuleKinds = [
  "agent_down",
  "crash_loop",
  "deployment_below_min_ready",
  "error_rate_high",
  "latency_p99_high",
  "certificate_expiring",
  "dataplane_refusing",
] as const;
export type AlertRuleKind = (typeof alertRuleKinds)[number];

export const alertSeverities = ["critical", "warning", "info"] as const;
export type AlertSeverity = (typeof alertSeverities)[number];

interface AlertRuleCommon {
  /** The alert's `alertname` label; unique among rules. */
  name: string;
  severity: AlertSeverity;
  /** How long the condition must hold before the alert fires (0: at once). */
  forMs: number;
  /** Extra labels on every alert of this rule (team, runbook tier, ...). */
  labels: AlertLabels;
  /** `{{ name }}` templates for the summary and description annotations. */
  summary: string;
  description: string;
}

/** One compiled rule: durations in ms, defaults filled in, templates checked. */
export type AlertRule =
  | (AlertRuleCommon & { kind: "agent_down" })
  | (AlertRuleCommon & { kind: "crash_loop" })
  | (AlertRuleCommon & { kind: "deployment_below_min_ready" })
  | (AlertRuleCommon & { kind: "error_rate_high"; threshold: number; keyPrefixes: readonly string[] })
  | (AlertRuleCommon & { kind: "latency_p99_high"; thresholdMs: number; keyPrefixes: readonly string[] })
  | (AlertRuleCommon & { kind: "certificate_expiring"; withinMs: number })
  | (AlertRuleCommon & { kind: "dataplane_refusing"; minRefusals: number; windowMs: number });

/** Labels the engine sets from the observed subject; rule labels may not reuse them. */
export const subjectLabelsByKind: Record<AlertRuleKind, readonly string[]> = {
  agent_down: ["instance_id", "agent", "deployment"],
  crash_loop: ["instance_id", "agent", "deployment"],
  deployment_below_min_ready: ["deployment"],
  error_rate_high: ["key"],
  latency_p99_high: ["key"],
  certificate_expiring: ["spiffe_id"],
  dataplane_refusing: ["sidecar"],
};

/** Observed values a template may show besides the labels (they are not part of the identity). */
export const templateValuesByKind: Record<AlertRuleKind, readonly string[]> = {
  agent_down: ["state", "reason"],
  crash_loop: ["state", "reason"],
  deployment_below_min_ready: ["ready", "min_ready"],
  error_rate_high: ["value", "threshold"],
  latency_p99_high: ["value_ms", "threshold_ms"],
  certificate_expiring: ["serial", "expires_at", "expires_in", "within"],
  dataplane_refusing: ["count", "window", "reasons"],
};

const reservedLabels = ["alertname", "severity"];
const commonTemplateNames = [...reservedLabels, "for"];

const common = (name: string, severity: AlertSeverity, forMs: number, summary: string, description: string): AlertRuleCommon => ({
  name,
  severity,
  forMs,
  labels: {},
  summary,
  description,
});

/**
 * The seven rules every server starts with. The thresholds follow the budgets in DESIGN §10:
 * a restart takes well under a second, so an instance down for 30 s is a real outage; leaf
 * certificates live 1 h and renew at half-life, so 15 min left means renewal is failing. A
 * mesh refuses no call of its own members at admission, so ten in a minute is an outage in
 * the making (a renewal that broke signatures refuses every call), not noise.
 */
export const defaultAlertRules: readonly AlertRule[] = [
  {
    kind: "agent_down",
    ...common(
      "AgentDown",
      "critical",
      30_000,
      "Agent {{agent}} instance {{instance_id}} is down",
      "Instance {{instance_id}} of {{agent}} has been {{state}} for more than {{for}}: {{reason}}",
    ),
  },
  {
    kind: "crash_loop",
    ...common(
      "AgentCrashLoop",
      "critical",
      0,
      "Agent {{agent}} instance {{instance_id}} is crash looping",
      "Instance {{instance_id}} of {{agent}} restarted too often and was given up ({{state}}): {{reason}}",
    ),
  },
  {
    kind: "deployment_below_min_ready",
    ...common(
      "DeploymentBelowMinReady",
      "warning",
      60_000,
      "Deployment {{deployment}} has {{ready}} ready instances, fewer than {{min_ready}}",
      "Deployment {{deployment}} has stayed below its minimum of {{min_ready}} ready instances for more than {{for}}",
    ),
  },
  {
    kind: "error_rate_high",
    threshold: 0.05,
    keyPrefixes: [],
    ...common(
      "ErrorRateHigh",
      "warning",
      120_000,
      "Error rate of {{key}} is {{value}}",
      "Error rate of {{key}} has been above {{threshold}} for more than {{for}} (now {{value}})",
    ),
  },
  {
    kind: "latency_p99_high",
    thresholdMs: 1_000,
    keyPrefixes: [],
    ...common(
      "LatencyP99High",
      "warning",
      300_000,
      "p99 latency of {{key}} is {{value_ms}} ms",
      "p99 latency of {{key}} has been above {{threshold_ms}} ms for more than {{for}} (now {{value_ms}} ms)",
    ),
  },
  {
    kind: "certificate_expiring",
    withinMs: 15 * 60_000,
    ...common(
      "CertificateExpiring",
      "warning",
      0,
      "Certificate of {{spiffe_id}} expires in {{expires_in}}",
      "Certificate {{serial}} of {{spiffe_id}} expires at {{expires_at}}, within {{within}}; renewal is failing",
    ),
  },
  {
    kind: "dataplane_refusing",
    minRefusals: 10,
    windowMs: 60_000,
    ...common(
      "DataPlaneRefusing",
      "critical",
      0,
      "Sidecar {{sidecar}} is refusing calls",
      "Sidecar {{sidecar}} refused {{count}} calls at admission in the last {{window}} ({{reasons}})",
    ),
  },
];

const commonFields = ["name", "kind", "enabled", "severity", "for", "labels", "summary", "description"];
const kindFields: Record<AlertRuleKind, readonly string[]> = {
  agent_down: [],
  crash_loop: [],
  deployment_below_min_ready: [],
  error_rate_high: ["threshold", "keyPrefixes"],
  latency_p99_high: ["thresholdMs", "keyPrefixes"],
  certificate_expiring: ["within"],
  dataplane_refusing: ["minRefusals", "window"],
};

const namePattern = /^[A-Za-z_][A-Za-z0-9_]*$/;
const maxNameLength = 64;
const maxTemplateLength = 1024;
const maxLabelValueLength = 256;

export interface ParseAlertRulesOptions {
  /** Prefix of error paths, e.g. "alerts.rules". */
  path?: string;
  /** Start from the seven default rules (entries with a default's name override it). Default true. */
  includeDefaults?: boolean;
}

/**
 * Compiles the `rules` list of an alerts configuration. An entry whose name matches a default
 * rule changes only the fields it gives; `enabled: false` removes a rule; any other entry is
 * a new rule of the given `kind`, starting from that kind's defaults. Unknown fields are
 * refused, so a misspelt `thresold` fails at load time instead of silently doing nothing.
 */
export function parseAlertRules(input: unknown, options: ParseAlertRulesOptions = {}): AlertRule[] {
  const path = options.path ?? "rules";
  const entries = input ?? [];
  if (!Array.isArray(entries)) throw invalid(path, "must be a list of rules");
  const base = options.includeDefaults === false ? [] : defaultAlertRules;
  const overrides = new Map<string, AlertRule | undefined>();
  const added: AlertRule[] = [];
  entries.forEach((entry: unknown, index) => {
    const entryPath = `${path}[${index}]`;
    const fields = asRecord(entry, entryPath);
    const name = parseName(fields.name, `${entryPath}.name`);
    if (overrides.has(name) || added.some((rule) => rule.name === name)) throw invalid(`${entryPath}.name`, `duplicate rule name ${name}`);
    const defaultRule = base.find((rule) => rule.name === name);
    const rule = parseRule(fields, name, defaultRule, entryPath);
    if (defaultRule !== undefined) overrides.set(name, rule);
    else if (rule !== undefined) added.push(rule);
  });
  const kept = base.flatMap((rule) => {
    const override = overrides.has(rule.name) ? overrides.get(rule.name) : rule;
    return override === undefined ? [] : [override];
  });
  return [...kept, ...added];
}

function parseRule(fields: Record<string, unknown>, name: string, defaultRule: AlertRule | undefined, path: string): AlertRule | undefined {
  const kind = parseKind(fields.kind, defaultRule, `${path}.kind`);
  const allowed = new Set([...commonFields, ...kindFields[kind]]);
  for (const field of Object.keys(fields)) {
    if (allowed.has(field)) continue;
    const otherKind = alertRuleKinds.find((candidate) => kindFields[candidate].includes(field));
    throw invalid(`${path}.${field}`, otherKind === undefined ? "unknown field" : `not a field of kind ${kind}`);
  }
  const start = defaultRule ?? { ...defaultForKind(kind), name };
  const rule = { ...start, ...parseCommon(fields, start, path) } as AlertRule;
  applyKindFields(rule, fields, path);
  for (const field of ["summary", "description"] as const) checkPlaceholders(rule, rule[field], `${path}.${field}`);
  if (fields.enabled !== undefined && typeof fields.enabled !== "boolean") throw invalid(`${path}.enabled`, "must be true or false");
  return fields.enabled === false ? undefined : rule;
}

function parseCommon(fields: Record<string, unknown>, start: AlertRule, path: string): Partial<AlertRuleCommon> {
  const parsed: Partial<AlertRuleCommon> = {};
  if (fields.severity !== undefined) {
    const severity = alertSeverities.find((candidate) => candidate === fields.severity);
    if (severity === undefined) throw invalid(`${path}.severity`, `must be one of ${alertSeverities.join(", ")}`);
    parsed.severity = severity;
  }
  if (fields.for !== undefined) parsed.forMs = parseDurationMs(fields.for, `${path}.for`);
  if (fields.labels !== undefined) parsed.labels = parseLabels(fields.labels, start.kind, `${path}.labels`);
  if (fields.summary !== undefined) parsed.summary = parseTemplate(fields.summary, `${path}.summary`);
  if (fields.description !== undefined) parsed.description = parseTemplate(fields.description, `${path}.description`);
  return parsed;
}

function applyKindFields(rule: AlertRule, fields: Record<string, unknown>, path: string): void {
  switch (rule.kind) {
    case "error_rate_high":
      if (fields.threshold !== undefined) rule.threshold = parseRatio(fields.threshold, `${path}.threshold`);
      if (fields.keyPrefixes !== undefined) rule.keyPrefixes = parseKeyPrefixes(fields.keyPrefixes, `${path}.keyPrefixes`);
      return;
    case "latency_p99_high":
      if (fields.thresholdMs !== undefined) rule.thresholdMs = parsePositiveNumber(fields.thresholdMs, `${path}.thresholdMs`);
      if (fields.keyPrefixes !== undefined) rule.keyPrefixes = parseKeyPrefixes(fields.keyPrefixes, `${path}.keyPrefixes`);
      return;
    case "certificate_expiring":
      if (fields.within !== undefined) {
        rule.withinMs = parseDurationMs(fields.within, `${path}.within`);
        if (rule.withinMs === 0) throw invalid(`${path}.within`, "must be longer than 0");
      }
      return;
    case "dataplane_refusing":
      if (fields.minRefusals !== undefined) rule.minRefusals = parsePositiveInteger(fields.minRefusals, `${path}.minRefusals`);
      if (fields.window !== undefined) {
        rule.windowMs = parseDurationMs(fields.window, `${path}.window`);
        if (rule.windowMs === 0) throw invalid(`${path}.window`, "must be longer than 0");
      }
      return;
    case "agent_down":
    case "crash_loop":
    case "deployment_below_min_ready":
      return;
  }
}

function defaultForKind(kind: AlertRuleKind): AlertRule {
  const rule = defaultAlertRules.find((candidate) => candidate.kind === kind);
  if (rule === undefined) throw new Error(`no default rule for kind ${kind}`);
  return rule;
}

function parseKind(value: unknown, defaultRule: AlertRule | undefined, path: string): AlertRuleKind {
  if (value === undefined) {
    if (defaultRule === undefined) throw invalid(path, `required for a new rule, one of ${alertRuleKinds.join(", ")}`);
    return defaultRule.kind;
  }
  const kind = alertRuleKinds.find((candidate) => candidate === value);
  if (kind === undefined) throw invalid(path, `must be one of ${alertRuleKinds.join(", ")}`);
  if (defaultRule !== undefined && defaultRule.kind !== kind) {
    throw invalid(path, `default rule ${defaultRule.name} has kind ${defaultRule.kind}; pick another name for a ${kind} rule`);
  }
  return kind;
}

function parseName(value: unknown, path: string): string {
  if (typeof value !== "string" || !namePattern.test(value) || value.length > maxNameLength) {
    throw invalid(path, `required, letters, digits and _ (at most ${maxNameLength}), not starting with a digit`);
  }
  return value;
}

function parseLabels(value: unknown, kind: AlertRuleKind, path: string): AlertLabels {
  const fields = asRecord(value, path);
  const reserved = new Set([...reservedLabels, ...subjectLabelsByKind[kind]]);
  const labels: Record<string, string> = {};
  for (const [name, labelValue] of Object.entries(fields)) {
    if (!namePattern.test(name) || name.startsWith("__")) throw invalid(`${path}.${name}`, "label names are letters, digits and _, not starting with a digit or __");
    if (reserved.has(name)) throw invalid(`${path}.${name}`, `is set by the engine for kind ${kind}`);
    if (typeof labelValue !== "string" || labelValue.length > maxLabelValueLength) {
      throw invalid(`${path}.${name}`, `must be a string of at most ${maxLabelValueLength} characters`);
    }
    labels[name] = labelValue;
  }
  return labels;
}

function parseTemplate(value: unknown, path: string): string {
  if (typeof value !== "string" || value.length > maxTemplateLength) throw invalid(path, `must be a string of at most ${maxTemplateLength} characters`);
  return value;
}

function checkPlaceholders(rule: AlertRule, template: string, path: string): void {
  const known = new Set([...commonTemplateNames, ...subjectLabelsByKind[rule.kind], ...templateValuesByKind[rule.kind], ...Object.keys(rule.labels)]);
  const unknown = templatePlaceholders(template).find((name) => !known.has(name));
  if (unknown !== undefined) throw invalid(path, `unknown placeholder {{${unknown}}}; known: ${[...known].join(", ")}`);
}

function parseRatio(value: unknown, path: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value >= 1) throw invalid(path, "must be a fraction from 0 up to (not including) 1, e.g. 0.05");
  return value;
}

function parsePositiveNumber(value: unknown, path: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) throw invalid(path, "must be a number above 0");
  return value;
}

function parsePositiveInteger(value: unknown, path: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) throw invalid(path, "must be a whole number above 0");
  return value;
}

function parseKeyPrefixes(value: unknown, path: string): string[] {
  if (!Array.isArray(value) || value.some((prefix) => typeof prefix !== "string" || prefix === "")) {
    throw invalid(path, "must be a list of non-empty strings");
  }
  return value as string[];
}

function asRecord(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalid(path, "must be an object");
  return value as Record<string, unknown>;
}

function invalid(path: string, problem: string): MeshError {
  return new MeshError("invalidArgument", `${path}: ${problem}`);
}
