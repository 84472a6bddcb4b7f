import { type ChildProcess, spawn } from "node:child_process";
import { basename } from "node:path";
import type { Logger } from "pino";
import type { Clock, RandomSource } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { Backoff } from "../../sdk/ts/src/core/backoff.js";
import { type Timers, systemTimers } from "../../sdk/ts/src/core/dataplane/timers.js";
import { type HealthCheckerFactory, type ReadinessProbe, createGrpcHealthChecker, createGrpcHealthProbe } from "./health-probe.js";
import { HealthWatch, type WatchedHealth } from "./health-watch.js";
import { forwardLines } from "./output-forwarder.js";
import { type RssReader, readProcRssBytes } from "./process-memory.js";
import { type ProcessSpec, validateProcessSpec } from "./process-spec.js";
import { type ProcessState, isRunning, transition } from "./process-state.js";
import { RestartIntensity } from "./restart-intensity.js";
import type { StateEvent, SupervisorEventMap, SupervisorListener } from "./supervisor-events.js";

/** Awaited between DRAINING and SIGTERM, e.g. until the instance's in-flight calls have finished. */
export type DrainHook = (instanceId: string) => Promise<void>;

export interface SupervisorOptions {
  logger: Logger;
  clock: Clock;
  random: RandomSource;
  drain?: DrainHook;
  probe?: ReadinessProbe;
  /** Health checks after READY (specs with `liveness`); default grpc.health.v1 over a channel per process. */
  healthChecker?: HealthCheckerFactory;
  /** Timers of those checks; default the system's. */
  timers?: Timers;
  readRssBytes?: RssReader;
  /** RSS sampling period (limit enforcement and load reports); default 500 ms. */
  memoryPollIntervalMs?: number;
  /** Pause between grpc.health.v1 checks while starting; default 25 ms. */
  readinessPollIntervalMs?: number;
  /** Names copied from the sidecar's environment into every child; default defaultInheritedEnvNames. */
  inheritedEnvNames?: readonly string[];
}

export interface StopOptions {
  /** SIGTERM → SIGKILL delay; default the spec's gracefulStopMs. */
  graceMs?: number;
  /** Upper bound on the drain hook; default the spec's gracefulStopMs. */
  drainTimeoutMs?: number;
}

export interface CloseOptions {
  /** SIGTERM → SIGKILL delay for every child; default each spec's gracefulStopMs. */
  graceMs?: number;
}

export interface ManagedProcessInfo {
  instanceId: string;
  agentName: string;
  state: ProcessState;
  /** Set while a child exists (starting, ready, draining, stopping). */
  pid?: number;
  restarts: number;
  startedAtMs?: number;
  readyAtMs?: number;
  /** Last sampled resident set size of the child, for load reports. */
  rssBytes?: number;
  lastExit?: { exitCode: number | null; signal: string | null; reason: string; atMs: number };
}

/**
 * The sidecar's own environment may carry a join token or database URLs, so children get only
 * these names from it, plus their spec's env and the AGENTMESH_* contract variables.
 */
export const defaultInheritedEnvNames: readonly string[] = [
  "PATH",
  "HOME",
  "USER",
  "LANG",
  "LC_ALL",
  "TZ",
  "TMPDIR",
  "SHELL",
  "NODE_EXTRA_CA_CERTS",
  "SYSTEMROOT",
];

const defaultMemoryPollIntervalMs = 500;
const defaultReadinessPollIntervalMs = 25;
const bytesPerMebibyte = 1024 * 1024;
/** V8's heap is only part of RSS (code, buffers, stacks); leave room so our RSS kill stays the backstop. */
const nodeHeapShareOfLimit = 0.75;
const minimumNodeHeapMebibytes = 16;

