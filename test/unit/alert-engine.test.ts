import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type Alert, AlertEngine, type AlertSignal } from "../../services/alerts/alert-engine.js";
import { type AlertRule, defaultAlertRules, parseAlertRules } from "../../services/alerts/alert-rules.js";
import { logSink } from "../helpers/log-sink.js";

function setup(rules: readonly AlertRule[] = defaultAlertRules, cooldownMs?: number) {
  const clock = new ManualClock();
  const registry = new Registry();
  const sink = logSink("debug");
  const engine = new AlertEngine({ rules, clock, registry, logger: sink.log, ...(cooldownMs === undefined ? {} : { cooldownMs }) });
  const transitions: Alert[] = [];
  engine.onTransition((alert) => transitions.push(alert));
  const advance = (ms: number): void => {
    clock.advance(ms);
    engine.evaluate();
  };
  const statuses = (): string[] => transitions.map((alert) => `${alert.alertname}:${alert.status}`);
  return { clock, registry, sink, engine, transitions, advance, statuses };
}

/** Rules from configuration text as an operator would write them, without the defaults. */
function rulesFrom(entries: unknown[]): AlertRule[] {
  return parseAlertRules(entries, { includeDefaults: false });
}

const instance = { instanceId: "i-1", agentName: "summarizer", deployment: "summarizer" };
const unhealthy: AlertSignal = { type: "instanceState", ...instance, state: HealthState.HEALTH_STATE_UNHEALTHY, reason: "heartbeat timeout" };
const ready: AlertSignal = { type: "instanceState", ...instance, state: HealthState.HEALTH_STATE_READY, reason: "" };
const crashLoop: AlertSignal = { type: "instanceState", ...instance, state: HealthState.HEALTH_STATE_FAILED, reason: "crash loop" };

interface RuleCase {
  alertname: string;
  forMs: number;
  trigger: AlertSignal;
  clear: AlertSignal;
  labels: Record<string, string>;
  summary: string;
}

const ruleCases: RuleCase[] = [
  {
    alertname: "AgentDown",
    forMs: 30_000,
    trigger: unhealthy,
    clear: ready,
    labels: { alertname: "AgentDown", severity: "critical", instance_id: "i-1", agent: "summarizer", deployment: "summarizer" },
    summary: "Agent summarizer instance i-1 is down",
  },
  {
    alertname: "DeploymentBelowMinReady",
    forMs: 60_000,
    trigger: { type: "deploymentReady", deployment: "summarizer", ready: 1, minReady: 3 },
    clear: { type: "deploymentReady", deployment: "summarizer", ready: 3, minReady: 3 },
    labels: { alertname: "DeploymentBelowMinReady", severity: "warning", deployment: "summarizer" },
    summary: "Deployment summarizer has 1 ready instances, fewer than 3",
  },
  {
    alertname: "ErrorRateHigh",
    forMs: 120_000,
    trigger: { type: "errorRate", key: "capability/summarize", value: 0.25 },
    clear: { type: "errorRate", key: "capability/summarize", value: 0.01 },
    labels: { alertname: "ErrorRateHigh", severity: "warning", key: "capability/summarize" },
    summary: "Error rate of capability/summarize is 0.25",
  },
  {
    alertname: "LatencyP99High",
    forMs: 300_000,
    trigger: { type: "latencyP99", key: "capability/summarize", valueMs: 2_500 },
    clear: { type: "latencyP99", key: "capability/summarize", valueMs: 120 },
    labels: { alertname: "LatencyP99High", severity: "warning", key: "capability/summarize" },
    summary: "p99 latency of capability/summarize is 2500 ms",
  },
];

