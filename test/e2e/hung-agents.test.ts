// A hung agent (alive, connection open, not answering) with real processes:
// a server, a sidecar running 3 replicas, steady calls through its local port,
// and SIGSTOP on one replica's process. SDK agents are found by Attach pings,
// plain agents by their grpc.health.v1 checks.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import {
  type CallRecord,
  MeshCluster,
  exampleAgentsDir,
  fixtureAgentsDir,
  startCallLoop,
  waitFor,
} from "../helpers/mesh-cluster.js";

let cluster: MeshCluster | undefined;
const stoppedPids = new Set<number>();

afterEach(async () => {
  // A stopped process would only die at the end of its stop grace.
  for (const pid of stoppedPids) signal(pid, "SIGCONT");
  stoppedPids.clear();
  await cluster?.close();
  cluster = undefined;
});

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

const heartbeatIntervalMs = 200;
const hungRestartAfterMs = 3000;

const agentKinds = [
  {
    kind: "SDK agent (Attach pings)",
    name: "echo",
    capability: "test.echo",
    process: `{command: node, args: [${JSON.stringify(join(fixtureAgentsDir, "echo-agent.mjs"))}]}`,
    payload: () => "{}",
    unresponsiveReason: /stopped answering pings/,
  },
  {
    kind: "plain agent (grpc.health.v1 checks)",
    name: "json-validator",
    capability: "json.validate",
    process: `{command: node, args: [${JSON.stringify(join(exampleAgentsDir, "json-validator.js"))}]}`,
    payload: () => JSON.stringify({ schema: { type: "object" }, document: {} }),
    unresponsiveReason: /health checks unanswered/,
  },
];

function deploymentYaml(name: string, capability: string, processSpec: string): string {
  return [
    "kind: Deployment",
    `name: ${name}`,
    "version: 1.0.0",
    "replicas: 3",
    `capabilities: [${capability}@1.0.0]`,
    `process: ${processSpec}`,
    `health: {heartbeatInterval: ${heartbeatIntervalMs}ms, readinessTimeout: 5s, hungRestartAfter: ${hungRestartAfterMs}ms}`,
    "restartPolicy: {initialBackoff: 50ms, maxBackoff: 200ms}",
    "strategy: {readyTimeout: 5s}",
    "",
  ].join("\n");
}

interface AuditLine {
  action: string;
  target: string;
  outcome: string;
  details: { signal?: string | null; reason?: string; exitCode?: number | null };
}