/** One spawned child. A restart creates a new Run; events from an old one are ignored. */
interface Run {
  readonly child: ChildProcess;
  readonly pid: number | undefined;
  readonly startedAtMs: number;
  readyAtMs?: number;
  rssBytes?: number;
  exited: boolean;
  /** Set when we kill the child for a reason of our own; becomes the exit reason. */
  killReason?: string;
  /** True when the exit was asked for (stop, restart, close). */
  stopRequested: boolean;
  readonly exited$: Promise<void>;
  markExited: () => void;
  /** Stops readiness polling and the readiness deadline once READY, exited or stopping. */
  readonly readiness: AbortController;
  readinessTimer?: NodeJS.Timeout;
  memoryTimer?: NodeJS.Timeout;
  /** Health checks after READY (plain agents). */
  healthWatch?: HealthWatch;
  /** Armed while unresponsive: kills the process when it stays so for the spec's hungRestartAfterMs. */
  hungTimer?: NodeJS.Timeout;
}

interface Managed {
  readonly spec: ProcessSpec;
  state: ProcessState;
  restarts: number;
  readonly intensity: RestartIntensity;
  /** Restart delays: full jitter, so children that crashed together do not restart together. */
  readonly backoff: Backoff;
  run?: Run;
  restartTimer?: NodeJS.Timeout;
  stopping?: Promise<void>;
  lastExit?: ManagedProcessInfo["lastExit"];
}

/**
 * Starts, watches and restarts agent processes (DESIGN §4, §6).
 *
 * - A crash is seen from the child's 'exit' event, so it is reported within the event loop turn.
 * - Each child leads its own process group (detached), and every kill targets the group, so
 *   grandchildren (a shell wrapper's node, a worker pool) die with it.
 * - The memory limit is enforced by sampling RSS, not by cgroups: a sidecar that is not root (or
 *   runs in an unprivileged container) cannot create cgroups, and RLIMIT_AS breaks V8 and Go, which
 *   reserve far more address space than they use. Node children also get --max-old-space-size so
 *   they usually fail with a clean OOM before the RSS kill.
 * - close() stops every child; on process exit, remaining groups are SIGKILLed synchronously. A
 *   sidecar killed by SIGKILL cannot do either; that is the one case that leaves orphans.
 */
export class Supervisor {
  private readonly processes = new Map<string, Managed>();
  private readonly listeners: { [E in keyof SupervisorEventMap]: Set<SupervisorListener<E>> } = {
    state: new Set(),
    exit: new Set(),
    failed: new Set(),
  };
  private readonly log: Logger;
  private readonly probe: ReadinessProbe;
  private readonly healthChecker: HealthCheckerFactory;
  private readonly timers: Timers;
  private readonly readRssBytes: RssReader;
  private readonly memoryPollIntervalMs: number;
  private readonly readinessPollIntervalMs: number;
  private readonly inheritedEnvNames: readonly string[];
  private closed = false;
  private readonly killAllOnExit = (): void => {
    for (const managed of this.processes.values()) {
      if (managed.run !== undefined && !managed.run.exited) signalGroup(managed.run, "SIGKILL");
    }
  };

  constructor(private readonly options: SupervisorOptions) {
    this.log = options.logger.child({ component: "supervisor" });
    this.probe = options.probe ?? createGrpcHealthProbe();
    this.healthChecker = options.healthChecker ?? createGrpcHealthChecker;
    this.timers = options.timers ?? unrefTimers;
    this.readRssBytes = options.readRssBytes ?? readProcRssBytes;
    this.memoryPollIntervalMs = options.memoryPollIntervalMs ?? defaultMemoryPollIntervalMs;
    this.readinessPollIntervalMs = options.readinessPollIntervalMs ?? defaultReadinessPollIntervalMs;
    this.inheritedEnvNames = options.inheritedEnvNames ?? defaultInheritedEnvNames;
    process.on("exit", this.killAllOnExit);
  }

  on<E extends keyof SupervisorEventMap>(event: E, listener: SupervisorListener<E>): this {
    this.listeners[event].add(listener);
    return this;
  }

  off<E extends keyof SupervisorEventMap>(event: E, listener: SupervisorListener<E>): this {
    this.listeners[event].delete(listener);
    return this;
  }

