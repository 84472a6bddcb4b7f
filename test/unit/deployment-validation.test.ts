import { describe, expect, it } from "vitest";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { type Deployment, RestartPolicy_Mode } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { resolveRestartPolicy, resolveStrategy, sameSpec } from "../../services/orchestrator/domain/deployment-spec.js";
import { validateDeployment } from "../../services/orchestrator/domain/validate-deployment.js";
import { manifest } from "../helpers/manifests.js";

function deployment(overrides: Partial<Deployment> = {}): Deployment {
  return {
    name: "word-stats",
    manifest: manifest({ name: "word-stats" }),
    process: { command: "node", args: ["examples/agents/word-stats.mjs"], env: { LOG_LEVEL: "info" }, cwd: "", image: "" },
    replicas: 3,
    restartPolicy: undefined,
    strategy: undefined,
    minReady: 0,
    generation: 0,
    status: undefined,
    createdAtMs: 0,
    updatedAtMs: 0,
    ...overrides,
  };
}

const strategy = (overrides: Partial<NonNullable<Deployment["strategy"]>> = {}) => ({
  maxSurge: 1,
  maxUnavailable: 0,
  readyTimeoutMs: 0,
  maxErrorRate: 0,
  canaryWeightPercent: 0,
  ...overrides,
});
const restartPolicy = (overrides: Partial<NonNullable<Deployment["restartPolicy"]>> = {}) => ({
  mode: RestartPolicy_Mode.MODE_ALWAYS,
  maxRestarts: 5,
  windowMs: 60_000,
  initialBackoffMs: 100,
  maxBackoffMs: 10_000,
  ...overrides,
});
const process = (overrides: Partial<NonNullable<Deployment["process"]>> = {}) => ({
  command: "node",
  args: [],
  env: {},
  cwd: "",
  image: "",
  ...overrides,
});

function problem(candidate: Deployment | undefined): string {
  try {
    validateDeployment(candidate);
  } catch (error) {
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).kind).toBe("invalidArgument");
    return (error as MeshError).message;
  }
  throw new Error("expected INVALID_ARGUMENT");
}

describe("validateDeployment", () => {
  it.each<[string, Deployment]>([
    ["the defaults", deployment()],
    ["an image instead of a command", deployment({ process: process({ command: "", image: "ghcr.io/example/agent:1" }) })],
    ["zero replicas", deployment({ replicas: 0 })],
    ["1000 replicas", deployment({ replicas: 1000 })],
    ["surge 0 with unavailable 1", deployment({ strategy: strategy({ maxSurge: 0, maxUnavailable: 1 }) })],
    ["surge and unavailable both 0 at zero replicas", deployment({ replicas: 0, strategy: strategy({ maxSurge: 0, maxUnavailable: 0 }) })],
    ["a full strategy", deployment({ strategy: strategy({ readyTimeoutMs: 60_000, maxErrorRate: 0.25, canaryWeightPercent: 10 }) })],
    ["a full restart policy", deployment({ restartPolicy: restartPolicy() })],
    ["a restart policy of zeros (all defaults)", deployment({ restartPolicy: restartPolicy({ mode: 0, maxRestarts: 0, windowMs: 0, initialBackoffMs: 0, maxBackoffMs: 0 }) })],
    ["min_ready above replicas (effective minimum is replicas)", deployment({ replicas: 1, minReady: 3 })],
  ])("accepts %s", (_label, candidate) => {
    expect(() => validateDeployment(candidate)).not.toThrow();
  });

  it.each<[string, Deployment | undefined, string]>([
    ["a missing deployment", undefined, "deployment: required"],
    ["an empty name", deployment({ name: "" }), "name: required"],
    ["an upper-case name", deployment({ name: "WordStats" }), "name: must be a DNS label"],
    ["a missing manifest", deployment({ manifest: undefined }), "manifest: required"],
    ["a bad manifest version", deployment({ manifest: manifest({ name: "word-stats", version: "1.0" }) }), "manifest.version: not a semver"],
    ["a manifest without capabilities", deployment({ manifest: manifest({ name: "word-stats", capabilities: [] }) }), "manifest.capabilities: at least one"],
    ["a manifest for another agent", deployment({ manifest: manifest({ name: "other" }) }), "manifest.name: must equal name"],
    [
      "the orchestrator's revision label",
      deployment({ manifest: manifest({ name: "word-stats", labels: { "agentmesh.io/template-hash": "0123456789" } }) }),
      "manifest.labels[agentmesh.io/template-hash]: the agentmesh.io/ prefix is reserved",
    ],
    [
      "64 labels (one slot is the orchestrator's)",
      deployment({ manifest: manifest({ name: "word-stats", labels: Object.fromEntries(Array.from({ length: 64 }, (_, index) => [`l${index}`, "x"])) }) }),
      "manifest.labels: more than 63 labels in a deployment",
    ],
    ["a missing process", deployment({ process: undefined }), "process: required"],
    ["neither command nor image", deployment({ process: process({ command: "" }) }), "process.command: command or image required"],
    ["a NUL in an argument", deployment({ process: process({ args: ["ok", "a\0b"] }) }), "process.args[1]: may not contain NUL"],
    ["a huge argument", deployment({ process: process({ args: ["x".repeat(5000)] }) }), "process.args[0]: over 4096 bytes"],
    ["too many arguments", deployment({ process: process({ args: Array.from({ length: 257 }, () => "a") }) }), "process.args: more than 256"],
    ["a bad env name", deployment({ process: process({ env: { "LOG-LEVEL": "x" } }) }), "process.env[LOG-LEVEL]: name must match"],
    ["a reserved env name", deployment({ process: process({ env: { AGENTMESH_SIDECAR_ADDR: "x" } }) }), "process.env[AGENTMESH_SIDECAR_ADDR]: set by the sidecar"],
    ["negative replicas", deployment({ replicas: -1 }), "replicas: must be 0..1000"],
    ["too many replicas", deployment({ replicas: 1001 }), "replicas: must be 0..1000"],
    ["fractional replicas", deployment({ replicas: 1.5 }), "replicas: must be 0..1000"],
    ["negative min_ready", deployment({ minReady: -1 }), "min_ready: must be 0..1000"],
    ["surge and unavailable both 0", deployment({ strategy: strategy({ maxSurge: 0, maxUnavailable: 0 }) }), "strategy.max_surge: max_surge and max_unavailable may not both be 0"],
    ["a huge surge", deployment({ strategy: strategy({ maxSurge: 1001 }) }), "strategy.max_surge: must be 0..1000"],
    ["a fractional max_unavailable", deployment({ strategy: strategy({ maxUnavailable: 0.5 }) }), "strategy.max_unavailable: must be 0..1000"],
    ["a ready timeout under a second", deployment({ strategy: strategy({ readyTimeoutMs: 500 }) }), "strategy.ready_timeout_ms: must be 1000..3600000"],
    ["an error rate above 1", deployment({ strategy: strategy({ maxErrorRate: 1.5 }) }), "strategy.max_error_rate: must be 0..1"],
    ["a NaN error rate", deployment({ strategy: strategy({ maxErrorRate: Number.NaN }) }), "strategy.max_error_rate: must be 0..1"],
    ["a canary weight above 100", deployment({ strategy: strategy({ canaryWeightPercent: 101 }) }), "strategy.canary_weight_percent: must be 0..100"],
    ["an unknown restart mode", deployment({ restartPolicy: restartPolicy({ mode: 9 as RestartPolicy_Mode }) }), "restart_policy.mode: must be always, on-failure or never"],
    ["too many restarts", deployment({ restartPolicy: restartPolicy({ maxRestarts: 1001 }) }), "restart_policy.max_restarts: must be 0..1000"],
    ["a window under a second", deployment({ restartPolicy: restartPolicy({ windowMs: 10 }) }), "restart_policy.window_ms: must be 1000..86400000"],
    ["a huge initial backoff", deployment({ restartPolicy: restartPolicy({ initialBackoffMs: 600_001, maxBackoffMs: 700_000 }) }), "restart_policy.initial_backoff_ms: must be 0..600000"],
    ["max backoff below initial", deployment({ restartPolicy: restartPolicy({ initialBackoffMs: 5000, maxBackoffMs: 1000 }) }), "restart_policy.max_backoff_ms: must be at least initial_backoff_ms"],
    ["max backoff below the default initial", deployment({ restartPolicy: restartPolicy({ initialBackoffMs: 0, maxBackoffMs: 100 }) }), "restart_policy.max_backoff_ms: must be at least"],
  ])("rejects %s", (_label, candidate, expected) => {
    expect(problem(candidate)).toContain(expected);
  });
});

