/** Shared by the supervisor integration tests: real agent processes, in-memory logs, recorded events. */
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { afterEach } from "vitest";
import { systemClock } from "../../sdk/ts/src/core/clock.js";
import type { ProcessSpec, RestartPolicy } from "../../sidecar/supervisor/process-spec.js";
import type { ProcessState } from "../../sidecar/supervisor/process-state.js";
import type { ExitEvent, FailedEvent, StateEvent } from "../../sidecar/supervisor/supervisor-events.js";
import { type DrainHook, Supervisor } from "../../sidecar/supervisor/supervisor.js";

const healthAgentPath = fileURLToPath(new URL("../fixtures/agents/health-agent.mjs", import.meta.url));
export const eventWaitMs = 10_000;

/** Every pino record the supervisor (and the agents' forwarded output) wrote, parsed. */
export class LogSink {
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
export class EventLog {
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
export function isAlive(pid: number): boolean {
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

export async function agentSpec(
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

export function setup(options: { drain?: DrainHook } = {}): { supervisor: Supervisor; events: EventLog; logs: LogSink } {
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

/** Call once per test file: closes the supervisor setup() made (and so its children) after each test. */
export function closeSupervisorAfterEach(): void {
  afterEach(async () => {
    await supervisor?.close({ graceMs: 0 });
    supervisor = undefined;
  });
}