  /** Spawns the process; READY (or a failure) arrives as a 'state' event. */
  start(spec: ProcessSpec): void {
    if (this.closed) throw new MeshError("unavailable", "supervisor is closed");
    validateProcessSpec(spec);
    const existing = this.processes.get(spec.instanceId);
    if (existing !== undefined && existing.state !== "stopped" && existing.state !== "failed") {
      throw new MeshError("alreadyExists", `instance ${spec.instanceId} is already supervised`);
    }
    const policy = spec.restartPolicy;
    const managed: Managed = {
      spec,
      state: "stopped",
      restarts: 0,
      intensity: new RestartIntensity(policy, this.options.clock),
      backoff: new Backoff(
        {
          initialMs: policy.initialBackoffMs,
          maxMs: policy.maxBackoffMs,
          multiplier: 2,
          jitter: "full",
          resetAfterRunMs: policy.resetBackoffAfterMs ?? policy.windowMs,
        },
        this.options.random,
      ),
    };
    this.processes.set(spec.instanceId, managed);
    this.launch(managed, "start requested");
  }

  /**
   * READY signal for agents that do not serve grpc.health.v1 (SDK agents attached over a stream).
   * Returns false when the instance is not starting or ready (e.g. it exited meanwhile).
   */
  markReady(instanceId: string): boolean {
    const managed = this.require(instanceId);
    if (managed.state === "ready" || managed.state === "unresponsive") return true;
    if (managed.state !== "starting" || managed.run === undefined) return false;
    this.becomeReady(managed, managed.run, "attached");
    return true;
  }

  /**
   * A running instance stopped answering (Attach pings, health checks), or answers that it is
   * not serving: UNRESPONSIVE, out of routing. With `restart` (it is hung, not merely NOT_SERVING),
   * a process still unresponsive after its spec's hungRestartAfterMs is killed with SIGKILL (a
   * stopped process cannot handle SIGTERM) and restarted under its restart policy, counted as a
   * restart. Returns false when the instance is not ready or unresponsive (it exited meanwhile).
   */
  markUnresponsive(instanceId: string, reason: string, options: { restart: boolean }): boolean {
    const managed = this.processes.get(instanceId);
    const run = managed?.run;
    if (managed === undefined || run === undefined || run.exited) return false;
    if (managed.state !== "ready" && managed.state !== "unresponsive") return false;
    if (options.restart) this.armHungKill(managed, run);
    else this.disarmHungKill(run);
    if (managed.state === "ready") this.setState(managed, "unresponsive", reason, { pid: run.pid });
    return true;
  }

  /** It answers again: READY, the restart bound disarmed. Returns false when it is not unresponsive or ready. */
  markResponsive(instanceId: string, reason: string): boolean {
    const managed = this.processes.get(instanceId);
    const run = managed?.run;
    if (managed === undefined || run === undefined || run.exited) return false;
    if (managed.state === "ready") return true;
    if (managed.state !== "unresponsive") return false;
    this.disarmHungKill(run);
    this.setState(managed, "ready", reason, { pid: run.pid });
    return true;
  }

  /**
   * DRAINING → drain hook → SIGTERM to the group → graceMs → SIGKILL → STOPPED.
   * Resolves once the child has exited. A stopped process is never restarted.
   */
  stop(instanceId: string, options: StopOptions = {}): Promise<void> {
    const managed = this.require(instanceId);
    return this.stopManaged(managed, options, true);
  }

  /** Graceful stop, then a fresh start with the same spec; not counted as a crash. */
  async restart(instanceId: string, options: StopOptions = {}): Promise<void> {
    const managed = this.require(instanceId);
    if (this.closed) throw new MeshError("unavailable", "supervisor is closed");
    if (managed.state === "backoff") clearTimeout(managed.restartTimer);
    else await this.stopManaged(managed, options, true);
    // Someone may have started a new process under this id, or closed us, while we waited.
    if (this.closed || this.processes.get(instanceId) !== managed) return;
    if (managed.state !== "stopped" && managed.state !== "failed" && managed.state !== "backoff") return;
    managed.intensity.reset();
    managed.backoff.reset();
    this.launch(managed, "restart requested");
  }

  list(): ManagedProcessInfo[] {
    return [...this.processes.values()].map((managed) => toInfo(managed));
  }

