import { describe, expect, it } from "vitest";
import { type ProcessSpec, validateProcessSpec } from "../../sidecar/supervisor/process-spec.js";
import { parseVmRssBytes } from "../../sidecar/supervisor/process-memory.js";

const valid: ProcessSpec = {
  instanceId: "wordstats-1",
  agentName: "wordstats",
  command: "node",
  args: ["agent.js"],
  env: {},
  restartPolicy: { mode: "always", maxRestarts: 5, windowMs: 60_000, initialBackoffMs: 100, maxBackoffMs: 5_000 },
  readinessTimeoutMs: 10_000,
  gracefulStopMs: 5_000,
  agentAddr: "127.0.0.1:7500",
  sidecarAddr: "127.0.0.1:7431",
};

describe("validateProcessSpec", () => {
  it.each<[string, ProcessSpec]>([
    ["the example", valid],
    ["an IPv6 address", { ...valid, agentAddr: "[::1]:7500" }],
    ["a host name", { ...valid, sidecarAddr: "localhost:7431" }],
    ["a memory limit", { ...valid, memoryLimitBytes: 256 * 1024 * 1024 }],
    ["external readiness", { ...valid, readiness: "external" }],
    ["no restarts allowed", { ...valid, restartPolicy: { ...valid.restartPolicy, maxRestarts: 0 } }],
  ])("accepts %s", (_, spec) => {
    expect(() => validateProcessSpec(spec)).not.toThrow();
  });

  it.each<[string, Partial<ProcessSpec>, string]>([
    ["empty instanceId", { instanceId: "" }, "instanceId"],
    ["empty agentName", { agentName: "" }, "agentName"],
    ["empty command", { command: "" }, "command"],
    ["agentAddr without port", { agentAddr: "127.0.0.1" }, "agentAddr"],
    ["sidecarAddr with a scheme", { sidecarAddr: "http://127.0.0.1:7431" }, "sidecarAddr"],
    ["unknown restart mode", { restartPolicy: { ...valid.restartPolicy, mode: "sometimes" as "always" } }, "mode"],
    ["fractional maxRestarts", { restartPolicy: { ...valid.restartPolicy, maxRestarts: 1.5 } }, "maxRestarts"],
    ["zero windowMs", { restartPolicy: { ...valid.restartPolicy, windowMs: 0 } }, "windowMs"],
    ["negative initial backoff", { restartPolicy: { ...valid.restartPolicy, initialBackoffMs: -1 } }, "initialBackoffMs"],
    ["max backoff below initial", { restartPolicy: { ...valid.restartPolicy, maxBackoffMs: 50 } }, "maxBackoffMs"],
    ["zero memory limit", { memoryLimitBytes: 0 }, "memoryLimitBytes"],
    ["infinite readiness timeout", { readinessTimeoutMs: Number.POSITIVE_INFINITY }, "readinessTimeoutMs"],
    ["negative grace", { gracefulStopMs: -5 }, "gracefulStopMs"],
    ["unknown readiness", { readiness: "tcp" as "external" }, "readiness"],
  ])("rejects %s", (_, change, field) => {
    expect(() => validateProcessSpec({ ...valid, ...change })).toThrow(
      expect.objectContaining({ kind: "invalidArgument", message: expect.stringContaining(field) }),
    );
  });
});

describe("parseVmRssBytes", () => {
  it("reads VmRSS in kB from /proc/<pid>/status", () => {
    const status = "Name:\tnode\nVmPeak:\t  900000 kB\nVmRSS:\t   51200 kB\nRssAnon:\t   30000 kB\n";

    expect(parseVmRssBytes(status)).toBe(51_200 * 1024);
  });

  it("returns undefined for a kernel thread or zombie without VmRSS", () => {
    expect(parseVmRssBytes("Name:\tkthreadd\nState:\tS (sleeping)\n")).toBeUndefined();
  });
});
