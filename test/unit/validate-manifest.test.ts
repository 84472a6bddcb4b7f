import { describe, expect, it } from "vitest";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { LabelRequirement_Operator } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { AgentManifest } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { validateEndpoint, validateLabelSelector, validateManifest } from "../../services/registry/domain/validate.js";
import { manifest } from "../helpers/manifests.js";

function problem(attempt: () => void): string {
  try {
    attempt();
  } catch (error) {
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).kind).toBe("invalidArgument");
    return (error as MeshError).message;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

const capability = (name: string, version = "1.0.0", attributes: Record<string, string> = {}) => ({ name, version, attributes });

describe("validateManifest", () => {
  it("accepts a complete manifest", () => {
    expect(() =>
      validateManifest(
        manifest({
          labels: { "example.com/team": "data", tier: "" },
          capabilities: [capability("sql.query", "2.1.0-rc.1", { dialect: "postgres" }), capability("text.word-stats")],
          agentCardJson: JSON.stringify({ name: "sql", skills: [] }),
        }),
      ),
    ).not.toThrow();
  });

  it.each<[string, Partial<AgentManifest>, string]>([
    ["empty name", { name: "" }, "manifest.name: required"],
    ["upper-case name", { name: "SqlAgent" }, "manifest.name: must be a DNS label"],
    ["name ending in dash", { name: "agent-" }, "manifest.name: must be a DNS label"],
    ["long name", { name: "a".repeat(64) }, "manifest.name: longer than 63"],
    ["missing version", { version: "" }, "manifest.version: required"],
    ["v-prefixed version", { version: "v1.0.0" }, "manifest.version: not a semver"],
    ["no capabilities", { capabilities: [] }, "manifest.capabilities: at least one"],
    ["too many capabilities", { capabilities: Array.from({ length: 65 }, (_, index) => capability(`c.n${index}`)) }, "more than 64"],
    ["capability with space", { capabilities: [capability("sql query")] }, "manifest.capabilities[0].name: must be dotted lowercase"],
    ["capability upper-case", { capabilities: [capability("Sql.query")] }, "capabilities[0].name"],
    ["capability empty segment", { capabilities: [capability("sql..query")] }, "capabilities[0].name"],
    ["duplicate capability", { capabilities: [capability("a.b"), capability("a.b", "2.0.0")] }, "capabilities[1].name: duplicate"],
    ["capability bad version", { capabilities: [capability("a.b", "1")] }, "capabilities[0].version"],
    ["attribute value too large", { capabilities: [capability("a.b", "1.0.0", { k: "x".repeat(257) })] }, "over 256 bytes"],
    ["label key with space", { labels: { "bad key": "v" } }, "manifest.labels[bad key]: key must be"],
    ["label key bad prefix", { labels: { "Bad_Prefix/name": "v" } }, "key prefix must be a DNS subdomain"],
    ["label value with slash", { labels: { env: "a/b" } }, "manifest.labels[env]: value must be"],
    ["too many labels", { labels: Object.fromEntries(Array.from({ length: 65 }, (_, index) => [`k${index}`, "v"])) }, "more than 64 labels"],
    ["heartbeat too fast", { healthPolicy: { heartbeatIntervalMs: 99, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 } }, "heartbeat_interval_ms: must be 100-60000"],
    ["heartbeat too slow", { healthPolicy: { heartbeatIntervalMs: 60_001, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 } }, "heartbeat_interval_ms"],
    ["error rate over 1", { healthPolicy: { heartbeatIntervalMs: 0, degradedErrorRate: 1.5, readinessTimeoutMs: 0, hungRestartAfterMs: 0 } }, "degraded_error_rate"],
    ["hung restart bound over 24 h", { healthPolicy: { heartbeatIntervalMs: 0, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 86_400_001 } }, "manifest.health_policy.hung_restart_after_ms: at most 86400000 (24 h)"],
    ["negative invoke rate", { resources: { memoryLimitBytes: 0, invokeRatePerSecond: -1, invokeBurst: 0, maxInFlight: 0, maxMessageBytes: 0 } }, "invoke_rate_per_second"],
    ["agent card not JSON", { agentCardJson: "{nope" }, "agent_card_json: must be a JSON object"],
    ["agent card an array", { agentCardJson: "[]" }, "agent_card_json: must be a JSON object"],
    ["agent card too large", { agentCardJson: JSON.stringify({ text: "x".repeat(70_000) }) }, "agent_card_json: over"],
  ])("rejects %s", (_name, overrides, expected) => {
    expect(problem(() => validateManifest(manifest(overrides)))).toContain(expected);
  });

  it("rejects a missing manifest", () => expect(problem(() => validateManifest(undefined))).toBe("manifest: required"));
});

describe("validateEndpoint", () => {
  it.each(["127.0.0.1:7430", "agent-a.local:80", "[::1]:9000", ""])("accepts %s", (endpoint) => expect(() => validateEndpoint(endpoint)).not.toThrow());
  it.each(["no-port", "host:0", "host:70000", "host:port", "a b:80"])("rejects %s", (endpoint) => expect(problem(() => validateEndpoint(endpoint))).toMatch(/^endpoint: /));
});

describe("validateLabelSelector", () => {
  it.each([
    [{ matchLabels: { "bad key": "x" }, matchExpressions: [] }, "match_labels"],
    [{ matchLabels: {}, matchExpressions: [{ key: "env", operator: LabelRequirement_Operator.OPERATOR_IN, values: [] }] }, "values: required"],
    [{ matchLabels: {}, matchExpressions: [{ key: "env", operator: LabelRequirement_Operator.OPERATOR_EXISTS, values: ["x"] }] }, "must be empty"],
    [{ matchLabels: {}, matchExpressions: [{ key: "env", operator: LabelRequirement_Operator.OPERATOR_UNSPECIFIED, values: [] }] }, "unknown operator"],
  ])("rejects %o", (selector, expected) => expect(problem(() => validateLabelSelector(selector))).toContain(expected));
});