  get(instanceId: string): ManagedProcessInfo | undefined {
    const managed = this.processes.get(instanceId);
    return managed === undefined ? undefined : toInfo(managed);
  }

  /** Forgets a stopped or failed instance; a live one must be stopped first. */
  remove(instanceId: string): boolean {
    const managed = this.processes.get(instanceId);
    if (managed === undefined) return false;
    if (managed.state !== "stopped" && managed.state !== "failed") {
      throw new MeshError("failedPrecondition", `instance ${instanceId} is ${managed.state}; stop it first`);
    }
    return this.processes.delete(instanceId);
  }

  /** Stops every child (no drain: the sidecar drains before closing) and refuses new starts. */
  async close(options: CloseOptions = {}): Promise<void> {
    this.closed = true;
    const stops = [...this.processes.values()].map((managed) =>
      this.stopManaged(managed, { graceMs: options.graceMs }, false),
    );
    await Promise.all(stops);
    process.off("exit", this.killAllOnExit);
  }

  private require(instanceId: string): Managed {
    const managed = this.processes.get(instanceId);
    if (managed === undefined) throw new MeshError("notFound", `instance ${instanceId} is not supervised`);
    return managed;
  }

  private launch(managed: Managed, reason: string): void {
    const { spec } = managed;
    const run = this.spawnRun(spec);
    managed.run = run;
    this.setState(managed, "starting", reason, { pid: run.pid });
    if (run.pid === undefined) return; // spawn failed; the 'error' handler reports the exit.

    const { agentName, instanceId } = spec;
    forwardLines(run.child.stdout!, this.options.logger.child({ agentName, instanceId, stream: "stdout" }));
    forwardLines(run.child.stderr!, this.options.logger.child({ agentName, instanceId, stream: "stderr" }));

    run.readinessTimer = setTimeout(() => {
      if (managed.run !== run || managed.state !== "starting") return;
      this.killFor(run, "readiness timeout");
    }, spec.readinessTimeoutMs).unref();
    if ((spec.readiness ?? "grpc-health") === "grpc-health") this.probeReadiness(managed, run);
    this.watchMemory(managed, run);
  }

  private spawnRun(spec: ProcessSpec): Run {
    let markExited = (): void => undefined;
    const exited$ = new Promise<void>((resolve) => {
      markExited = resolve;
    });
    const child = spawn(spec.command, [...spec.args], {
      cwd: spec.cwd,
      env: this.childEnv(spec),
      // Own process group: signals to -pid reach grandchildren too.
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const run: Run = {
      child,
      pid: child.pid,
      startedAtMs: this.options.clock.nowMs(),
      exited: false,
      stopRequested: false,
      exited$,
      markExited,
      readiness: new AbortController(),
    };
    child.on("exit", (exitCode, signal) => this.onExit(spec.instanceId, run, exitCode, signal));
    child.on("error", (error: NodeJS.ErrnoException) => {
      // Without a pid the spawn itself failed (ENOENT, EACCES, bad cwd) and no 'exit' will follow.
      if (run.pid === undefined) {
        this.onExit(spec.instanceId, run, null, null, `spawn failed: ${error.code ?? "error"}`);
      } else this.log.debug({ err: error, instanceId: spec.instanceId }, "child process error");
    });
    return run;
  }

  private childEnv(spec: ProcessSpec): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const name of this.inheritedEnvNames) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    Object.assign(env, spec.env);
    // Contract names (DESIGN §1) win over the spec: the agent must serve where we probe.
    env.AGENTMESH_AGENT_ADDR = spec.agentAddr;
    env.AGENTMESH_SIDECAR_ADDR = spec.sidecarAddr;
    env.AGENTMESH_INSTANCE_ID = spec.instanceId;
    env.AGENTMESH_AGENT_NAME = spec.agentName;
    if (spec.memoryLimitBytes !== undefined && isNodeCommand(spec.command)) {
      const nodeOptions = env.NODE_OPTIONS ?? "";
      if (!nodeOptions.includes("--max-old-space-size")) {
        const heapMebibytes = Math.max(
          minimumNodeHeapMebibytes,
          Math.floor((spec.memoryLimitBytes * nodeHeapShareOfLimit) / bytesPerMebibyte),
        );
        env.NODE_OPTIONS = `${nodeOptions} --max-old-space-size=${heapMebibytes}`.trim();
      }
    }
    return env;
  }

