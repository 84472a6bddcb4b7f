import { describe, expect, it } from "vitest";
import type { Alert } from "../../services/alerts/alert-engine.js";
import { labelsFingerprint } from "../../services/alerts/alert-fingerprint.js";
import { type AlertPhase, nextAlertStep } from "../../services/alerts/alert-phase.js";
import { renderTemplate, templatePlaceholders } from "../../services/alerts/alert-template.js";
import { buildWebhookMessage } from "../../services/alerts/alertmanager-payload.js";

describe("labelsFingerprint", () => {
  // Vectors from prometheus/common model/signature_test.go, the function Alertmanager uses.
  it.each([
    [{}, "cbf29ce484222325"],
    [{ name: "garland, briggs", fear: "love is not enough" }, "507a62d79ee76c9a"],
  ])("matches Prometheus for %j", (labels, fingerprint) => {
    expect(labelsFingerprint(labels)).toBe(fingerprint);
  });

  it("does not depend on label order", () => {
    expect(labelsFingerprint({ a: "b", c: "d" })).toBe(labelsFingerprint({ c: "d", a: "b" }));
    expect(labelsFingerprint({ a: "b", c: "d" })).not.toBe(labelsFingerprint({ a: "d", c: "b" }));
  });
});

describe("nextAlertStep", () => {
  const pending = (refireAfterMs = 0): AlertPhase => ({ name: "pending", refireAfterMs });
  const firing: AlertPhase = { name: "firing", startsAtMs: 0 };
  it.each([
    ["pending, condition held for `for`", pending(), 1_000, 1_000, 2_000, "fire"],
    ["pending, condition held 1 ms short", pending(), 1_000, 1_000, 1_999, "stay"],
    ["pending, for 0", pending(), 5_000, 0, 5_000, "fire"],
    ["pending in cooldown, condition held long enough", pending(10_000), 0, 0, 9_999, "stay"],
    ["pending, cooldown just over", pending(10_000), 0, 0, 10_000, "fire"],
    ["pending, condition gone, cooldown over", pending(10_000), undefined, 0, 10_000, "forget"],
    ["pending, condition gone, in cooldown", pending(10_000), undefined, 0, 9_999, "stay"],
    ["firing, condition holds", firing, 0, 0, 50_000, "stay"],
    ["firing, condition gone", firing, undefined, 0, 50_000, "resolve"],
  ] as const)("%s → %s", (_case, phase, sinceMs, forMs, nowMs, step) => {
    expect(nextAlertStep(phase, { sinceMs, forMs }, nowMs)).toBe(step);
  });
});

describe("alert templates", () => {
  it("fills placeholders, with or without spaces, and leaves unknown ones empty", () => {
    expect(renderTemplate("{{agent}} is {{ state }}{{missing}}.", { agent: "a", state: "DOWN" })).toBe("a is DOWN.");
    expect(templatePlaceholders("{{agent}} {{ state }} {not} {{1x}}")).toEqual(["agent", "state"]);
  });
});

describe("buildWebhookMessage", () => {
  const alert = (instanceId: string, status: Alert["status"]): Alert => ({
    fingerprint: labelsFingerprint({ alertname: "AgentDown", instance_id: instanceId }),
    alertname: "AgentDown",
    kind: "agent_down",
    severity: "critical",
    status,
    labels: { severity: "critical", alertname: "AgentDown", instance_id: instanceId, agent: "summarizer" },
    annotations: { summary: `${instanceId} down`, description: "heartbeat timeout" },
    startsAtMs: Date.UTC(2025, 0, 2, 3, 4, 5, 678),
    endsAtMs: status === "resolved" ? Date.UTC(2025, 0, 2, 3, 9, 5, 678) : undefined,
  });

  it("keeps only shared pairs in commonLabels and commonAnnotations", () => {
    const message = buildWebhookMessage("ops", [alert("i-1", "firing"), alert("i-2", "firing")], "");
    expect(message.commonLabels).toEqual({ agent: "summarizer", alertname: "AgentDown", severity: "critical" });
    expect(message.commonAnnotations).toEqual({ description: "heartbeat timeout" });
    expect(message.groupLabels).toEqual({ alertname: "AgentDown" });
    expect(message.groupKey).toBe('{}:{alertname="AgentDown"}');
  });

  it("is firing when any alert fires, with Go's zero time as endsAt while firing", () => {
    const message = buildWebhookMessage("ops", [alert("i-1", "resolved"), alert("i-2", "firing")], "http://mesh:9464");
    expect(message.status).toBe("firing");
    expect(message.alerts.map((entry) => [entry.status, entry.startsAt, entry.endsAt])).toEqual([
      ["resolved", "2025-01-02T03:04:05.678Z", "2025-01-02T03:09:05.678Z"],
      ["firing", "2025-01-02T03:04:05.678Z", "0001-01-01T00:00:00Z"],
    ]);
    expect(buildWebhookMessage("ops", [alert("i-1", "resolved")], "").status).toBe("resolved");
  });

  it("writes labels with sorted keys, as Go's encoder does", () => {
    const message = buildWebhookMessage("ops", [alert("i-1", "firing")], "");
    expect(Object.keys(message.alerts[0]?.labels ?? {})).toEqual(["agent", "alertname", "instance_id", "severity"]);
  });
});