describe("AlertEngine default rules", () => {
  it.each(ruleCases)("$alertname fires after its `for`, once, and resolves once when the condition clears", (ruleCase) => {
    const { engine, transitions, advance, clock } = setup();
    engine.observe(ruleCase.trigger);
    advance(ruleCase.forMs - 1);
    expect(transitions).toEqual([]);
    expect(engine.firing()).toEqual([]);

    advance(1);
    const firedAtMs = clock.nowMs();
    expect(transitions).toHaveLength(1);
    expect(transitions[0]).toMatchObject({
      alertname: ruleCase.alertname,
      status: "firing",
      labels: ruleCase.labels,
      startsAtMs: firedAtMs,
      endsAtMs: undefined,
    });
    expect(transitions[0]?.annotations.summary).toBe(ruleCase.summary);

    // The condition keeps being reported for ten more minutes: nothing new is sent.
    for (let second = 0; second < 600; second += 1) {
      engine.observe(ruleCase.trigger);
      advance(1_000);
    }
    expect(transitions).toHaveLength(1);
    expect(engine.firing().map((alert) => alert.alertname)).toEqual([ruleCase.alertname]);

    engine.observe(ruleCase.clear);
    engine.observe(ruleCase.clear);
    advance(1_000);
    expect(transitions).toHaveLength(2);
    expect(transitions[1]).toMatchObject({
      alertname: ruleCase.alertname,
      status: "resolved",
      fingerprint: transitions[0]?.fingerprint,
      startsAtMs: firedAtMs,
      endsAtMs: firedAtMs + 600_000,
      annotations: transitions[0]?.annotations,
    });
    expect(engine.firing()).toEqual([]);
  });

  it.each(ruleCases)("$alertname does not fire when the condition clears before `for`", (ruleCase) => {
    const { engine, transitions, advance } = setup();
    engine.observe(ruleCase.trigger);
    advance(ruleCase.forMs - 1_000);
    engine.observe(ruleCase.clear);
    engine.observe(ruleCase.trigger);
    advance(ruleCase.forMs - 1_000);
    expect(transitions).toEqual([]);

    advance(1_000);
    expect(transitions.map((alert) => alert.status)).toEqual(["firing"]);
  });

  it("crash_loop fires inside observe, without waiting for an evaluation", () => {
    const { engine, transitions } = setup();
    engine.observe(crashLoop);
    expect(transitions).toHaveLength(1);
    expect(transitions[0]).toMatchObject({
      alertname: "AgentCrashLoop",
      severity: "critical",
      status: "firing",
      labels: { alertname: "AgentCrashLoop", severity: "critical", instance_id: "i-1", agent: "summarizer", deployment: "summarizer" },
      annotations: {
        summary: "Agent summarizer instance i-1 is crash looping",
        description: "Instance i-1 of summarizer restarted too often and was given up (FAILED): crash loop",
      },
    });
  });

  it("a crash-looping instance raises only the crash_loop alert, never a second agent_down page", () => {
    const { engine, advance, statuses } = setup();
    engine.observe(crashLoop);
    for (let second = 0; second < 300; second += 1) {
      engine.observe(crashLoop);
      advance(1_000);
    }
    expect(statuses()).toEqual(["AgentCrashLoop:firing"]);
  });

  it("an instance FAILED for another reason is down, not crash looping", () => {
    const { engine, advance, statuses } = setup();
    engine.observe({ ...crashLoop, reason: "memory limit exceeded" });
    advance(30_000);
    expect(statuses()).toEqual(["AgentDown:firing"]);
  });

  it("without a crash_loop rule, a crash-looping instance counts as down", () => {
    const { engine, advance, statuses } = setup(defaultAlertRules.filter((rule) => rule.kind !== "crash_loop"));
    engine.observe(crashLoop);
    advance(30_000);
    expect(statuses()).toEqual(["AgentDown:firing"]);
  });

  it("removing the instance resolves its alerts", () => {
    const { engine, advance, statuses } = setup();
    engine.observe(unhealthy);
    advance(30_000);
    engine.observe({ type: "instanceRemoved", instanceId: "i-1" });
    expect(statuses()).toEqual(["AgentDown:firing", "AgentDown:resolved"]);
  });

  it("each instance is its own alert", () => {
    const { engine, advance, transitions } = setup();
    engine.observe(unhealthy);
    engine.observe({ ...unhealthy, instanceId: "i-2" });
    advance(30_000);
    expect(transitions.map((alert) => alert.labels.instance_id)).toEqual(["i-1", "i-2"]);
    expect(new Set(transitions.map((alert) => alert.fingerprint)).size).toBe(2);
  });

  it("an unmanaged instance (no deployment) carries no empty deployment label", () => {
    const { engine, advance, transitions } = setup();
    engine.observe({ ...unhealthy, deployment: "" });
    advance(30_000);
    expect(Object.keys(transitions[0]?.labels ?? {})).not.toContain("deployment");
  });
});

describe("AlertEngine certificate_expiring", () => {
  const certificate = (expiresInMs: number, clock: ManualClock, serial = "01ab"): AlertSignal => ({
    type: "certificate",
    spiffeId: "spiffe://mesh.local/agent/summarizer",
    serial,
    expiresAtMs: clock.nowMs() + expiresInMs,
  });

  it("fires when the expiry comes within `within`, as time passes", () => {
    const { engine, advance, transitions, clock } = setup();
    engine.observe(certificate(20 * 60_000, clock));
    advance(5 * 60_000 - 1);
    expect(transitions).toEqual([]);

    advance(1);
    expect(transitions).toHaveLength(1);
    expect(transitions[0]).toMatchObject({
      alertname: "CertificateExpiring",
      status: "firing",
      labels: { alertname: "CertificateExpiring", severity: "warning", spiffe_id: "spiffe://mesh.local/agent/summarizer" },
      annotations: { summary: "Certificate of spiffe://mesh.local/agent/summarizer expires in 15m" },
    });
  });

  it("resolves once the certificate is renewed, and when its holder leaves", () => {
    const { engine, statuses, clock } = setup();
    engine.observe(certificate(60_000, clock));
    engine.observe(certificate(60 * 60_000, clock, "02cd"));
    engine.observe(certificate(60_000, clock, "03ef"));
    engine.observe({ type: "certificateRemoved", spiffeId: "spiffe://mesh.local/agent/summarizer" });
    expect(statuses()).toEqual(["CertificateExpiring:firing", "CertificateExpiring:resolved"]);
  });
});