  private probeReadiness(managed: Managed, run: Run): void {
    const { spec } = managed;
    this.probe
      .waitUntilServing(spec.agentAddr, {
        service: spec.healthService ?? "",
        intervalMs: this.readinessPollIntervalMs,
        signal: run.readiness.signal,
      })
      .then((serving) => {
        if (serving && managed.run === run && managed.state === "starting") this.becomeReady(managed, run, "healthy");
      })
      .catch((error: unknown) => this.log.error({ err: error, instanceId: spec.instanceId }, "readiness probe failed"));
  }

  private becomeReady(managed: Managed, run: Run, reason: string): void {
    run.readyAtMs = this.options.clock.nowMs();
    this.endReadiness(run);
    this.setState(managed, "ready", reason, { pid: run.pid });
    // Ready by its health check: a plain agent, whose health port stays the only sign of life.
    if (reason === "healthy" && managed.spec.liveness !== undefined) this.watchHealth(managed, run, managed.spec.liveness);
  }

  private watchHealth(managed: Managed, run: Run, timing: NonNullable<ProcessSpec["liveness"]>): void {
    const { spec } = managed;
    run.healthWatch = new HealthWatch({
      checker: this.healthChecker(spec.agentAddr),
      service: spec.healthService ?? "",
      timing,
      clock: this.options.clock,
      timers: this.timers,
      onChange: (health: WatchedHealth, silentMs: number) => {
        if (managed.run !== run || run.exited) return;
        if (health === "serving") this.markResponsive(spec.instanceId, "health check answers SERVING again");
        else if (health === "hung") this.markUnresponsive(spec.instanceId, `health checks unanswered for ${Math.round(silentMs)} ms`, { restart: true });
        else this.markUnresponsive(spec.instanceId, "health check answers NOT_SERVING", { restart: false });
      },
    });
    run.healthWatch.start();
  }

  private armHungKill(managed: Managed, run: Run): void {
    const afterMs = managed.spec.hungRestartAfterMs;
    if (afterMs === undefined || run.hungTimer !== undefined) return;
    run.hungTimer = setTimeout(() => {
      run.hungTimer = undefined;
      if (managed.run !== run || managed.state !== "unresponsive") return;
      const { agentName, instanceId } = managed.spec;
      this.log.warn({ agentName, instanceId, pid: run.pid, durationMs: afterMs }, "agent still hung, killing it to restart");
      this.killFor(run, `hung for ${afterMs} ms`);
    }, afterMs).unref();
  }

  private disarmHungKill(run: Run): void {
    clearTimeout(run.hungTimer);
    run.hungTimer = undefined;
  }

  /** Everything that watches a run once it is up; stopped when it exits or is being stopped. */
  private endWatching(run: Run): void {
    this.disarmHungKill(run);
    run.healthWatch?.stop();
    run.healthWatch = undefined;
  }

  private endReadiness(run: Run): void {
    clearTimeout(run.readinessTimer);
    run.readiness.abort();
  }

  private watchMemory(managed: Managed, run: Run): void {
    const { pid } = run;
    if (pid === undefined) return;
    let sampling = false;
    run.memoryTimer = setInterval(() => {
      // A slow /proc read must not pile up reads for the same child.
      if (sampling) return;
      sampling = true;
      this.readRssBytes(pid)
        .then((rssBytes) => {
          if (run.exited || rssBytes === undefined) return;
          run.rssBytes = rssBytes;
          const limitBytes = managed.spec.memoryLimitBytes;
          if (limitBytes !== undefined && rssBytes > limitBytes && run.killReason === undefined) {
            this.log.warn(
              { agentName: managed.spec.agentName, instanceId: managed.spec.instanceId, pid, rssBytes, limitBytes },
              "memory limit exceeded, killing agent",
            );
            this.killFor(run, "memory limit exceeded");
          }
        })
        .catch((error: unknown) => this.log.debug({ err: error, pid }, "rss sample failed"))
        .finally(() => {
          sampling = false;
        });
    }, this.memoryPollIntervalMs).unref();
  }

