import type { Logger } from "pino";
import { Gauge, type Registry } from "prom-client";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type AlertLabels, labelsFingerprint } from "./alert-fingerprint.js";
import { type AlertPhase, nextAlertStep } from "./alert-phase.js";
import type { AlertRule, AlertRuleKind, AlertSeverity } from "./alert-rules.js";
import { renderTemplate } from "./alert-template.js";
import { formatDurationMs } from "./duration.js";

/** What the server tells the engine; each observation replaces the previous one for its subject. */
export type AlertSignal =
  | { type: "instanceState"; instanceId: string; agentName: string; deployment: string; state: HealthState; reason: string }
  | { type: "instanceRemoved"; instanceId: string }
  | { type: "deploymentReady"; deployment: string; ready: number; minReady: number }
  | { type: "deploymentRemoved"; deployment: string }
  | { type: "errorRate"; key: string; value: number }
  | { type: "latencyP99"; key: string; valueMs: number }
  | { type: "seriesRemoved"; key: string }
  | { type: "certificate"; spiffeId: string; serial: string; expiresAtMs: number }
  | { type: "certificateRemoved"; spiffeId: string }
  | { type: "dataplaneRefusals"; sidecar: string; reason: string; count: number };

export type AlertStatus = "firing" | "resolved";

/** One alert at a transition, or as listed by `firing()`. */
export interface Alert {
  /** Alertmanager-compatible fingerprint of `labels`. */
  fingerprint: string;
  alertname: string;
  kind: AlertRuleKind;
  severity: AlertSeverity;
  status: AlertStatus;
  /** alertname, severity, the subject's labels and the rule's labels. */
  labels: AlertLabels;
  /** summary and description, rendered when the alert fired. */
  annotations: AlertLabels;
  startsAtMs: number;
  /** Set once resolved. */
  endsAtMs: number | undefined;
}

export type AlertListener = (alert: Alert) => void;

export interface AlertEngineOptions {
  rules: readonly AlertRule[];
  clock: Clock;
  /** The gauge `agentmesh_alerts_firing{alertname,severity}` is registered here. */
  registry: Registry;
  logger: Logger;
  /** A resolved alert does not fire again before this long has passed. Default 60 s. */
  cooldownMs?: number;
}

export const defaultAlertCooldownMs = 60_000;

interface AlertEntry {
  rule: AlertRule;
  labels: AlertLabels;
  fingerprint: string;
  conditionSinceMs: number | undefined;
  /** Latest observed template values; rendered into annotations when the alert fires. */
  values: Record<string, string>;
  phase: AlertPhase;
  annotations: AlertLabels;
}

interface ObservedCertificate {
  serial: string;
  expiresAtMs: number;
}

interface ObservedRefusals {
  atMs: number;
  reason: string;
  count: number;
}

const crashLoopReason = /crash[ -]?loop/i;

/**
 * Turns observations into alerts. An alert is pending while its condition holds for less than
 * the rule's `for`, then fires once; it resolves once when the condition stops holding (or its
 * subject is removed). Only subjects with a problem are kept, so memory follows the number of
 * problems, not the size of the fleet. `observe` steps the alerts it touches at once, so
 * `crash_loop` (for 0) fires inside the call; `evaluate` steps everything else that depends on
 * time passing (`for` durations, certificate expiry, cooldowns).
 */