describe("deployment defaults", () => {
  it("uses surge 1 / unavailable 0 / 30 s / 0.5 when the strategy is absent", () => {
    expect(resolveStrategy(deployment())).toEqual({ maxSurge: 1, maxUnavailable: 0, readyTimeoutMs: 30_000, maxErrorRate: 0.5, canaryWeightPercent: 0 });
  });

  it("keeps a written surge of 0 and fills only the fields whose 0 means default", () => {
    const resolved = resolveStrategy(deployment({ strategy: strategy({ maxSurge: 0, maxUnavailable: 2 }) }));
    expect(resolved).toEqual({ maxSurge: 0, maxUnavailable: 2, readyTimeoutMs: 30_000, maxErrorRate: 0.5, canaryWeightPercent: 0 });
  });

  it("fills every zero of a restart policy so sidecars need no defaults", () => {
    expect(resolveRestartPolicy(undefined)).toEqual({
      mode: RestartPolicy_Mode.MODE_ALWAYS,
      maxRestarts: 5,
      windowMs: 60_000,
      initialBackoffMs: 200,
      maxBackoffMs: 30_000,
    });
    expect(resolveRestartPolicy(restartPolicy({ mode: RestartPolicy_Mode.MODE_NEVER, maxRestarts: 0 }))).toMatchObject({
      mode: RestartPolicy_Mode.MODE_NEVER,
      maxRestarts: 5,
      windowMs: 60_000,
    });
  });
});

describe("sameSpec", () => {
  it("ignores what the server owns and the order maps were built in", () => {
    const applied = deployment({ process: process({ env: { A: "1", B: "2" } }) });
    const stored = { ...deployment({ process: process({ env: { B: "2", A: "1" } }) }), generation: 7, createdAtMs: 5, updatedAtMs: 9 };
    stored.status = { replicas: 3, readyReplicas: 3, updatedReplicas: 3, phase: "complete", message: "" };
    expect(sameSpec(applied, stored)).toBe(true);
  });

  it.each<[string, Partial<Deployment>]>([
    ["replicas", { replicas: 4 }],
    ["the version", { manifest: manifest({ name: "word-stats", version: "1.1.0" }) }],
    ["an env value", { process: process({ env: { A: "3" } }) }],
    ["the strategy", { strategy: strategy() }],
  ])("sees a change of %s", (_label, change) => {
    expect(sameSpec(deployment({ process: process({ env: { A: "1" } }) }), deployment({ process: process({ env: { A: "1" } }), ...change }))).toBe(false);
  });
});