  private killFor(run: Run, reason: string): void {
    if (run.exited) return;
    run.killReason ??= reason;
    signalGroup(run, "SIGKILL");
  }

  private onExit(
    instanceId: string,
    run: Run,
    exitCode: number | null,
    signal: NodeJS.Signals | null,
    spawnError?: string,
  ): void {
    if (run.exited) return;
    run.exited = true;
    this.endReadiness(run);
    this.endWatching(run);
    clearInterval(run.memoryTimer);
    // The leader is gone; anything left in its group is an orphan of this agent.
    signalGroup(run, "SIGKILL");
    run.markExited();

    const managed = this.processes.get(instanceId);
    if (managed === undefined || managed.run !== run) return;
    const nowMs = this.options.clock.nowMs();
    const uptimeMs = nowMs - run.startedAtMs;
    const reason = run.killReason ?? spawnError ?? describeExit(exitCode, signal);
    managed.lastExit = { exitCode, signal, reason, atMs: nowMs };
    const exitFields = { pid: run.pid, exitCode, signal };
    const unexpected = !run.stopRequested && managed.state !== "draining" && managed.state !== "stopping";
    if (unexpected) {
      // Not asked for: a crash (or our kill for memory, readiness, a hang), worth an operator's look.
      this.log.warn({ agentName: managed.spec.agentName, instanceId, pid: run.pid, exitCode, signal, reason, uptimeMs }, "agent crashed");
    }
    this.emit("exit", {
      instanceId,
      agentName: managed.spec.agentName,
      pid: run.pid,
      exitCode,
      signal,
      reason,
      uptimeMs,
      unexpected,
    });

    if (run.stopRequested || managed.state === "draining" || managed.state === "stopping") {
      this.setState(managed, "stopped", reason, exitFields);
      return;
    }
    const failure = exitCode !== 0 || signal !== null || run.killReason !== undefined || spawnError !== undefined;
    const mode = managed.spec.restartPolicy.mode;
    if (mode === "never" || (mode === "on-failure" && !failure)) {
      this.setState(managed, failure ? "failed" : "stopped", reason, exitFields);
      if (failure) this.emitFailed(managed, reason);
      return;
    }
    if (!managed.intensity.admitRestart()) {
      this.setState(managed, "failed", "crash loop", exitFields);
      this.emitFailed(managed, "crash loop");
      return;
    }
    const restartInMs = managed.backoff.nextDelayMs(uptimeMs);
    this.setState(managed, "backoff", reason, { ...exitFields, restartInMs });
    managed.restartTimer = setTimeout(() => {
      managed.restartTimer = undefined;
      if (this.closed || managed.state !== "backoff" || this.processes.get(instanceId) !== managed) return;
      managed.restarts += 1;
      this.launch(managed, "restart after exit");
    }, restartInMs).unref();
  }

  /** One stop at a time per instance: concurrent callers share the same promise. */
  private stopManaged(managed: Managed, options: StopOptions, drain: boolean): Promise<void> {
    if (managed.stopping === undefined) {
      managed.stopping = this.runStop(managed, options, drain).finally(() => {
        managed.stopping = undefined;
      });
    }
    return managed.stopping;
  }

