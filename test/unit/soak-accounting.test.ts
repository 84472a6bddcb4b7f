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
  heapFloorBoundBytes,
  judgeRss,
  nativeBoundBytes,
  planFaults,
  rssGrossBoundBytes,
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

describe("soak accounting: memory growth", () => {
  const mebibytes = 2 ** 20;
  type Shape = { heapUsed: (second: number) => number; heapTotal: (second: number) => number; native: (second: number) => number };
  /** RSS every second and a /metrics scrape every 5 s of one process life whose RSS is heapTotal + native. */
  const life = (component: string, incarnation: number, seconds: number, shape: Shape) => ({
    rss: Array.from({ length: seconds }, (_, second) => ({ component, incarnation, atMs: second * 1000, rssBytes: shape.heapTotal(second) + shape.native(second) })),
    heap: Array.from({ length: Math.floor(seconds / 5) }, (_, index) => {
      const second = index * 5;
      return {
        component,
        incarnation,
        atMs: second * 1000,
        heapUsedBytes: shape.heapUsed(second),
        heapTotalBytes: shape.heapTotal(second),
        externalBytes: 0,
        rssBytes: shape.heapTotal(second) + shape.native(second),
      };
    }),
  });
  // A healthy process as the soak runs of issue 8 measured it: native memory +20 MiB and heapTotal +15 MiB
  // over the first 2 minutes, then flat; heapTotal swinging by 25 MiB every 4 minutes afterwards (the
  // server's); heapUsed sawing between a flat floor and twice that.
  const healthy: Shape = {
    heapUsed: (second) => (25 + (second % 60) / 3) * mebibytes,
    heapTotal: (second) => (50 + Math.min(second, 120) / 8 + (second > 120 && second % 240 < 120 ? 25 : 0)) * mebibytes,
    native: (second) => (45 + Math.min(second, 120) / 6) * mebibytes,
  };
  const judge = (...lives: Array<ReturnType<typeof life>>) => {
    const verdicts = judgeRss(
      lives.flatMap((one) => one.rss),
      lives.flatMap((one) => one.heap),
    );
    return new Map(verdicts.map((verdict) => [`${verdict.component} ${verdict.incarnation}`, verdict]));
  };

  it("passes a process that warms up and then swings with V8's heap, though its RSS moved by more than 32 MiB", () => {
    const verdict = judge(life("server", 1, 1800, healthy)).get("server 1");
    expect(verdict).toMatchObject({ judged: "second half", ok: true, heapFloorGrowthMiB: 0, nativeGrowthMiB: 0 });
    expect((verdict?.maxMiB ?? 0) - (verdict?.baselineMiB ?? 0)).toBeGreaterThan(32);
  });

  it("fails native memory that keeps growing over the second half, and a heap floor that keeps rising", () => {
    const nativeLeak = { ...healthy, native: (second: number) => healthy.native(second) + (second * 2.5 * nativeBoundBytes) / 1800 };
    const heapLeak = { ...healthy, heapUsed: (second: number) => healthy.heapUsed(second) + (second * 2.5 * heapFloorBoundBytes) / 1800 };
    const verdicts = judge(life("sidecar soak-a", 1, 1800, nativeLeak), life("sidecar soak-b", 1, 1800, heapLeak));
    expect(verdicts.get("sidecar soak-a 1")?.reasons).toContainEqual(expect.stringMatching(/^native memory \(RSS − heapTotal\) grew \d+\.\d MiB over the second half/));
    expect(verdicts.get("sidecar soak-b 1")?.reasons).toEqual([expect.stringMatching(/^heap floor grew \d+\.\d MiB over the second half/)]);
  });

  it("fails a long life without /metrics scrapes rather than passing it unmeasured", () => {
    const verdicts = judgeRss(life("server", 1, 600, healthy).rss, []);
    expect(verdicts[0]).toMatchObject({ judged: "second half", ok: false });
  });

  it("judges a life of 1-4 minutes on gross RSS growth only, and a shorter one not at all", () => {
    const gross = { ...healthy, native: (second: number) => healthy.native(second) + (second > 60 ? rssGrossBoundBytes : 0) };
    const verdicts = judge(life("sidecar soak-b", 1, 180, healthy), life("sidecar soak-b", 2, 180, gross), life("sidecar soak-b", 3, 40, gross));
    expect(verdicts.get("sidecar soak-b 1")).toMatchObject({ judged: "gross", ok: true });
    expect(verdicts.get("sidecar soak-b 2")).toMatchObject({ judged: "gross", ok: false });
    expect(verdicts.get("sidecar soak-b 3")).toMatchObject({ judged: "none", ok: true });
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
