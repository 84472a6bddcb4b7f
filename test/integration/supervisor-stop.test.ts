import { describe, expect, it, vi } from "vitest";
import { agentSpec, closeSupervisorAfterEach, eventWaitMs, isAlive, setup } from "./supervisor-harness.js";

closeSupervisorAfterEach();

describe("Supervisor stop, restart, limits and close", () => {
  it("stops gracefully: DRAINING, drain hook, SIGTERM, the child exits, STOPPED", async () => {
    const order: string[] = [];
    const { supervisor, events, logs } = setup({
      drain: async (instanceId) => {
        order.push(`drain ${instanceId}`);
      },
    });
    const spec = await agentSpec();
    supervisor.on("state", (event) => order.push(event.state));
    supervisor.start(spec);
    const ready = await events.state(spec.instanceId, "ready");

    await supervisor.stop(spec.instanceId);

    expect(order).toEqual(["starting", "ready", "draining", `drain ${spec.instanceId}`, "stopping", "stopped"]);
    const stopped = await events.state(spec.instanceId, "stopped");
    expect(stopped).toMatchObject({ exitCode: 0, signal: null, pid: ready.pid });
    expect(await events.exit(spec.instanceId)).toMatchObject({ unexpected: false });
    await logs.waitFor((r) => r.instanceId === spec.instanceId && r.msg === "received SIGTERM");
    expect(isAlive(ready.pid!)).toBe(false);
  });

  it("never restarts an agent that crashes while draining", async () => {
    let crashedPid: number | undefined;
    const { supervisor, events } = setup({
      drain: async (instanceId) => {
        crashedPid = supervisor.get(instanceId)?.pid;
        process.kill(crashedPid!, "SIGKILL");
        await events.exit(instanceId);
      },
    });
    const spec = await agentSpec();
    supervisor.start(spec);
    await events.state(spec.instanceId, "ready");

    await supervisor.stop(spec.instanceId);

    expect(events.statesOf(spec.instanceId)).toEqual(["starting", "ready", "draining", "stopped"]);
    expect(await events.state(spec.instanceId, "stopped")).toMatchObject({ signal: "SIGKILL", pid: crashedPid });
  });

  it("cuts a drain hook that hangs off at drainTimeoutMs and stops anyway", async () => {
    const { supervisor, events } = setup({ drain: () => new Promise<void>(() => undefined) });
    const spec = await agentSpec();
    supervisor.start(spec);
    await events.state(spec.instanceId, "ready");

    await supervisor.stop(spec.instanceId, { drainTimeoutMs: 50 });

    expect(await events.state(spec.instanceId, "stopped")).toMatchObject({ exitCode: 0, previous: "stopping" });
  });

  it("SIGKILLs an agent that ignores SIGTERM once the grace period is over", async () => {
    const { supervisor, events, logs } = setup();
    const spec = await agentSpec({ env: { HEALTH_AGENT_IGNORE_SIGTERM: "1" }, gracefulStopMs: 200 });
    supervisor.start(spec);
    await events.state(spec.instanceId, "ready");

    await supervisor.stop(spec.instanceId);

    expect(await events.state(spec.instanceId, "stopped")).toMatchObject({ signal: "SIGKILL", previous: "stopping" });
    await logs.waitFor((r) => r.instanceId === spec.instanceId && r.msg === "received SIGTERM");
    expect(events.statesOf(spec.instanceId)).not.toContain("backoff");
  });

  it("cancels a pending restart when stopped during backoff", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({
      env: { HEALTH_AGENT_EXIT_AFTER_MS: "0" },
      policy: { initialBackoffMs: 60_000, maxBackoffMs: 60_000 },
    });
    supervisor.start(spec);
    await events.state(spec.instanceId, "backoff");

    await supervisor.stop(spec.instanceId);

    expect(events.statesOf(spec.instanceId)).toEqual(["starting", "backoff", "stopped"]);
    expect(supervisor.get(spec.instanceId)?.state).toBe("stopped");
  });

  it("restarts on request without counting a crash", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec();
    supervisor.start(spec);
    const firstReady = await events.state(spec.instanceId, "ready");

    await supervisor.restart(spec.instanceId);
    const secondReady = await events.state(spec.instanceId, "ready", 2);

    expect(events.statesOf(spec.instanceId)).toEqual([
      "starting",
      "ready",
      "draining",
      "stopping",
      "stopped",
      "starting",
      "ready",
    ]);
    expect(secondReady.pid).not.toBe(firstReady.pid);
    expect(secondReady.restarts).toBe(0);
    expect(isAlive(firstReady.pid!)).toBe(false);
  });

  it("kills an agent over its memory limit and says why", async () => {
    const { supervisor, events } = setup();
    const spec = await agentSpec({
      env: { HEALTH_AGENT_ALLOCATE_BYTES: String(256 * 1024 * 1024) },
      memoryLimitBytes: 160 * 1024 * 1024,
      policy: { mode: "never" },
    });
    supervisor.start(spec);

    const failed = await events.state(spec.instanceId, "failed");

    expect(failed).toMatchObject({ reason: "memory limit exceeded", signal: "SIGKILL" });
    expect(events.failures).toEqual([expect.objectContaining({ reason: "memory limit exceeded" })]);
  });

  it("close() leaves no agent or grandchild running", async () => {
    const { supervisor, events, logs } = setup();
    const specs = [await agentSpec({ env: { HEALTH_AGENT_SPAWN_GRANDCHILD: "1" } }), await agentSpec()];
    for (const spec of specs) supervisor.start(spec);
    const pids = await Promise.all(specs.map(async (spec) => (await events.state(spec.instanceId, "ready")).pid!));
    const grandchildLine = await logs.waitFor((r) => String(r.msg).startsWith("grandchild pid"));
    const grandchildPid = Number(String(grandchildLine.msg).split(" ")[2]);
    expect(isAlive(grandchildPid)).toBe(true);

    await supervisor.close({ graceMs: 1_000 });

    for (const pid of pids) expect(isAlive(pid)).toBe(false);
    // The grandchild was SIGKILLed with its group; its reaping by init may lag a moment.
    await vi.waitFor(() => expect(isAlive(grandchildPid)).toBe(false), { timeout: eventWaitMs });
    expect(supervisor.list().every((info) => info.state === "stopped")).toBe(true);
    expect(() => supervisor.start(specs[1]!)).toThrow(expect.objectContaining({ kind: "unavailable" }));
  });
});