describe("AlertEngine flapping and cooldown", () => {
  const immediateDown = rulesFrom([{ name: "InstanceDown", kind: "agent_down", for: 0 }]);

  it("a condition toggling every second fires at most once per cooldown", () => {
    const { engine, clock, transitions } = setup(immediateDown, 60_000);
    const startMs = clock.nowMs();
    for (let second = 0; second < 120; second += 1) {
      engine.observe(second % 2 === 0 ? unhealthy : ready);
      engine.evaluate();
      clock.advance(1_000);
    }
    const firedAtSeconds = transitions.filter((alert) => alert.status === "firing").map((alert) => (alert.startsAtMs - startMs) / 1_000);
    // Fired at 0 s, resolved at 1 s, so nothing fires again before 61 s; the next time it is
    // down after that is 62 s. Two firings in two minutes instead of sixty.
    expect(firedAtSeconds).toEqual([0, 62]);
    expect(transitions.map((alert) => alert.status)).toEqual(["firing", "resolved", "firing", "resolved"]);
  });

  it("with a `for`, a condition that never holds long enough never fires", () => {
    const { engine, advance, transitions } = setup();
    for (let second = 0; second < 300; second += 1) {
      engine.observe(second % 2 === 0 ? unhealthy : ready);
      advance(1_000);
    }
    expect(transitions).toEqual([]);
  });

  it("a condition that keeps holding through the cooldown fires again when the cooldown ends", () => {
    const { engine, advance, clock, transitions } = setup(immediateDown, 60_000);
    engine.observe(unhealthy);
    engine.observe(ready);
    const resolvedAtMs = clock.nowMs();
    engine.observe(unhealthy);
    advance(59_999);
    expect(transitions.map((alert) => alert.status)).toEqual(["firing", "resolved"]);

    advance(1);
    expect(transitions.map((alert) => alert.status)).toEqual(["firing", "resolved", "firing"]);
    expect(transitions[2]?.startsAtMs).toBe(resolvedAtMs + 60_000);
  });

  it("after the cooldown has passed, a new problem fires at once again", () => {
    const { engine, advance, transitions } = setup(immediateDown, 60_000);
    engine.observe(unhealthy);
    engine.observe(ready);
    advance(60_000);
    engine.observe(unhealthy);
    expect(transitions.map((alert) => alert.status)).toEqual(["firing", "resolved", "firing"]);
  });
});

describe("AlertEngine rule options", () => {
  it("keyPrefixes limit a rule to matching keys, so keys can have their own thresholds", () => {
    const rules = rulesFrom([
      { name: "SlowSummaries", kind: "latency_p99_high", thresholdMs: 500, for: 0, keyPrefixes: ["capability/summarize"] },
      { name: "SlowAnything", kind: "latency_p99_high", thresholdMs: 5_000, for: 0 },
    ]);
    const { engine, statuses } = setup(rules);
    engine.observe({ type: "latencyP99", key: "capability/tokenize", valueMs: 800 });
    engine.observe({ type: "latencyP99", key: "capability/summarize", valueMs: 800 });
    expect(statuses()).toEqual(["SlowSummaries:firing"]);
  });

  it("rule labels are added to the alert and can be used in templates", () => {
    const rules = rulesFrom([{ name: "Down", kind: "agent_down", for: 0, labels: { team: "search" }, summary: "{{team}}: {{agent}} {{state}}" }]);
    const { engine, transitions } = setup(rules);
    engine.observe(unhealthy);
    expect(transitions[0]?.labels).toMatchObject({ team: "search", alertname: "Down" });
    expect(transitions[0]?.annotations.summary).toBe("search: summarizer UNHEALTHY");
  });

  it("a throwing listener does not stop other listeners or the engine", () => {
    const { engine, transitions, sink } = setup(rulesFrom([{ name: "Down", kind: "agent_down", for: 0 }]));
    engine.onTransition(() => {
      throw new Error("listener bug");
    });
    const later: Alert[] = [];
    engine.onTransition((alert) => later.push(alert));
    engine.observe(unhealthy);
    expect(transitions).toHaveLength(1);
    expect(later).toHaveLength(1);
    expect(sink.lines.some((line) => line.msg === "alert listener failed")).toBe(true);
  });

  it("unsubscribed listeners hear nothing more", () => {
    const { engine } = setup(rulesFrom([{ name: "Down", kind: "agent_down", for: 0 }]));
    const heard: Alert[] = [];
    const unsubscribe = engine.onTransition((alert) => heard.push(alert));
    unsubscribe();
    engine.observe(unhealthy);
    expect(heard).toEqual([]);
  });
});

