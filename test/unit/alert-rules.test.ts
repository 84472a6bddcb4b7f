import { describe, expect, it } from "vitest";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { parseAlertsConfig, parseAlertsConfigText } from "../../services/alerts/alert-config.js";
import { alertRuleKinds, defaultAlertRules, parseAlertRules } from "../../services/alerts/alert-rules.js";
import { formatDurationMs, parseDurationMs } from "../../services/alerts/duration.js";

function invalidMessage(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    if (error instanceof MeshError && error.kind === "invalidArgument") return error.message;
    throw error;
  }
  throw new Error("expected MeshError(invalidArgument)");
}

describe("default alert rules", () => {
  it("cover each kind exactly once", () => {
    expect(defaultAlertRules.map((rule) => rule.kind).sort()).toEqual([...alertRuleKinds].sort());
  });

  it("are what an empty configuration gives", () => {
    expect(parseAlertRules(undefined)).toEqual(defaultAlertRules);
    expect(parseAlertsConfig(undefined)).toEqual({
      cooldownMs: 60_000,
      evaluationIntervalMs: 1_000,
      externalUrl: "",
      rules: defaultAlertRules,
      receivers: [],
    });
  });
});

describe("parseAlertRules", () => {
  it("overrides only the fields an entry gives for a default rule, keeping its place", () => {
    const rules = parseAlertRules([{ name: "ErrorRateHigh", threshold: 0.1, for: "5m" }]);
    const errorRate = rules.find((rule) => rule.name === "ErrorRateHigh");
    expect(errorRate).toMatchObject({ kind: "error_rate_high", threshold: 0.1, forMs: 300_000, severity: "warning", keyPrefixes: [] });
    expect(rules.map((rule) => rule.name)).toEqual(defaultAlertRules.map((rule) => rule.name));
  });

  it("removes a rule with enabled: false", () => {
    const rules = parseAlertRules([{ name: "LatencyP99High", enabled: false }]);
    expect(rules.map((rule) => rule.name)).not.toContain("LatencyP99High");
    expect(rules).toHaveLength(defaultAlertRules.length - 1);
  });

  it("adds a new rule from its kind's defaults, after the defaults", () => {
    const rules = parseAlertRules([{ name: "SlowSummaries", kind: "latency_p99_high", thresholdMs: 800, keyPrefixes: ["capability/summarize"] }]);
    expect(rules.at(-1)).toEqual({
      ...defaultAlertRules.find((rule) => rule.kind === "latency_p99_high"),
      name: "SlowSummaries",
      thresholdMs: 800,
      keyPrefixes: ["capability/summarize"],
    });
  });

  it("can start from no rules at all", () => {
    expect(parseAlertRules([{ name: "Down", kind: "agent_down" }], { includeDefaults: false }).map((rule) => rule.name)).toEqual(["Down"]);
  });

  it("compiles a data-plane refusal rule's count and window", () => {
    const [rule] = parseAlertRules([{ name: "Refusing", kind: "dataplane_refusing", minRefusals: 3, window: "30s" }], { includeDefaults: false });
    expect(rule).toMatchObject({ kind: "dataplane_refusing", minRefusals: 3, windowMs: 30_000, severity: "critical", forMs: 0 });
  });

  it("compiles durations and labels", () => {
    const [rule] = parseAlertRules(
      [{ name: "Expiring", kind: "certificate_expiring", within: "1h30m", for: "1m30s", severity: "critical", labels: { team: "platform" } }],
      { includeDefaults: false },
    );
    expect(rule).toMatchObject({ withinMs: 5_400_000, forMs: 90_000, severity: "critical", labels: { team: "platform" } });
  });

  const invalidRules: Array<[string, unknown, string]> = [
    ["not a list", { name: "x" }, "rules: must be a list of rules"],
    ["an entry that is not an object", ["AgentDown"], "rules[0]: must be an object"],
    ["a missing name", [{ kind: "agent_down" }], "rules[0].name: required"],
    ["a name with a space", [{ name: "Agent Down", kind: "agent_down" }], "rules[0].name: required"],
    ["a duplicate name", [{ name: "A", kind: "agent_down" }, { name: "A", kind: "crash_loop" }], "rules[1].name: duplicate rule name A"],
    ["a new rule without kind", [{ name: "Mine" }], "rules[0].kind: required for a new rule"],
    ["an unknown kind", [{ name: "Mine", kind: "disk_full" }], "rules[0].kind: must be one of"],
    ["a default rule given another kind", [{ name: "AgentDown", kind: "crash_loop" }], "rules[0].kind: default rule AgentDown has kind agent_down"],
    ["an unknown field", [{ name: "AgentDown", thresold: 1 }], "rules[0].thresold: unknown field"],
    ["a field of another kind", [{ name: "AgentDown", threshold: 0.1 }], "rules[0].threshold: not a field of kind agent_down"],
    ["an unknown severity", [{ name: "AgentDown", severity: "page" }], "rules[0].severity: must be one of critical, warning, info"],
    ["a malformed for", [{ name: "AgentDown", for: "30 seconds" }], 'rules[0].for: "30 seconds" is not a duration'],
    ["a negative for", [{ name: "AgentDown", for: -1 }], "rules[0].for: must be a duration such as 500ms, 30s, 1m30s, 1.5h, 7d"],
    ["a for without unit", [{ name: "AgentDown", for: 90_000 }], "rules[0].for: needs a unit, like 90000s or 90000ms"],
    ["an error-rate threshold of 1", [{ name: "ErrorRateHigh", threshold: 1 }], "rules[0].threshold: must be a fraction"],
    ["an error-rate threshold as text", [{ name: "ErrorRateHigh", threshold: "5%" }], "rules[0].threshold: must be a fraction"],
    ["a zero latency threshold", [{ name: "LatencyP99High", thresholdMs: 0 }], "rules[0].thresholdMs: must be a number above 0"],
    ["an empty key prefix", [{ name: "LatencyP99High", keyPrefixes: [""] }], "rules[0].keyPrefixes: must be a list of non-empty strings"],
    ["a zero within", [{ name: "CertificateExpiring", within: "0s" }], "rules[0].within: must be longer than 0"],
    ["a fractional minRefusals", [{ name: "DataPlaneRefusing", minRefusals: 2.5 }], "rules[0].minRefusals: must be a whole number above 0"],
    ["a zero minRefusals", [{ name: "DataPlaneRefusing", minRefusals: 0 }], "rules[0].minRefusals: must be a whole number above 0"],
    ["a zero refusal window", [{ name: "DataPlaneRefusing", window: "0s" }], "rules[0].window: must be longer than 0"],
    ["labels that are not an object", [{ name: "AgentDown", labels: ["team"] }], "rules[0].labels: must be an object"],
    ["a label overriding alertname", [{ name: "AgentDown", labels: { alertname: "x" } }], "rules[0].labels.alertname: is set by the engine"],
    ["a label overriding a subject label", [{ name: "AgentDown", labels: { instance_id: "x" } }], "rules[0].labels.instance_id: is set by the engine"],
    ["a label with a bad name", [{ name: "AgentDown", labels: { "team-name": "x" } }], "rules[0].labels.team-name: label names are"],
    ["a label with a number value", [{ name: "AgentDown", labels: { tier: 1 } }], "rules[0].labels.tier: must be a string"],
    ["a placeholder the kind does not know", [{ name: "AgentDown", summary: "{{deploymnet}} down" }], "rules[0].summary: unknown placeholder {{deploymnet}}"],
    ["a placeholder of another kind", [{ name: "ErrorRateHigh", description: "{{value_ms}}" }], "rules[0].description: unknown placeholder {{value_ms}}"],
    ["enabled as text", [{ name: "AgentDown", enabled: "no" }], "rules[0].enabled: must be true or false"],
  ];

  it.each(invalidRules)("refuses %s", (_case, input, message) => {
    expect(invalidMessage(() => parseAlertRules(input))).toContain(message);
  });
});