  private async runStop(managed: Managed, options: StopOptions, drain: boolean): Promise<void> {
    const { spec } = managed;
    if (managed.state === "stopped") return;
    if (managed.state === "backoff" || managed.state === "failed") {
      clearTimeout(managed.restartTimer);
      managed.restartTimer = undefined;
      this.setState(managed, "stopped", "stop requested");
      return;
    }
    const run = managed.run;
    if (run === undefined) return;
    run.stopRequested = true;
    this.endReadiness(run);
    this.endWatching(run);
    if (managed.state === "ready" && drain) {
      this.setState(managed, "draining", "stop requested", { pid: run.pid });
      await this.runDrainHook(spec.instanceId, options.drainTimeoutMs ?? spec.gracefulStopMs);
    }
    if (run.exited) return;
    this.setState(managed, "stopping", "stop requested", { pid: run.pid });
    signalGroup(run, "SIGTERM");
    const killTimer = setTimeout(() => {
      const fields = { agentName: spec.agentName, instanceId: spec.instanceId, pid: run.pid };
      this.log.warn(fields, "grace period over, sending SIGKILL");
      signalGroup(run, "SIGKILL");
    }, options.graceMs ?? spec.gracefulStopMs);
    await run.exited$;
    clearTimeout(killTimer);
  }

  private async runDrainHook(instanceId: string, timeoutMs: number): Promise<void> {
    const drain = this.options.drain;
    if (drain === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    try {
      const outcome = await Promise.race([drain(instanceId).then(() => "drained" as const), deadline]);
      if (outcome === "timeout") {
        this.log.warn({ instanceId, durationMs: timeoutMs }, "drain timed out, stopping anyway");
      }
    } catch (error) {
      this.log.warn({ err: error, instanceId }, "drain hook failed, stopping anyway");
    } finally {
      clearTimeout(timer);
    }
  }

  private setState(
    managed: Managed,
    to: ProcessState,
    reason: string,
    fields: Partial<Pick<StateEvent, "pid" | "exitCode" | "signal" | "restartInMs">> = {},
  ): void {
    const previous = managed.state;
    managed.state = transition(previous, to);
    const event: StateEvent = {
      instanceId: managed.spec.instanceId,
      agentName: managed.spec.agentName,
      state: to,
      previous,
      reason,
      restarts: managed.restarts,
      ...withoutUndefined(fields),
    };
    this.log.info(event, "agent process state changed");
    this.emit("state", event);
  }

  private emitFailed(managed: Managed, reason: string): void {
    this.emit("failed", {
      instanceId: managed.spec.instanceId,
      agentName: managed.spec.agentName,
      reason,
      restarts: managed.restarts,
    });
  }

  private emit<E extends keyof SupervisorEventMap>(event: E, payload: SupervisorEventMap[E]): void {
    for (const listener of [...this.listeners[event]] as SupervisorListener<E>[]) {
      // A throwing listener must not leave a process half-way through a transition.
      try {
        listener(payload);
      } catch (error) {
        this.log.error({ err: error, event }, "supervisor listener threw");
      }
    }
  }
}

// Supervision timers must never be what keeps the sidecar process alive.
const unrefTimers: Timers = {
  setTimeout: (callback, delayMs) => setTimeout(callback, delayMs).unref(),
  clearTimeout: systemTimers.clearTimeout,
};

function toInfo(managed: Managed): ManagedProcessInfo {
  const run = managed.run;
  const live = run !== undefined && isRunning(managed.state);
  const info: ManagedProcessInfo = {
    instanceId: managed.spec.instanceId,
    agentName: managed.spec.agentName,
    state: managed.state,
    restarts: managed.restarts,
  };
  if (live && run.pid !== undefined) info.pid = run.pid;
  if (live && run.rssBytes !== undefined) info.rssBytes = run.rssBytes;
  if (run !== undefined) info.startedAtMs = run.startedAtMs;
  if (run?.readyAtMs !== undefined) info.readyAtMs = run.readyAtMs;
  if (managed.lastExit !== undefined) info.lastExit = managed.lastExit;
  return info;
}

function describeExit(exitCode: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `killed by ${signal}` : `exited with code ${exitCode ?? "unknown"}`;
}

function signalGroup(run: Run, signal: NodeJS.Signals): void {
  if (run.pid === undefined) return;
  try {
    process.kill(-run.pid, signal);
  } catch {
    // ESRCH: the whole group is already gone.
  }
}

function isNodeCommand(command: string): boolean {
  return command === process.execPath || /^node(\.exe)?$/.test(basename(command));
}

function withoutUndefined<T extends object>(fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) as Partial<T>;
}