export class AlertEngine {
  private readonly entries = new Map<string, AlertEntry>();
  private readonly certificates = new Map<string, ObservedCertificate>();
  /** Refusal reports per sidecar, within the longest window of a dataplane_refusing rule. */
  private readonly refusals = new Map<string, ObservedRefusals[]>();
  private readonly listeners = new Set<AlertListener>();
  private readonly cooldownMs: number;
  private readonly log: Logger;
  private readonly crashLoopRuleEnabled: boolean;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: AlertEngineOptions) {
    this.cooldownMs = options.cooldownMs ?? defaultAlertCooldownMs;
    this.log = options.logger.child({ component: "alerts" });
    this.crashLoopRuleEnabled = options.rules.some((rule) => rule.kind === "crash_loop");
    const firingByRule = (): Map<AlertRule, number> => this.firingCountByRule();
    new Gauge({
      name: "agentmesh_alerts_firing",
      help: "Alerts currently firing, by rule.",
      labelNames: ["alertname", "severity"],
      registers: [options.registry],
      collect() {
        this.reset();
        for (const [rule, count] of firingByRule()) this.set({ alertname: rule.name, severity: rule.severity }, count);
      },
    });
  }

  observe(signal: AlertSignal): void {
    const nowMs = this.options.clock.nowMs();
    switch (signal.type) {
      case "instanceState":
        return this.observeInstance(signal, nowMs);
      case "instanceRemoved":
        return this.clearSubject(["agent_down", "crash_loop"], signal.instanceId, nowMs);
      case "deploymentReady":
        for (const rule of this.rulesOf("deployment_below_min_ready")) {
          this.setCondition(rule, signal.deployment, signal.ready < signal.minReady, nowMs, () => ({
            labels: { deployment: signal.deployment },
            values: { ready: String(signal.ready), min_ready: String(signal.minReady) },
          }));
        }
        return;
      case "deploymentRemoved":
        return this.clearSubject(["deployment_below_min_ready"], signal.deployment, nowMs);
      case "errorRate":
        if (!Number.isFinite(signal.value)) return;
        for (const rule of this.rulesOf("error_rate_high")) {
          if (!keyMatches(rule.keyPrefixes, signal.key)) continue;
          this.setCondition(rule, signal.key, signal.value > rule.threshold, nowMs, () => ({
            labels: { key: signal.key },
            values: { value: formatNumber(signal.value), threshold: formatNumber(rule.threshold) },
          }));
        }
        return;
      case "latencyP99":
        if (!Number.isFinite(signal.valueMs)) return;
        for (const rule of this.rulesOf("latency_p99_high")) {
          if (!keyMatches(rule.keyPrefixes, signal.key)) continue;
          this.setCondition(rule, signal.key, signal.valueMs > rule.thresholdMs, nowMs, () => ({
            labels: { key: signal.key },
            values: { value_ms: formatNumber(signal.valueMs), threshold_ms: formatNumber(rule.thresholdMs) },
          }));
        }
        return;
      case "seriesRemoved":
        return this.clearSubject(["error_rate_high", "latency_p99_high"], signal.key, nowMs);
      case "certificate":
        this.certificates.set(signal.spiffeId, { serial: signal.serial, expiresAtMs: signal.expiresAtMs });
        return this.checkCertificate(signal.spiffeId, nowMs);
      case "certificateRemoved":
        this.certificates.delete(signal.spiffeId);
        return this.clearSubject(["certificate_expiring"], signal.spiffeId, nowMs);
      case "dataplaneRefusals": {
        if (!Number.isFinite(signal.count) || signal.count <= 0 || this.rulesOf("dataplane_refusing").length === 0) return;
        const reports = this.refusals.get(signal.sidecar) ?? [];
        reports.push({ atMs: nowMs, reason: signal.reason, count: signal.count });
        this.refusals.set(signal.sidecar, reports);
        return this.checkRefusals(signal.sidecar, nowMs);
      }
    }
  }

  /** Steps every alert to `nowMs`: fires those whose `for` or cooldown has passed. */
  evaluate(nowMs: number = this.options.clock.nowMs()): void {
    for (const spiffeId of this.certificates.keys()) this.checkCertificate(spiffeId, nowMs);
    for (const sidecar of [...this.refusals.keys()]) this.checkRefusals(sidecar, nowMs);
    for (const [key, entry] of this.entries) this.step(key, entry, nowMs);
  }

  firing(): Alert[] {
    const alerts: Alert[] = [];
    for (const entry of this.entries.values()) {
      if (entry.phase.name === "firing") alerts.push(toAlert(entry, "firing", entry.phase.startsAtMs, undefined));
    }
    return alerts.sort((left, right) => left.startsAtMs - right.startsAtMs);
  }

  /** Called once per firing and once per resolve; returns an unsubscribe function. */
  onTransition(listener: AlertListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Evaluates on a timer; the interval bounds how late a `for` can fire. */
  start(evaluationIntervalMs = 1_000): void {
    this.stop();
    this.timer = setInterval(() => this.evaluate(), evaluationIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private observeInstance(signal: Extract<AlertSignal, { type: "instanceState" }>, nowMs: number): void {
    const failed = signal.state === HealthState.HEALTH_STATE_FAILED;
    const crashLooping = failed && crashLoopReason.test(signal.reason);
    // Inhibition, as Alertmanager would configure it: a crash-looping instance is also "down",
    // but the crash_loop alert already says so; a second page 30 s later adds only noise.
    const down = signal.state === HealthState.HEALTH_STATE_UNHEALTHY || (failed && !(crashLooping && this.crashLoopRuleEnabled));
    const describe = (): { labels: Record<string, string>; values: Record<string, string> } => ({
      labels: withoutEmpty({ instance_id: signal.instanceId, agent: signal.agentName, deployment: signal.deployment }),
      values: { state: healthStateName(signal.state), reason: signal.reason },
    });
    for (const rule of this.rulesOf("agent_down")) this.setCondition(rule, signal.instanceId, down, nowMs, describe);
    for (const rule of this.rulesOf("crash_loop")) this.setCondition(rule, signal.instanceId, crashLooping, nowMs, describe);
  }

  private checkCertificate(spiffeId: string, nowMs: number): void {
    const certificate = this.certificates.get(spiffeId);
    if (certificate === undefined) return;
    for (const rule of this.rulesOf("certificate_expiring")) {
      const expiring = certificate.expiresAtMs - nowMs <= rule.withinMs;
      this.setCondition(rule, spiffeId, expiring, nowMs, () => ({
        labels: { spiffe_id: spiffeId },
        values: {
          serial: certificate.serial,
          expires_at: new Date(certificate.expiresAtMs).toISOString(),
          expires_in: formatDurationMs(certificate.expiresAtMs - nowMs),
          within: formatDurationMs(rule.withinMs),
        },
      }));
    }
  }

  /** Refusals of one sidecar within each rule's window; reports older than every window are dropped. */
  private checkRefusals(sidecar: string, nowMs: number): void {
    const rules = this.rulesOf("dataplane_refusing");
    const longestWindowMs = Math.max(0, ...rules.map((rule) => rule.windowMs));
    const reports = (this.refusals.get(sidecar) ?? []).filter((report) => nowMs - report.atMs < longestWindowMs);
    if (reports.length === 0) this.refusals.delete(sidecar);
    else this.refusals.set(sidecar, reports);
    for (const rule of rules) {
      const recent = reports.filter((report) => nowMs - report.atMs < rule.windowMs);
      const count = recent.reduce((sum, report) => sum + report.count, 0);
      this.setCondition(rule, sidecar, count >= rule.minRefusals, nowMs, () => ({
        labels: { sidecar },
        values: { count: String(count), window: formatDurationMs(rule.windowMs), reasons: summarizeReasons(recent) },
      }));
    }
  }

  private clearSubject(kinds: readonly AlertRuleKind[], subjectId: string, nowMs: number): void {
    for (const rule of this.options.rules) {
      if (kinds.includes(rule.kind)) this.setCondition(rule, subjectId, false, nowMs, () => ({ labels: {}, values: {} }));
    }
  }

  /**
   * Records whether a rule's condition holds for one subject and steps that alert. `describe`
   * runs only when the condition holds, so healthy observations cost a map lookup and nothing else.
   */
  private setCondition(
    rule: AlertRule,
    subjectId: string,
    holds: boolean,
    nowMs: number,
    describe: () => { labels: Record<string, string>; values: Record<string, string> },
  ): void {
    const key = `${rule.name}\u0000${subjectId}`;
    let entry = this.entries.get(key);
    if (!holds) {
      if (entry === undefined) return;
      entry.conditionSinceMs = undefined;
      return this.step(key, entry, nowMs);
    }
    const { labels, values } = describe();
    if (entry === undefined) {
      const allLabels = { ...rule.labels, ...labels, alertname: rule.name, severity: rule.severity };
      entry = {
        rule,
        labels: allLabels,
        fingerprint: labelsFingerprint(allLabels),
        conditionSinceMs: nowMs,
        values,
        phase: { name: "pending", refireAfterMs: nowMs },
        annotations: {},
      };
      this.entries.set(key, entry);
    }
    entry.conditionSinceMs ??= nowMs;
    entry.values = values;
    this.step(key, entry, nowMs);
  }

  private step(key: string, entry: AlertEntry, nowMs: number): void {
    const step = nextAlertStep(entry.phase, { sinceMs: entry.conditionSinceMs, forMs: entry.rule.forMs }, nowMs);
    switch (step) {
      case "fire":
        entry.annotations = renderAnnotations(entry);
        entry.phase = { name: "firing", startsAtMs: nowMs };
        this.log.warn({ alertname: entry.rule.name, severity: entry.rule.severity, labels: entry.labels, fingerprint: entry.fingerprint }, "alert firing");
        return this.emit(toAlert(entry, "firing", nowMs, undefined));
      case "resolve": {
        if (entry.phase.name !== "firing") return;
        const startsAtMs = entry.phase.startsAtMs;
        entry.phase = { name: "pending", refireAfterMs: nowMs + this.cooldownMs };
        this.log.info(
          { alertname: entry.rule.name, severity: entry.rule.severity, labels: entry.labels, fingerprint: entry.fingerprint, durationMs: nowMs - startsAtMs },
          "alert resolved",
        );
        return this.emit(toAlert(entry, "resolved", startsAtMs, nowMs));
      }
      case "forget":
        this.entries.delete(key);
        return;
      case "stay":
        return;
    }
  }

  private emit(alert: Alert): void {
    for (const listener of this.listeners) {
      try {
        listener(alert);
      } catch (error) {
        // A broken listener (say, a notifier bug) must not stop the others or the engine.
        this.log.error({ err: error, alertname: alert.alertname }, "alert listener failed");
      }
    }
  }

  private rulesOf<Kind extends AlertRuleKind>(kind: Kind): Array<Extract<AlertRule, { kind: Kind }>> {
    return this.options.rules.filter((rule): rule is Extract<AlertRule, { kind: Kind }> => rule.kind === kind);
  }

  private firingCountByRule(): Map<AlertRule, number> {
    const counts = new Map<AlertRule, number>(this.options.rules.map((rule) => [rule, 0]));
    for (const entry of this.entries.values()) {
      if (entry.phase.name === "firing") counts.set(entry.rule, (counts.get(entry.rule) ?? 0) + 1);
    }
    return counts;
  }
}

function toAlert(entry: AlertEntry, status: AlertStatus, startsAtMs: number, endsAtMs: number | undefined): Alert {
  return {
    fingerprint: entry.fingerprint,
    alertname: entry.rule.name,
    kind: entry.rule.kind,
    severity: entry.rule.severity,
    status,
    labels: entry.labels,
    annotations: entry.annotations,
    startsAtMs,
    endsAtMs,
  };
}

function renderAnnotations(entry: AlertEntry): AlertLabels {
  const values = { ...entry.values, ...entry.labels, for: formatDurationMs(entry.rule.forMs) };
  return { summary: renderTemplate(entry.rule.summary, values), description: renderTemplate(entry.rule.description, values) };
}

/** `signature_invalid ×12, caller_may_not_invoke_this_capability ×1`, most frequent first. */
function summarizeReasons(reports: readonly ObservedRefusals[]): string {
  const byReason = new Map<string, number>();
  for (const report of reports) byReason.set(report.reason, (byReason.get(report.reason) ?? 0) + report.count);
  return [...byReason]
    .sort((left, right) => right[1] - left[1])
    .slice(0, 5)
    .map(([reason, count]) => `${reason} ×${count}`)
    .join(", ");
}

function keyMatches(prefixes: readonly string[], key: string): boolean {
  return prefixes.length === 0 || prefixes.some((prefix) => key.startsWith(prefix));
}

/** Prometheus treats an empty label as absent; leaving it out keeps fingerprints equal to theirs. */
function withoutEmpty(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter(([, value]) => value !== ""));
}

function healthStateName(state: HealthState): string {
  return (HealthState[state] ?? "UNKNOWN").replace("HEALTH_STATE_", "");
}

/** Four significant digits: enough to read, few enough to keep summaries stable. */
function formatNumber(value: number): string {
  return String(Number(value.toPrecision(4)));
}