describe("hung agents (real processes, SIGSTOP)", () => {
  it.each(agentKinds)(
    "$kind: UNHEALTHY and routed around while stopped, READY with the same pid after SIGCONT; stopped past the bound it is killed and restarted",
    async ({ name, capability, process: processSpec, payload, unresponsiveReason }) => {
      cluster = await MeshCluster.start();
      const sidecar = await cluster.startSidecar({ host: "host-a", capacity: 3 });
      const applied = await cluster.ctl("apply", "-f", cluster.writeFile(`${name}.yaml`, deploymentYaml(name, capability, processSpec)));
      expect(applied.code, applied.stderr).toBe(0);
      const replicas = await cluster.waitForReady(name, 3, { exclusive: true });
      const victimId = replicas[0]?.instanceId as string;
      const pid = sidecar.agentStates(victimId).findLast((line) => line.state === "ready")?.pid as number;
      expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).toContain(name === "echo" ? "echo-agent.mjs" : "json-validator.js");
      const events = cluster.watch(capability);
      const victimIn = (state: HealthState) => (item: { event: { instance?: { instanceId: string; state: HealthState } } }) =>
        item.event.instance?.instanceId === victimId && item.event.instance.state === state;

      const loop = startCallLoop(sidecar.caller, capability, payload, { concurrency: 3, timeoutMs: 1000 });
      await waitFor("every replica answering", () => (new Set(loop.records.map((record) => record.instanceId)).size === 3 ? true : undefined));

      // 1. Stopped, then continued before the restart bound.
      const stoppedAtMs = Date.now();
      process.kill(pid, "SIGSTOP");
      stoppedPids.add(pid);
      const unhealthy = await events.next(victimIn(HealthState.HEALTH_STATE_UNHEALTHY), 10_000);
      const detectedAtMs = unhealthy.receivedAtMs;
      expect(unhealthy.event.instance?.stateReason).toMatch(unresponsiveReason);
      await loop.waitForCalls(60);
      const resumedAtMs = Date.now();
      process.kill(pid, "SIGCONT");
      stoppedPids.delete(pid);
      const ready = await events.next(victimIn(HealthState.HEALTH_STATE_READY), 10_000);
      expect(sidecar.agentStates(victimId).findLast((line) => line.state === "ready")?.pid).toBe(pid);
      await waitFor("a call answered by the continued replica", () =>
        loop.records.some((record) => record.instanceId === victimId && record.startedAtMs > ready.receivedAtMs) ? true : undefined,
      );

      const whileHung = loop.records.filter((record) => record.startedAtMs >= detectedAtMs && record.endedAtMs <= resumedAtMs);
      expect(whileHung.length).toBeGreaterThanOrEqual(30);
      // Out of routing: nothing started after detection went to it, so nothing failed either.
      expect(whileHung.filter((record) => !record.ok || record.instanceId === victimId)).toEqual([]);
      expect(sidecar.agentStates(victimId).filter((line) => line.state === "unresponsive").map((line) => line.reason)).toEqual([
        expect.stringMatching(unresponsiveReason),
      ]);
      console.log(`${name}: hung agent detected (UNHEALTHY seen by a Watch) ${detectedAtMs - stoppedAtMs} ms after SIGSTOP`);

      // 2. Stopped for good: killed with SIGKILL after the bound and restarted in place, counted as a restart.
      const fromIndex = sidecar.process.lines.length;
      const stoppedAgainAtMs = Date.now();
      process.kill(pid, "SIGSTOP");
      stoppedPids.add(pid);
      const unhealthyAgain = await events.next(victimIn(HealthState.HEALTH_STATE_UNHEALTHY), 10_000);
      const killed = await sidecar.waitForAgentState(victimId, "backoff", fromIndex, 15_000);
      expect(killed.reason).toBe(`hung for ${hungRestartAfterMs} ms`);
      const restarted = await sidecar.waitForAgentState(victimId, "ready", fromIndex, 15_000);
      stoppedPids.delete(pid);
      expect(restarted.pid).not.toBe(pid);
      expect((restarted as unknown as { restarts: number }).restarts).toBe(1);
      await events.next(victimIn(HealthState.HEALTH_STATE_READY), 10_000);
      await loop.waitForCalls(30);
      const records = await loop.stop();

      // Only calls already on their way to it when it froze failed (they hit their deadline).
      const unexplained = records.filter(
        (record: CallRecord) =>
          !record.ok &&
          !(record.startedAtMs >= stoppedAtMs - 50 && record.startedAtMs <= detectedAtMs) &&
          !(record.startedAtMs >= stoppedAgainAtMs - 50 && record.startedAtMs <= unhealthyAgain.receivedAtMs),
      );
      expect(unexplained).toEqual([]);

      const audit = readFileSync(join(sidecar.dataDir, "audit.log"), "utf8")
        .split("\n")
        .filter((line) => line.trim() !== "")
        .map((line) => JSON.parse(line) as AuditLine);
      expect(audit.filter((entry) => entry.action === "agent.crashed")).toEqual([
        expect.objectContaining({
          target: victimId,
          outcome: "failure",
          details: expect.objectContaining({ signal: "SIGKILL", reason: `hung for ${hungRestartAfterMs} ms` }),
        }),
      ]);
    },
    120_000,
  );

  it("an SDK agent whose calls hang while it answers pings: ejected after 5 timeouts in a row, calls go elsewhere, READY again after the ejection", async () => {
    cluster = await MeshCluster.start();
    const sidecar = await cluster.startSidecar({ host: "host-a", capacity: 3 });
    const echo = agentKinds[0] as (typeof agentKinds)[number];
    const applied = await cluster.ctl("apply", "-f", cluster.writeFile("echo.yaml", deploymentYaml(echo.name, echo.capability, echo.process)));
    expect(applied.code, applied.stderr).toBe(0);
    const replicas = await cluster.waitForReady(echo.name, 3, { exclusive: true });
    const victimId = replicas[0]?.instanceId as string;
    const pid = sidecar.agentStates(victimId).findLast((line) => line.state === "ready")?.pid as number;
    const events = cluster.watch(echo.capability);

    // Its handler hangs for these calls; the other two replicas answer them.
    const loop = startCallLoop(sidecar.caller, echo.capability, () => JSON.stringify({ hangOn: victimId }), { concurrency: 3, timeoutMs: 300, idempotent: false });
    const ejected = await events.next((item) => item.event.instance?.instanceId === victimId && item.event.instance.state === HealthState.HEALTH_STATE_UNHEALTHY, 20_000);
    expect(ejected.event.instance?.stateReason).toBe("outlier: 5 calls in a row timed out");
    await loop.waitForCalls(30);
    const records = await loop.stop();

    const afterEjection = records.filter((record) => record.startedAtMs >= ejected.receivedAtMs);
    expect(afterEjection.length).toBeGreaterThanOrEqual(30);
    expect(afterEjection.filter((record) => !record.ok || record.instanceId === victimId)).toEqual([]);
    const timedOut = records.filter((record) => !record.ok);
    expect(timedOut.length).toBeGreaterThanOrEqual(5);
    expect(new Set(timedOut.map((record) => record.code))).toEqual(new Set([4])); // DEADLINE_EXCEEDED
    // The others answered all along, so they were never ejected.
    expect(events.items.filter((item) => item.event.instance?.instanceId !== victimId && item.event.instance?.state === HealthState.HEALTH_STATE_UNHEALTHY)).toEqual([]);

    // Ejected for 10 heartbeat intervals (2 s here), then back, same process.
    await events.next((item) => item.event.instance?.instanceId === victimId && item.event.instance.state === HealthState.HEALTH_STATE_READY, 10_000);
    expect(sidecar.agentStates(victimId).at(-1)).toMatchObject({ state: "ready", pid });
    // Concurrent calls: its peak-EWMA latency still remembers the timeouts, so it takes calls when the others are busy.
    const after = startCallLoop(sidecar.caller, echo.capability, () => "{}", { concurrency: 6, timeoutMs: 1000 });
    const answer = await waitFor("a call answered by the returned replica", () => after.records.find((record) => record.instanceId === victimId));
    expect(JSON.parse(answer.payload as string)).toMatchObject({ instanceId: victimId, pid });
    expect((await after.stop()).filter((record) => !record.ok)).toEqual([]);
  }, 60_000);
});
