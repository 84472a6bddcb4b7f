import { readFileSync } from "node:fs";
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { seededRandom } from "../../bench/bench-kit.js";
import {
  type CallRecord,
  type FaultWindow,
  causeOf,
  classify,
  faultKinds,
  judgeRss,
  planFaults,
  rssBoundBytes,
  windowOutcome,
  wrongAnswerCode,
} from "../../bench/soak-accounting.js";
import { parseDeploymentYaml } from "../../services/orchestrator/deployment-yaml.js";

const margin = 3;

function window(fields: Partial<FaultWindow>): FaultWindow {
  return { fault: "agent-kill #1", kind: "agent-kill", phase: "kill", target: "x", paths: ["local", "server"], startMs: 10_000, budgetMs: 1000, budgetWhy: "", notes: [], ...fields };
}

function failed(fields: Partial<CallRecord>): CallRecord {
  return { path: "local", capability: "text.word-stats", startMs: 0, endMs: 0, code: status.UNAVAILABLE, message: "no healthy instance", instanceId: "", version: "", ...fields };
}

describe("soak accounting: which failed call a fault window explains", () => {
  const closed = window({ endMs: 11_500 });

  it.each([
    ["starts inside the window", "explained", { startMs: 10_200, endMs: 10_250 }],
    ["was in flight when the fault began", "explained", { startMs: 9_000, endMs: 10_100 }],
    ["starts within the reroute grace after the window ends", "explained", { startMs: 11_550, endMs: 11_560 }],
    ["starts after the grace", "outside", { startMs: 11_700, endMs: 11_710 }],
    ["ended before the fault", "outside", { startMs: 9_000, endMs: 9_900 }],
  ])("a call that %s is %s", (_what, expected, times) => {
    expect(classify(failed(times), [closed], margin).kind).toBe(expected);
  });

  it.each([
    ["UNAUTHENTICATED", status.UNAUTHENTICATED],
    ["INTERNAL", status.INTERNAL],
    ["a wrong answer", wrongAnswerCode],
  ])("never explains %s, even inside a window", (_name, code) => {
    expect(classify(failed({ startMs: 10_200, endMs: 10_250, code }), [closed], margin).kind).toBe("outside");
  });

  it("gives a server restart the clients' reconnect backoff: UNAVAILABLE up to 1.2 s after it, nothing else", () => {
    const restart = window({ kind: "server-kill", fault: "server-kill #1", endMs: 11_500 });
    expect(classify(failed({ startMs: 12_600, endMs: 12_610 }), [restart], margin).kind).toBe("explained");
    expect(classify(failed({ startMs: 12_800, endMs: 12_810 }), [restart], margin).kind).toBe("outside");
    expect(classify(failed({ startMs: 12_000, endMs: 12_010, code: status.DEADLINE_EXCEEDED }), [restart], margin).kind).toBe("outside");
    expect(classify(failed({ startMs: 12_000, endMs: 12_010 }), [window({ endMs: 11_500 })], margin).kind).toBe("outside");
  });

  it("explains only the paths a window names", () => {
    const serverOnly = window({ kind: "server-kill", paths: ["server"], endMs: 11_500 });
    expect(classify(failed({ path: "server", startMs: 10_200, endMs: 10_300 }), [serverOnly], margin).kind).toBe("explained");
    expect(classify(failed({ path: "local", startMs: 10_200, endMs: 10_300 }), [serverOnly], margin).kind).toBe("outside");
  });

  it("explains a window that never closed up to budget × margin, and calls it overrun after that", () => {
    const never = window({ gaveUpAtMs: 30_000 });
    expect(classify(failed({ startMs: 12_900, endMs: 12_950 }), [never], margin).kind).toBe("explained");
    expect(classify(failed({ startMs: 20_000, endMs: 20_050 }), [never], margin).kind).toBe("overrun");
    expect(classify(failed({ startMs: 31_000, endMs: 31_050 }), [never], margin).kind).toBe("outside");
    expect(windowOutcome(never, margin)).toBe("never");
  });

  it("marks a window late when it closed after budget × margin, and a fault never injected as skipped", () => {
    expect(windowOutcome(window({ endMs: 12_999 }), margin)).toBe("ok");
    expect(windowOutcome(window({ endMs: 13_001 }), margin)).toBe("late");
    const skipped = window({ skipped: true, endMs: 10_000, paths: [] });
    expect(windowOutcome(skipped, margin)).toBe("skipped");
    expect(classify(failed({ startMs: 10_000, endMs: 10_001 }), [skipped], margin).kind).toBe("outside");
  });

  it("groups failure messages that differ only in ids and numbers", () => {
    const first = causeOf({ code: status.UNAVAILABLE, message: "connect ECONNREFUSED 127.0.0.1:40249 (instance 9dfbb7e9-1111-2222-3333-444455556666)" });
    const second = causeOf({ code: status.UNAVAILABLE, message: "connect ECONNREFUSED 127.0.0.1:37001 (instance 0c4f1e2a-aaaa-bbbb-cccc-ddddeeeeffff)" });
    expect(first).toBe(second);
    expect(first.startsWith("UNAVAILABLE ")).toBe(true);
    expect(causeOf({ code: wrongAnswerCode, message: "wrong answer" }).startsWith("WRONG_ANSWER")).toBe(true);
  });
});

