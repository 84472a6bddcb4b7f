import { describe, expect, it } from "vitest";
import { livenessTiming } from "../../sdk/ts/src/core/liveness.js";
import { agentSpec, closeSupervisorAfterEach, isAlive, setup } from "./supervisor-harness.js";

closeSupervisorAfterEach();

// 100 ms heartbeats: checks every 50 ms, hung after 150 ms of silence.
const liveness = livenessTiming(100);

function signal(pid: number | undefined, name: NodeJS.Signals): void {
  if (pid !== undefined) process.kill(pid, name);
}

describe("Supervisor: plain agents after READY (real processes)", () => {
  it("finds a frozen agent unresponsive by its health checks, and ready again with the same pid when it continues", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({ liveness, hungRestartAfterMs: 60_000 });
    supervisor.start(spec);
    const ready = await events.state(spec.instanceId, "ready");

    signal(ready.pid, "SIGSTOP");
    try {
      const unresponsive = await events.state(spec.instanceId, "unresponsive");
      expect(unresponsive).toMatchObject({ previous: "ready", pid: ready.pid, reason: expect.stringMatching(/^health checks unanswered for \d+ ms$/) });
      expect(supervisor.get(spec.instanceId)).toMatchObject({ state: "unresponsive", pid: ready.pid });
    } finally {
      signal(ready.pid, "SIGCONT");
    }
    const readyAgain = await events.state(spec.instanceId, "ready", 2);
    expect(readyAgain).toMatchObject({ previous: "unresponsive", pid: ready.pid, reason: "health check answers SERVING again", restarts: 0 });
    expect(events.exits).toEqual([]);
  });

  it("kills an agent that stays hung past hungRestartAfterMs with SIGKILL and restarts it, counted as a restart and logged at warn", async () => {
    const { supervisor, events, logs } = setup();
    const spec = await agentSpec({ liveness, hungRestartAfterMs: 300 });
    supervisor.start(spec);
    const ready = await events.state(spec.instanceId, "ready");

    signal(ready.pid, "SIGSTOP");
    await events.state(spec.instanceId, "unresponsive");
    const exit = await events.exit(spec.instanceId);
    expect(exit).toMatchObject({ pid: ready.pid, signal: "SIGKILL", reason: "hung for 300 ms", unexpected: true });
    expect(await events.state(spec.instanceId, "backoff")).toMatchObject({ previous: "unresponsive", reason: "hung for 300 ms" });
    const restarted = await events.state(spec.instanceId, "ready", 2);
    expect(restarted.pid).not.toBe(ready.pid);
    expect(restarted.restarts).toBe(1);
    expect(isAlive(ready.pid as number)).toBe(false);
    expect(await logs.waitFor((record) => record.msg === "agent still hung, killing it to restart")).toMatchObject({ level: 40, pid: ready.pid, durationMs: 300 });
    expect(await logs.waitFor((record) => record.msg === "agent crashed")).toMatchObject({ level: 40, pid: ready.pid, signal: "SIGKILL", reason: "hung for 300 ms" });
  });

  it("a hung agent under restart intensity: killed, and FAILED once restarts run out", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({ liveness, hungRestartAfterMs: 200, policy: { maxRestarts: 0 } });
    supervisor.start(spec);
    const ready = await events.state(spec.instanceId, "ready");
    signal(ready.pid, "SIGSTOP");
    expect(await events.state(spec.instanceId, "failed")).toMatchObject({ previous: "unresponsive", reason: "crash loop", signal: "SIGKILL" });
    expect(events.failures).toEqual([expect.objectContaining({ instanceId: spec.instanceId, reason: "crash loop" })]);
  });

  it("takes an agent answering NOT_SERVING out of routing without killing it: it answers, it is not hung", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({ liveness, hungRestartAfterMs: 200 });
    supervisor.start(spec);
    const ready = await events.state(spec.instanceId, "ready");

    signal(ready.pid, "SIGUSR2");
    expect(await events.state(spec.instanceId, "unresponsive")).toMatchObject({ reason: "health check answers NOT_SERVING", pid: ready.pid });
    // Nothing may happen here, so only time can show it: several restart bounds pass without a kill.
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect(events.exits).toEqual([]);
    expect(supervisor.get(spec.instanceId)).toMatchObject({ state: "unresponsive", pid: ready.pid });

    signal(ready.pid, "SIGUSR2");
    expect(await events.state(spec.instanceId, "ready", 2)).toMatchObject({ previous: "unresponsive", pid: ready.pid });
  });
});

describe("Supervisor: crash logging", () => {
  it("logs an unexpected exit at warn with its exit code or signal, and a requested stop not at all", async () => {
    const { supervisor, events, logs } = setup();
    const crashing = await agentSpec({ env: { HEALTH_AGENT_EXIT_AFTER_MS: "300", HEALTH_AGENT_EXIT_CODE: "3" }, policy: { mode: "never" } });
    supervisor.start(crashing);
    await events.state(crashing.instanceId, "failed");
    const crashed = await logs.waitFor((record) => record.msg === "agent crashed");
    expect(crashed).toMatchObject({ level: 40, instanceId: crashing.instanceId, agentName: "health-agent", exitCode: 3, signal: null, reason: "exited with code 3" });
    expect(crashed.uptimeMs).toBeGreaterThan(0);

    const stopped = await agentSpec();
    supervisor.start(stopped);
    await events.state(stopped.instanceId, "ready");
    await supervisor.stop(stopped.instanceId, { graceMs: 2000 });
    expect(logs.records.filter((record) => record.msg === "agent crashed").map((record) => record.instanceId)).toEqual([crashing.instanceId]);
  });
});