describe("AlertEngine log and gauge", () => {
  it("logs each firing and each resolve exactly once, with alertname, severity and labels", () => {
    const { engine, advance, sink } = setup();
    engine.observe(unhealthy);
    for (let second = 0; second < 60; second += 1) {
      engine.observe(unhealthy);
      advance(1_000);
    }
    engine.observe(ready);
    engine.observe(ready);
    advance(1_000);

    const alertLines = sink.lines.filter((line) => line.component === "alerts");
    expect(alertLines.map((line) => line.msg)).toEqual(["alert firing", "alert resolved"]);
    expect(alertLines[0]).toMatchObject({
      alertname: "AgentDown",
      severity: "critical",
      labels: { instance_id: "i-1", agent: "summarizer", deployment: "summarizer" },
    });
    expect(alertLines[1]).toMatchObject({ alertname: "AgentDown", severity: "critical", durationMs: 30_000 });
  });

  it("agentmesh_alerts_firing counts firing alerts by alertname and severity, 0 for quiet rules", async () => {
    const { engine, advance, registry } = setup();
    engine.observe(unhealthy);
    engine.observe({ ...unhealthy, instanceId: "i-2" });
    engine.observe({ ...crashLoop, instanceId: "i-3" });
    advance(30_000);

    const gauge = await registry.getSingleMetric("agentmesh_alerts_firing")?.get();
    const byName = Object.fromEntries((gauge?.values ?? []).map((sample) => [`${sample.labels.alertname}/${sample.labels.severity}`, sample.value]));
    expect(byName).toEqual({
      "AgentDown/critical": 2,
      "AgentCrashLoop/critical": 1,
      "DeploymentBelowMinReady/warning": 0,
      "ErrorRateHigh/warning": 0,
      "LatencyP99High/warning": 0,
      "CertificateExpiring/warning": 0,
      "DataPlaneRefusing/critical": 0,
    });

    engine.observe(ready);
    const after = await registry.getSingleMetric("agentmesh_alerts_firing")?.get();
    expect(after?.values.find((sample) => sample.labels.alertname === "AgentDown")?.value).toBe(1);
  });
});

describe("AlertEngine data plane refusing calls", () => {
  const refusals = (count: number, reason = "signature_invalid", sidecar = "host-a"): AlertSignal => ({ type: "dataplaneRefusals", sidecar, reason, count });

  it("fires once a sidecar refused minRefusals calls within the window, naming the reasons, and resolves when the window is quiet", () => {
    const { engine, advance, transitions, statuses } = setup();
    engine.observe(refusals(4));
    advance(10_000);
    engine.observe(refusals(5, "client_certificate_expired_or_not_yet_valid"));
    expect(statuses()).toEqual([]);
    engine.observe(refusals(1));
    expect(statuses()).toEqual(["DataPlaneRefusing:firing"]);
    expect(transitions[0]?.labels).toEqual({ alertname: "DataPlaneRefusing", severity: "critical", sidecar: "host-a" });
    expect(transitions[0]?.annotations.description).toBe(
      "Sidecar host-a refused 10 calls at admission in the last 1m (signature_invalid ×5, client_certificate_expired_or_not_yet_valid ×5)",
    );
    // Refusals keep coming: still one alert.
    engine.observe(refusals(50));
    advance(30_000);
    expect(statuses()).toEqual(["DataPlaneRefusing:firing"]);
    // A minute without refusals: resolved.
    advance(60_000);
    expect(statuses()).toEqual(["DataPlaneRefusing:firing", "DataPlaneRefusing:resolved"]);
  });

  it("counts each sidecar on its own, and refusals spread thinner than the window never fire", () => {
    const { engine, advance, statuses } = setup();
    for (let minute = 0; minute < 5; minute += 1) {
      engine.observe(refusals(6, "signature_invalid", "host-a"));
      engine.observe(refusals(6, "signature_invalid", "host-b"));
      advance(61_000);
    }
    expect(statuses()).toEqual([]);
  });
});