describe("parseAlertsConfig", () => {
  it("compiles a full configuration from YAML", () => {
    const config = parseAlertsConfigText(`
cooldown: 2m
evaluationInterval: 500ms
externalUrl: https://mesh.example:9464
rules:
  - name: AgentDown
    for: 1m
receivers:
  - name: ops
    url: http://127.0.0.1:9000/hook
    timeout: 3s
    maxAttempts: 3
  - name: chat
    url: https://chat.example/hook?token=abc
    sendResolved: false
`);
    expect(config).toMatchObject({ cooldownMs: 120_000, evaluationIntervalMs: 500, externalUrl: "https://mesh.example:9464" });
    expect(config.rules.find((rule) => rule.name === "AgentDown")?.forMs).toBe(60_000);
    expect(config.receivers).toEqual([
      { name: "ops", url: "http://127.0.0.1:9000/hook", timeoutMs: 3_000, maxAttempts: 3, sendResolved: true },
      { name: "chat", url: "https://chat.example/hook?token=abc", timeoutMs: 10_000, maxAttempts: 5, sendResolved: false },
    ]);
  });

  it("drops the default rules with defaultRules: false", () => {
    expect(parseAlertsConfig({ defaultRules: false }).rules).toEqual([]);
  });

  const invalidConfigs: Array<[string, unknown, string]> = [
    ["a list", [], "alerts: must be an object"],
    ["an unknown field", { cooldownMs: 5 }, "alerts.cooldownMs: unknown field"],
    ["a malformed cooldown", { cooldown: "1 minute" }, "alerts.cooldown:"],
    ["a too short evaluation interval", { evaluationInterval: "1ms" }, "alerts.evaluationInterval: must be at least 10ms"],
    ["a non-http externalUrl", { externalUrl: "ftp://mesh" }, "alerts.externalUrl: must be an http or https URL"],
    ["defaultRules as text", { defaultRules: "yes" }, "alerts.defaultRules: must be true or false"],
    ["a bad rule, with the full path", { rules: [{ name: "AgentDown", for: "soon" }] }, 'alerts.rules[0].for: "soon" is not a duration'],
    ["receivers not a list", { receivers: { name: "ops" } }, "alerts.receivers: must be a list of receivers"],
    ["a receiver without url", { receivers: [{ name: "ops" }] }, "alerts.receivers[0].url: required"],
    ["a receiver without name", { receivers: [{ url: "http://x" }] }, "alerts.receivers[0].name: required"],
    ["a receiver with a non-URL", { receivers: [{ name: "ops", url: "not a url" }] }, "alerts.receivers[0].url: must be an http or https URL"],
    ["a receiver with a file URL", { receivers: [{ name: "ops", url: "file:///etc/passwd" }] }, "alerts.receivers[0].url: must be an http or https URL"],
    ["a zero timeout", { receivers: [{ name: "ops", url: "http://x", timeout: 0 }] }, "alerts.receivers[0].timeout: must be above 0"],
    ["zero attempts", { receivers: [{ name: "ops", url: "http://x", maxAttempts: 0 }] }, "alerts.receivers[0].maxAttempts: must be an integer from 1 to 20"],
    ["fractional attempts", { receivers: [{ name: "ops", url: "http://x", maxAttempts: 2.5 }] }, "alerts.receivers[0].maxAttempts:"],
    ["an unknown receiver field", { receivers: [{ name: "ops", url: "http://x", headers: {} }] }, "alerts.receivers[0].headers: unknown field"],
    [
      "duplicate receiver names",
      { receivers: [{ name: "ops", url: "http://x" }, { name: "ops", url: "http://y" }] },
      "alerts.receivers[1].name: duplicate receiver name ops",
    ],
  ];

  it.each(invalidConfigs)("refuses %s", (_case, input, message) => {
    expect(invalidMessage(() => parseAlertsConfig(input))).toContain(message);
  });

  it("never echoes a receiver URL, which may hold a token", () => {
    const message = invalidMessage(() => parseAlertsConfig({ receivers: [{ name: "ops", url: "gopher://secret-token@x" }] }));
    expect(message).not.toContain("secret-token");
  });

  it("refuses text that is not YAML, naming the line", () => {
    expect(invalidMessage(() => parseAlertsConfigText("rules:\n  - name: [unclosed\n"))).toMatch(/^alerts: not valid YAML/);
  });
});

describe("durations", () => {
  it.each([
    ["0", 0],
    ["500ms", 500],
    ["30s", 30_000],
    ["5m", 300_000],
    ["1h30m", 5_400_000],
    ["2d", 172_800_000],
    ["1w", 604_800_000],
    ["1.5s", 1_500],
    [0, 0],
  ])("reads %s as %i ms", (input, expectedMs) => {
    expect(parseDurationMs(input, "for")).toBe(expectedMs);
  });

  it.each([[""], ["30"], ["1m1h"], ["1y"], ["-5s"], ["30 s"], [1_500], [1.5], [-1], [null], [true]])("refuses %j", (input) => {
    expect(invalidMessage(() => parseDurationMs(input, "for"))).toMatch(/^for: /);
  });

  it.each([
    [0, "0s"],
    [500, "500ms"],
    [90_000, "1m30s"],
    [5_400_000, "1h30m"],
    [-5, "0s"],
  ])("formats %i ms as %s, which reads back", (durationMs, text) => {
    expect(formatDurationMs(durationMs)).toBe(text);
    expect(parseDurationMs(text, "x")).toBe(Math.max(0, durationMs));
  });
});