describe("soak accounting: the fault schedule", () => {
  it("repeats for a seed and puts every kind once in each round, in order of time, inside the range", () => {
    const fromMs = 10_000;
    const untilMs = 10_000 + 30 * 60_000;
    const first = planFaults(faultKinds, seededRandom(7), fromMs, untilMs);
    const again = planFaults(faultKinds, seededRandom(7), fromMs, untilMs);
    expect(again.plan).toEqual(first.plan);
    const rounds = new Set(first.plan.map((fault) => fault.round));
    expect(rounds.size).toBe(6);
    for (const round of rounds) expect(first.plan.filter((fault) => fault.round === round).map((fault) => fault.kind).sort()).toEqual([...faultKinds].sort());
    const times = first.plan.map((fault) => fault.atMs);
    expect(times).toEqual([...times].sort((left, right) => left - right));
    expect(Math.min(...times)).toBeGreaterThanOrEqual(fromMs);
    expect(Math.max(...times)).toBeLessThan(untilMs);
  });

  it("still plans one round when the run is shorter than a fault a minute, and nothing for no faults", () => {
    const { plan, slotMs } = planFaults(faultKinds, seededRandom(1), 0, 100_000);
    expect(plan).toHaveLength(faultKinds.length);
    expect(slotMs).toBe(20_000);
    expect(planFaults([], seededRandom(1), 0, 100_000).plan).toEqual([]);
  });
});

describe("soak accounting: RSS growth", () => {
  const life = (component: string, incarnation: number, seconds: number, rssAt: (second: number) => number) =>
    Array.from({ length: seconds }, (_, second) => ({ component, incarnation, atMs: second * 1000, rssBytes: rssAt(second) }));
  const mebibytes = 2 ** 20;

  it("passes a flat process, fails one that grows past the bound, and does not judge a short life", () => {
    const verdicts = judgeRss([
      ...life("server", 1, 120, () => 100 * mebibytes),
      ...life("sidecar soak-a", 1, 120, (second) => 100 * mebibytes + (second > 60 ? rssBoundBytes + 8 * mebibytes : 0)),
      ...life("sidecar soak-b", 2, 40, (second) => 100 * mebibytes + second * 10 * mebibytes),
    ]);
    const byName = new Map(verdicts.map((verdict) => [`${verdict.component} ${verdict.incarnation}`, verdict]));
    expect(byName.get("server 1")).toMatchObject({ judged: true, ok: true, growthMiB: 0 });
    expect(byName.get("sidecar soak-a 1")).toMatchObject({ judged: true, ok: false, growthMiB: 40 });
    expect(byName.get("sidecar soak-b 2")).toMatchObject({ judged: false, ok: true });
  });
});

describe("the soak deployment file", () => {
  it("holds valid deployments: an SDK agent and a plain one, with replicas to spread over two hosts", () => {
    const deployments = parseDeploymentYaml(readFileSync("examples/deployments/soak.yaml", "utf8"));
    expect(deployments.map((deployment) => deployment.name)).toEqual(["word-stats", "json-validator"]);
    for (const deployment of deployments) expect(deployment.replicas).toBeGreaterThanOrEqual(2);
    // Two sidecars of capacity 4: every replica plus one surge must fit.
    expect(deployments.reduce((sum, deployment) => sum + deployment.replicas, 0) + 1).toBeLessThanOrEqual(8);
  });
});
