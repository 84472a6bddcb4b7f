import { describe, expect, it, vi } from "vitest";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { agentSpec, closeSupervisorAfterEach, eventWaitMs, setup } from "./supervisor-harness.js";

closeSupervisorAfterEach();

describe("Supervisor with real agent processes", () => {
  it("reports READY once the agent's grpc health check answers SERVING, with the contract env", async () => {
    const { supervisor, events, logs } = setup();
    const spec = await agentSpec();
    supervisor.start(spec);

    const starting = await events.state(spec.instanceId, "starting");
    const ready = await events.state(spec.instanceId, "ready");

    expect(ready).toMatchObject({ previous: "starting", reason: "healthy", pid: starting.pid, restarts: 0 });
    const info = supervisor.get(spec.instanceId);
    expect(info).toMatchObject({ state: "ready", pid: starting.pid, restarts: 0 });
    expect(info?.readyAtMs).toBeGreaterThanOrEqual(info?.startedAtMs ?? Number.POSITIVE_INFINITY);
    const serving = await logs.waitFor((r) => String(r.msg).includes("serving on"));
    expect(serving.msg).toBe(`agent health-agent instance ${spec.instanceId} serving on ${spec.agentAddr}`);
  });

  it("forwards stdout and stderr line by line, tagged with agent, instance and stream", async () => {
    const { supervisor, logs } = setup();
    const spec = await agentSpec();
    supervisor.start(spec);

    const stdout = await logs.waitFor((r) => String(r.msg).includes("serving on"));
    const stderr = await logs.waitFor((r) => String(r.msg).startsWith("sidecar at"));

    expect(stdout).toMatchObject({ agentName: "health-agent", instanceId: spec.instanceId, stream: "stdout" });
    expect(stderr).toMatchObject({
      agentName: "health-agent",
      instanceId: spec.instanceId,
      stream: "stderr",
      msg: "sidecar at 127.0.0.1:7431",
    });
  });

  it("samples the child's RSS for load reports", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec();
    supervisor.start(spec);
    await events.state(spec.instanceId, "ready");

    await vi.waitFor(() => expect(supervisor.get(spec.instanceId)?.rssBytes).toBeGreaterThan(1024 * 1024), {
      timeout: eventWaitMs,
    });
    expect(supervisor.list().map((info) => info.instanceId)).toEqual([spec.instanceId]);
  });

  it("sees kill -9 at once, restarts the agent and reports READY again", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec();
    supervisor.start(spec);
    const firstReady = await events.state(spec.instanceId, "ready");

    process.kill(firstReady.pid!, "SIGKILL");

    const exit = await events.exit(spec.instanceId);
    expect(exit).toMatchObject({ pid: firstReady.pid, signal: "SIGKILL", unexpected: true, reason: "killed by SIGKILL" });
    const backoff = await events.state(spec.instanceId, "backoff");
    expect(backoff).toMatchObject({ previous: "ready", signal: "SIGKILL", reason: "killed by SIGKILL" });
    const secondReady = await events.state(spec.instanceId, "ready", 2);
    expect(secondReady.pid).not.toBe(firstReady.pid);
    expect(secondReady.restarts).toBe(1);
    expect(events.statesOf(spec.instanceId)).toEqual(["starting", "ready", "backoff", "starting", "ready"]);
  });

  it("gives up on a crash loop: FAILED after maxRestarts restarts and exactly one failed event", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({ env: { HEALTH_AGENT_EXIT_AFTER_MS: "0" }, policy: { maxRestarts: 2 } });
    supervisor.start(spec);

    const failed = await events.state(spec.instanceId, "failed");

    expect(failed).toMatchObject({ reason: "crash loop", exitCode: 1, restarts: 2 });
    expect(events.exits.filter((e) => e.instanceId === spec.instanceId)).toHaveLength(3);
    expect(events.failures).toEqual([
      { instanceId: spec.instanceId, agentName: "health-agent", reason: "crash loop", restarts: 2 },
    ]);
    expect(supervisor.get(spec.instanceId)).toMatchObject({ state: "failed", restarts: 2 });
    expect(supervisor.get(spec.instanceId)?.pid).toBeUndefined();
  });

  it("on-failure leaves a clean exit (code 0) stopped", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({
      env: { HEALTH_AGENT_EXIT_AFTER_MS: "0", HEALTH_AGENT_EXIT_CODE: "0" },
      policy: { mode: "on-failure" },
    });
    supervisor.start(spec);

    const stopped = await events.state(spec.instanceId, "stopped");

    expect(stopped).toMatchObject({ previous: "starting", exitCode: 0, reason: "exited with code 0" });
    expect(events.statesOf(spec.instanceId)).toEqual(["starting", "stopped"]);
    expect(events.failures).toEqual([]);
  });

  it("on-failure restarts a non-zero exit", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({ env: { HEALTH_AGENT_EXIT_AFTER_MS: "0" }, policy: { mode: "on-failure" } });
    supervisor.start(spec);

    await events.state(spec.instanceId, "starting", 2);

    expect(events.statesOf(spec.instanceId).slice(0, 3)).toEqual(["starting", "backoff", "starting"]);
  });

  it("never restarts under policy never: a crash is FAILED with its exit reason", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({ env: { HEALTH_AGENT_EXIT_AFTER_MS: "0" }, policy: { mode: "never" } });
    supervisor.start(spec);

    const failed = await events.state(spec.instanceId, "failed");

    expect(failed).toMatchObject({ reason: "exited with code 1", exitCode: 1, restarts: 0 });
    expect(events.statesOf(spec.instanceId)).toEqual(["starting", "failed"]);
    expect(events.failures).toHaveLength(1);
  });

  it("kills an agent that does not become ready in time", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({
      env: { HEALTH_AGENT_NEVER_READY: "1" },
      policy: { mode: "never" },
      readinessTimeoutMs: 300,
    });
    supervisor.start(spec);

    const failed = await events.state(spec.instanceId, "failed");

    expect(failed).toMatchObject({ previous: "starting", reason: "readiness timeout", signal: "SIGKILL" });
  });

  it("reports a command that cannot be spawned", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({ command: "/nonexistent/agent", args: [], policy: { mode: "never" } });
    supervisor.start(spec);

    const failed = await events.state(spec.instanceId, "failed");

    expect(failed.reason).toBe("spawn failed: ENOENT");
  });

  it("waits for markReady when readiness is external (SDK agents on an Attach stream)", async () => {
    const { supervisor, events, logs } = setup();
    const spec = await agentSpec({ readiness: "external" });
    supervisor.start(spec);
    await logs.waitFor((r) => r.instanceId === spec.instanceId && String(r.msg).includes("serving on"));
    expect(supervisor.get(spec.instanceId)?.state).toBe("starting");

    expect(supervisor.markReady(spec.instanceId)).toBe(true);

    expect(await events.state(spec.instanceId, "ready")).toMatchObject({ reason: "attached" });
    expect(() => supervisor.markReady("no-such-instance")).toThrow(MeshError);
  });

  it("refuses a second live process under the same instance id", async () => {
    const { supervisor } = setup();
    const spec = await agentSpec();
    supervisor.start(spec);

    expect(() => supervisor.start(spec)).toThrow(expect.objectContaining({ kind: "alreadyExists" }));
  });
});
