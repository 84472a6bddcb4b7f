import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { systemClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { ProcessSpec, RestartPolicy } from "../../sidecar/supervisor/process-spec.js";
import type { ProcessState } from "../../sidecar/supervisor/process-state.js";
import type { ExitEvent, FailedEvent, StateEvent } from "../../sidecar/supervisor/supervisor-events.js";
import { type DrainHook, Supervisor } from "../../sidecar/supervisor/supervisor.js";

const healthAgentPath = fileURLToPath(new URL("../fixtures/agents/health-agent.mjs", import.meta.url));
const eventWaitMs = 10_000;

/** Every pino record the supervisor (and the agents' forwarded output) wrote, parsed. */
class LogSink {
  readonly records: Record<string, unknown>[] = [];
  private waiters: { match: (record: Record<string, unknown>) => boolean; resolve: () => void }[] = [];

  write(line: string): void {
    const record = JSON.parse(line) as Record<string, unknown>;
    this.records.push(record);
    this.waiters = this.waiters.filter((waiter) => {
      if (!waiter.match(record)) return true;
      waiter.resolve();
      return false;
    });
  }

  waitFor(match: (record: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    const found = this.records.find(match);
    if (found !== undefined) return Promise.resolve(found);
    return withTimeout(
      new Promise((resolve) => {
        this.waiters.push({ match, resolve: () => resolve(this.records.find(match)!) });
      }),
      "log record",
    );
  }
}

/** Records supervisor events from creation, so a test can wait for one that already happened. */
class EventLog {
  readonly states: StateEvent[] = [];
  readonly exits: ExitEvent[] = [];
  readonly failures: FailedEvent[] = [];
  private waiters: (() => void)[] = [];

  constructor(supervisor: Supervisor) {
    supervisor.on("state", (event) => this.push(this.states, event));
    supervisor.on("exit", (event) => this.push(this.exits, event));
    supervisor.on("failed", (event) => this.push(this.failures, event));
  }

  /** The nth (1-based) state event of instanceId entering `state`. */
  state(instanceId: string, state: ProcessState, nth = 1): Promise<StateEvent> {
    return this.waitFor(() => this.states.filter((e) => e.instanceId === instanceId && e.state === state)[nth - 1]);
  }

  exit(instanceId: string, nth = 1): Promise<ExitEvent> {
    return this.waitFor(() => this.exits.filter((e) => e.instanceId === instanceId)[nth - 1]);
  }

  statesOf(instanceId: string): ProcessState[] {
    return this.states.filter((e) => e.instanceId === instanceId).map((e) => e.state);
  }

  private push<T>(list: T[], event: T): void {
    list.push(event);
    for (const wake of this.waiters) wake();
  }

  private waitFor<T>(find: () => T | undefined): Promise<T> {
    const found = find();
    if (found !== undefined) return Promise.resolve(found);
    return withTimeout(
      new Promise<T>((resolve) => {
        const check = (): void => {
          const event = find();
          if (event === undefined) return;
          this.waiters = this.waiters.filter((waiter) => waiter !== check);
          resolve(event);
        };
        this.waiters.push(check);
      }),
      "supervisor event",
    );
  }
}

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${eventWaitMs} ms`)), eventWaitMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}

/** Alive means running: a zombie left for a non-reaping init to collect counts as gone. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

const fastPolicy: RestartPolicy = {
  mode: "always",
  maxRestarts: 5,
  windowMs: 10_000,
  initialBackoffMs: 10,
  maxBackoffMs: 50,
};

let nextInstance = 0;

async function agentSpec(
  options: { env?: Record<string, string>; policy?: Partial<RestartPolicy> } & Partial<ProcessSpec> = {},
): Promise<ProcessSpec> {
  const { env = {}, policy = {}, ...rest } = options;
  nextInstance += 1;
  return {
    instanceId: `health-agent-${nextInstance}`,
    agentName: "health-agent",
    command: process.execPath,
    args: [healthAgentPath],
    env,
    restartPolicy: { ...fastPolicy, ...policy },
    readinessTimeoutMs: 5_000,
    gracefulStopMs: 2_000,
    agentAddr: `127.0.0.1:${await freePort()}`,
    sidecarAddr: "127.0.0.1:7431",
    ...rest,
  };
}

let supervisor: Supervisor | undefined;

function setup(options: { drain?: DrainHook } = {}): { supervisor: Supervisor; events: EventLog; logs: LogSink } {
  const logs = new LogSink();
  const created = new Supervisor({
    logger: pino({ level: "debug" }, logs),
    clock: systemClock,
    random: () => 0.5,
    memoryPollIntervalMs: 50,
    ...options,
  });
  supervisor = created;
  return { supervisor: created, events: new EventLog(created), logs };
}

afterEach(async () => {
  await supervisor?.close({ graceMs: 0 });
  supervisor = undefined;
});

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

    await vi.waitFor(() => expect(supervisor.get(spec.instanceId)?.rssBytes).toBeGreaterThan(1024 * 1024));
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
    await vi.waitFor(() => expect(isAlive(grandchildPid)).toBe(false));
    expect(supervisor.list().every((info) => info.state === "stopped")).toBe(true);
    expect(() => supervisor.start(specs[1]!)).toThrow(expect.objectContaining({ kind: "unavailable" }));
  });
});
