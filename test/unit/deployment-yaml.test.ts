import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { RestartPolicy_Mode } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { parseDeploymentYaml } from "../../services/orchestrator/deployment-yaml.js";

const minimal = `
name: word-stats
version: 1.0.0
capabilities: [text.word-stats@1.0.0]
process:
  command: node
`;

function problem(text: string): string {
  try {
    parseDeploymentYaml(text);
  } catch (error) {
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).kind).toBe("invalidArgument");
    return (error as MeshError).message;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("parseDeploymentYaml", () => {
  it("reads the shipped example with every friendly form compiled", () => {
    const [deployment, ...rest] = parseDeploymentYaml(readFileSync("examples/deployments/word-stats.yaml", "utf8"));
    expect(rest).toEqual([]);
    expect(deployment).toMatchObject({
      name: "word-stats",
      replicas: 3,
      manifest: {
        name: "word-stats",
        version: "1.0.0",
        capabilities: [{ name: "text.word-stats", version: "1.0.0", attributes: {} }],
        resources: { memoryLimitBytes: 256 * 1024 * 1024, maxInFlight: 64 },
        healthPolicy: { heartbeatIntervalMs: 1000, readinessTimeoutMs: 30_000 },
      },
      process: { command: "node", args: ["dist/examples/agents/word-stats.js"], env: { LOG_LEVEL: "info" } },
      restartPolicy: { mode: RestartPolicy_Mode.MODE_ALWAYS, maxRestarts: 5, windowMs: 60_000, initialBackoffMs: 200, maxBackoffMs: 30_000 },
      strategy: { maxSurge: 1, maxUnavailable: 0, readyTimeoutMs: 30_000, maxErrorRate: 0.5, canaryWeightPercent: 0 },
    });
  });

  it("compiles health.hungRestartAfter, 0 (the default: 10 heartbeat intervals) when left out", () => {
    expect(parseDeploymentYaml(`${minimal}health: {hungRestartAfter: 2500ms}\n`)[0]?.manifest?.healthPolicy?.hungRestartAfterMs).toBe(2500);
    expect(parseDeploymentYaml(`${minimal}health: {heartbeatInterval: 1s}\n`)[0]?.manifest?.healthPolicy?.hungRestartAfterMs).toBe(0);
  });

  it("fills defaults for what a minimal file leaves out", () => {
    const [deployment] = parseDeploymentYaml(minimal);
    expect(deployment).toMatchObject({ replicas: 1, minReady: 0, strategy: undefined, restartPolicy: undefined, generation: 0 });
    expect(deployment?.process).toEqual({ command: "node", args: [], env: {}, cwd: "", image: "" });
  });

  it("reads long-form capabilities, scalar env values, labels, an agent card and a partial strategy", () => {
    const [deployment] = parseDeploymentYaml(`
name: sql-agent
version: 2.1.0-rc.1
replicas: 2
minReady: 1
capabilities:
  - name: sql.query
    version: 2.1.0
    attributes: {dialect: postgres}
labels: {tier: backend, canary: true}
agentCard: {name: sql, skills: []}
process:
  image: ghcr.io/example/sql-agent:2.1.0
  env: {PORT: 8080, DEBUG: false}
restartPolicy: {mode: on-failure}
strategy: {readyTimeout: 1m30s, canaryWeightPercent: 10}
resources: {invokeRatePerSecond: 12.5, maxMessageSize: 4M}
`);
    expect(deployment?.manifest?.capabilities).toEqual([{ name: "sql.query", version: "2.1.0", attributes: { dialect: "postgres" } }]);
    expect(deployment?.manifest?.labels).toEqual({ tier: "backend", canary: "true" });
    expect(JSON.parse(deployment?.manifest?.agentCardJson ?? "")).toEqual({ name: "sql", skills: [] });
    expect(deployment?.process?.env).toEqual({ PORT: "8080", DEBUG: "false" });
    expect(deployment?.restartPolicy).toEqual({ mode: RestartPolicy_Mode.MODE_ON_FAILURE, maxRestarts: 0, windowMs: 0, initialBackoffMs: 0, maxBackoffMs: 0 });
    // Omitted surge/unavailable are written out as their defaults; 0 keeps "default" where the proto says so.
    expect(deployment?.strategy).toEqual({ maxSurge: 1, maxUnavailable: 0, readyTimeoutMs: 90_000, maxErrorRate: 0, canaryWeightPercent: 10 });
    expect(deployment?.manifest?.resources).toMatchObject({ invokeRatePerSecond: 12.5, maxMessageBytes: 4_000_000 });
  });

  it("reads several documents and skips empty ones", () => {
    const text = `${minimal}---\n${minimal.replace("word-stats\n", "tokenizer\n")}---\n# only a comment\n`;
    expect(parseDeploymentYaml(text).map((deployment) => deployment.name)).toEqual(["word-stats", "tokenizer"]);
  });

  it.each<[string, string, number | string]>([
    ["500ms", "500ms", 500],
    ["30s", "30s", 30_000],
    ["1.5s", "1.5s", 1500],
    ["1m30s", "1m30s", 90_000],
    ["2h", "2h", 7_200_000],
    ["a bare number", "30", "health.readinessTimeout: needs a unit, like 30s or 30ms"],
    ["days", "1d", 86_400_000],
    ["an unknown unit", "30x", 'health.readinessTimeout: "30x" is not a duration: write a number and a unit (ms, s, m, h, d, w), such as 500ms, 30s, 1m30s, 1.5h, 7d'],
    ["a fraction of a millisecond", "0.5ms", 'health.readinessTimeout: "0.5ms" is not a whole number of milliseconds'],
  ])("compiles the duration %s", (_label, written, expected) => {
    const text = `${minimal}health:\n  readinessTimeout: ${written}\n`;
    if (typeof expected === "number") expect(parseDeploymentYaml(text)[0]?.manifest?.healthPolicy?.readinessTimeoutMs).toBe(expected);
    else expect(problem(text)).toBe(`${expected} (line 8)`);
  });

  it.each<[string, string, string]>([
    ["empty text", "", "file: no deployment found"],
    ["a syntax error", "name: [\n", "yaml: "],
    ["a duplicate key", `${minimal}name: again\n`, "yaml: Map keys must be unique"],
    ["a list at the top", "- a\n- b\n", "document: must be a mapping"],
    ["an unknown field", `${minimal}replica: 3\n`, "replica: unknown field (expected one of kind, name, version, replicas"],
    ["an unknown nested field", `${minimal}strategy: {maxSurgee: 2}\n`, "strategy.maxSurgee: unknown field (expected one of maxSurge, maxUnavailable, readyTimeout, maxErrorRate, canaryWeightPercent) (line 7)"],
    ["a zero ready timeout", `${minimal}strategy: {readyTimeout: 0s}\n`, "strategy.readyTimeout: must be above 0 (line 7)"],
    ["a ready timeout under a second", `${minimal}strategy: {readyTimeout: 500ms}\n`, "strategy.readyTimeout: must be 1000..3600000 (line 7)"],
    ["a wrong kind", `kind: Service\n${minimal}`, "kind: must be Deployment (line 1)"],
    ["a missing name", minimal.replace("name: word-stats\n", ""), "name: required"],
    ["a numeric version", minimal.replace("1.0.0", "1.0"), 'version: must be a string (quote it, like "1.0") (line 3)'],
    ["a bad semver version", minimal.replace("version: 1.0.0", 'version: "1.0"'), "version: not a semver 2.0.0 version (line 3)"],
    ["missing capabilities", minimal.replace("capabilities: [text.word-stats@1.0.0]\n", ""), "capabilities: at least one required"],
    ["a capability without a version", minimal.replace("@1.0.0", ""), "capabilities[0]: write name@version"],
    ["a bad capability name", minimal.replace("text.word-stats", "Text"), "capabilities[0].name: must be dotted lowercase, like sql.query (line 4)"],
    ["a missing process", minimal.replace("process:\n  command: node\n", ""), "process: required (command or image)"],
    ["a process without command or image", minimal.replace("  command: node\n", "  cwd: /srv\n"), "process.command: command or image required (line 6)"],
    ["args that are not a list", `${minimal}  args: main.mjs\n`, "process.args: must be a list (line 7)"],
    ["an env value that is a map", `${minimal}  env: {A: {b: 1}}\n`, "process.env[A]: must be a string, number or boolean (line 7)"],
    ["a reserved env name", `${minimal}  env: {AGENTMESH_AGENT_ADDR: x}\n`, "process.env[AGENTMESH_AGENT_ADDR]: set by the sidecar"],
    ["negative replicas", `${minimal}replicas: -1\n`, "replicas: must be a whole number >= 0 (line 7)"],
    ["too many replicas", `${minimal}replicas: 5000\n`, "replicas: must be 0..1000 (line 7)"],
    ["fractional replicas", `${minimal}replicas: 2.5\n`, "replicas: must be a whole number >= 0 (line 7)"],
    ["an unknown restart mode", `${minimal}restartPolicy: {mode: sometimes}\n`, "restartPolicy.mode: must be always, on-failure or never (line 7)"],
    ["zero max restarts", `${minimal}restartPolicy: {maxRestarts: 0}\n`, "restartPolicy.maxRestarts: must be at least 1"],
    ["a window without unit", `${minimal}restartPolicy: {window: 60}\n`, "restartPolicy.window: needs a unit"],
    ["a window under a second", `${minimal}restartPolicy: {window: 10ms}\n`, "restartPolicy.window: must be 1000..86400000 (line 7)"],
    ["max backoff below initial", `${minimal}restartPolicy: {initialBackoff: 10s, maxBackoff: 1s}\n`, "restartPolicy.maxBackoff: must be at least initialBackoff (line 7)"],
    [
      "surge and unavailable both 0",
      `${minimal}strategy:\n  maxSurge: 0\n  maxUnavailable: 0\n`,
      "strategy.maxSurge: maxSurge and maxUnavailable may not both be 0 (line 8)",
    ],
    ["an error rate of 0", `${minimal}strategy: {maxErrorRate: 0}\n`, "strategy.maxErrorRate: must be above 0 and at most 1 (line 7)"],
    ["an error rate above 1", `${minimal}strategy: {maxErrorRate: 2}\n`, "strategy.maxErrorRate: must be above 0 and at most 1"],
    ["a canary weight above 100", `${minimal}strategy: {canaryWeightPercent: 150}\n`, "strategy.canaryWeightPercent: must be 0..100 (line 7)"],
    ["a bad memory size", `${minimal}resources: {memoryLimit: 1 gig}\n`, "resources.memoryLimit: must be a size like 256Mi"],
    ["a heartbeat interval that is too short", `${minimal}health: {heartbeatInterval: 50ms}\n`, "health.heartbeatInterval: must be 100-60000 (line 7)"],
    ["a hung restart bound over a day", `${minimal}health: {hungRestartAfter: 25h}\n`, "health.hungRestartAfter: at most 86400000 (24 h) (line 7)"],
    ["a label with a bad key", `${minimal}labels: {"-x": a}\n`, "labels[-x]: key must be"],
    ["two documents with the same name", `${minimal}---${minimal}`, "document 2: name: duplicate deployment word-stats (line 8)"],
    ["a bad second document", `${minimal}---\nname: other\n`, "document 2: version: required (line 8)"],
  ])("rejects %s, naming the YAML path", (_label, text, expected) => {
    expect(problem(text)).toContain(expected);
  });

  it("accepts every field docs/deployments.md documents, and the docs name every field it accepts", () => {
    const everyField = `
kind: Deployment
name: full
version: 1.0.0
replicas: 2
minReady: 1
capabilities: [{name: text.full, version: 1.0.0, attributes: {lang: en}}]
labels: {team: docs}
resources: {memoryLimit: 1Gi, invokeRatePerSecond: 10, invokeBurst: 20, maxInFlight: 8, maxMessageSize: 1Mi}
health: {heartbeatInterval: 500ms, degradedErrorRate: 0.2, readinessTimeout: 10s, hungRestartAfter: 5s}
agentCard: {name: full}
process: {command: node, args: [a.mjs], env: {A: b}, cwd: /srv, image: example/full:1}
restartPolicy: {mode: never, maxRestarts: 3, window: 30s, initialBackoff: 100ms, maxBackoff: 5s}
strategy: {maxSurge: 2, maxUnavailable: 1, readyTimeout: 45s, maxErrorRate: 0.3, canaryWeightPercent: 20}
`;
    expect(parseDeploymentYaml(everyField)).toHaveLength(1);
    const docs = readFileSync("docs/deployments.md", "utf8");
    const fieldsSection = docs.slice(docs.indexOf("## Fields"), docs.indexOf("## What the orchestrator"));
    const documented = [...fieldsSection.matchAll(/^\| `([a-zA-Z.]+)` \|/gm)].map((match) => match[1]);
    // Free-form maps and lists are documented as one field, not per key.
    const wholeFields = new Set(["capabilities", "labels", "agentCard", "process.args", "process.env"]);
    const fieldPaths = (value: unknown, prefix: string): string[] =>
      value !== null && typeof value === "object" && !Array.isArray(value) && !wholeFields.has(prefix)
        ? Object.entries(value).flatMap(([key, entry]) => fieldPaths(entry, prefix === "" ? key : `${prefix}.${key}`))
        : [prefix];
    const written = fieldPaths(parse(everyField), "");
    expect(new Set(documented)).toEqual(new Set(written));
  });

  it("refuses files over 1 MiB", () => {
    expect(problem(`${minimal}#${"x".repeat(1024 * 1024)}\n`)).toBe("file: larger than 1 MiB");
  });
});
