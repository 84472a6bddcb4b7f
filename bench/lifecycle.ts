/**
 * bench:lifecycle — the sidecar and lifecycle budgets of DESIGN §10 on real
 * processes: `agentmesh server` (mTLS), two `agentmesh sidecar`s joined with
 * tokens (signed envelopes on every hop), agents started by the orchestrator.
 * Sidecar A only calls (capacity 0); sidecar B runs every agent, so every mesh
 * call goes client → A → tunnel → B → agent.
 *
 *   npm run bench:lifecycle -- [--start-samples 20] [--crash-samples 20] [--rss-agents 10]
 *     [--rate 1000] [--seconds 10] [--rounds 5] [--warmup-seconds 2]
 *     [--rollout-rate 500] [--rollout-replicas 2] [--payload-bytes 1024]
 *     [--profile-dir D]   (sidecars run under --cpu-prof, profiles written to D at exit)
 *     [--keep-dir]        (keep the temp dir with data dirs and audit logs)
 *
 * Phases: (1) scale a trivial SDK agent up one replica at a time (start → READY,
 * sidecar RSS with 1 and N agents); (2) kill -9 each of those once (detection,
 * removal from the caller's routing, READY again); (3) open-loop latency at
 * --rate, direct against meshed, in interleaved rounds, with sidecar CPU;
 * (4) two rolling updates under --rollout-rate, plain calls then idempotent ones.
 * Writes bench/results/lifecycle.json.
 */
import { MeshCaller } from "../sdk/ts/src/agent/invoke.js";
import { type ChildProcess, spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Metadata, type ServiceError, credentials } from "@grpc/grpc-js";
import { type CtlClients, call, ctlClients } from "../cli/ctl-command.js";
import { systemClock } from "../sdk/ts/src/core/clock.js";
import { MemoryNonceCache } from "../sdk/ts/src/core/nonce-cache.js";
import { signEnvelope, verifyEnvelope } from "../sdk/ts/src/core/signing.js";
import type { CreateJoinTokenResponse } from "../sdk/ts/src/gen/agentmesh/v1/identity.js";
import {
  AgentServiceClient,
  SidecarServiceClient,
  type SidecarServiceDiscoverResponse,
  type SidecarServiceInvokeResponse,
} from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { type ApplyDeploymentResponse, type Deployment, type GetRolloutResponse, Rollout_Phase } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type WatchResponse, WatchResponse_EventType } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import { parseDeploymentYaml } from "../services/orchestrator/deployment-yaml.js";
import { type BenchRow, type ProcessSample, delay, percentile, printTable, round, sampleProcess, writeResults } from "./bench-kit.js";

const { values: args } = parseArgs({
  options: {
    "start-samples": { type: "string", default: "20" },
    "crash-samples": { type: "string", default: "20" },
    "rss-agents": { type: "string", default: "10" },
    rate: { type: "string", default: "1000" },
    seconds: { type: "string", default: "10" },
    rounds: { type: "string", default: "5" },
    "warmup-seconds": { type: "string", default: "2" },
    "rollout-rate": { type: "string", default: "500" },
    "rollout-replicas": { type: "string", default: "2" },
    "payload-bytes": { type: "string", default: "1024" },
    "keep-dir": { type: "boolean", default: false },
    "profile-dir": { type: "string" },
  },
});
const startSamples = Number(args["start-samples"]);
const rssAgents = Number(args["rss-agents"]);
const replicasPhaseOne = Math.max(startSamples, rssAgents, Number(args["crash-samples"]));
const crashSamples = Number(args["crash-samples"]);
const ratePerSecond = Number(args.rate);
const latencySeconds = Number(args.seconds);
const rounds = Math.max(1, Number(args.rounds));
const warmupSeconds = Number(args["warmup-seconds"]);
const rolloutRatePerSecond = Number(args["rollout-rate"]);
const rolloutReplicas = Number(args["rollout-replicas"]);
const payloadBytes = Number(args["payload-bytes"]);

const distRoot = resolve(import.meta.dirname, "..");
const repoRoot = resolve(distRoot, "..");
const cliPath = join(distRoot, "cli", "main.js");
const echoAgentPath = join(distRoot, "bench", "agents", "echo-agent.js");
const callTimeoutMs = 5000;

// ---------------------------------------------------------------- processes

interface BenchProcess {
  name: string;
  child: ChildProcess;
  pid: number;
  /** Resolves with the first JSON stdout line matching `predicate` (seen before or after the call). */
  waitForLine(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  exited: Promise<number | null>;
  /** The end of its stderr and unparsed output, for error messages. */
  tail(): string;
}

const children = new Set<ChildProcess>();
// Should the bench die, SIGTERM still reaches every process it started: the
// sidecars then stop their agents as on any shutdown, and nothing is left behind.
process.on("exit", () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
});

function startProcess(name: string, argv: string[], env: NodeJS.ProcessEnv = {}): BenchProcess {
  const child = spawn(process.execPath, argv, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  // Only the lines someone waits for are kept, so a chatty process cannot grow the bench's memory.
  const wanted = new Set<{ predicate: (line: Record<string, unknown>) => boolean; found: (line: Record<string, unknown>) => void }>();
  const seen: Array<Record<string, unknown>> = [];
  let tailText = "";
  let buffered = "";
  const keepTail = (text: string) => {
    tailText = (tailText + text).slice(-4000);
  };
  child.stdout?.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    const parts = buffered.split("\n");
    buffered = parts.pop() ?? "";
    for (const part of parts) {
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(part) as Record<string, unknown>;
      } catch {
        keepTail(`${part}\n`);
        continue;
      }
      if (typeof line.level === "number" && line.level >= 40) keepTail(`${part}\n`);
      if (seen.length < 200) seen.push(line);
      for (const waiter of [...wanted]) {
        if (!waiter.predicate(line)) continue;
        wanted.delete(waiter);
        waiter.found(line);
      }
    }
  });
  child.stderr?.on("data", (chunk: Buffer) => keepTail(chunk.toString()));
  const exited = new Promise<number | null>((resolveExit) => child.once("exit", (code) => resolveExit(code)));
  const tail = () => tailText;
  return {
    name,
    child,
    pid: child.pid as number,
    exited,
    tail,
    waitForLine(predicate, timeoutMs = 20_000) {
      const already = seen.find(predicate);
      if (already) return Promise.resolve(already);
      return new Promise((resolveLine, reject) => {
        const waiter = {
          predicate,
          found: (line: Record<string, unknown>) => {
            clearTimeout(timer);
            resolveLine(line);
          },
        };
        const timer = setTimeout(() => {
          wanted.delete(waiter);
          reject(new Error(`${name}: expected log line not seen within ${timeoutMs} ms\n${tail()}`));
        }, timeoutMs);
        wanted.add(waiter);
        void exited.then((code) => {
          if (!wanted.delete(waiter)) return;
          clearTimeout(timer);
          reject(new Error(`${name} exited (${code}) before the expected log line\n${tail()}`));
        });
      });
    },
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(killer);
    },
  };
}

interface Sidecar {
  process: BenchProcess;
  localAddress: string;
  inboundAddress: string;
}

interface Mesh {
  dir: string;
  server: BenchProcess;
  serverAddress: string;
  admin: CtlClients;
  caller: Sidecar;
  runner: Sidecar;
  processes: BenchProcess[];
}

async function runToExit(name: string, argv: string[]): Promise<void> {
  const child = startProcess(name, argv);
  const code = await child.exited;
  if (code !== 0) throw new Error(`${name} failed (${code})\n${child.tail()}`);
}

async function startSidecar(mesh: Omit<Mesh, "caller" | "runner">, host: string, capacity: number): Promise<Sidecar> {
  const token = await call<CreateJoinTokenResponse>((metadata, options, callback) =>
    mesh.admin.identity.createJoinToken({ host, allowedAgentNames: ["*"], maxUses: 1, ttlSeconds: 600 }, metadata, options, callback),
  );
  const profile = args["profile-dir"] ? ["--cpu-prof", "--cpu-prof-dir", args["profile-dir"]] : [];
  const sidecar = startProcess(`sidecar ${host}`, [
    ...profile,
    cliPath, "sidecar",
    "--server", mesh.serverAddress,
    "--host", host,
    "--join-token", token.token,
    "--ca-cert", join(mesh.dir, "admin", "ca.pem"),
    "--inbound-host", "127.0.0.1",
    "--inbound-port", "0",
    "--local-port", "0", "--http-port", "0",
    "--data-dir", join(mesh.dir, host),
    "--capacity", String(capacity),
  ]);
  mesh.processes.push(sidecar);
  const listening = await sidecar.waitForLine((line) => line.msg === "sidecar listening");
  return { process: sidecar, localAddress: String(listening.localAddress), inboundAddress: String(listening.inboundAddress) };
}

async function startMesh(): Promise<Mesh> {
  const dir = mkdtempSync(join(tmpdir(), "agentmesh-bench-lifecycle-"));
  const processes: BenchProcess[] = [];
  const server = startProcess("server", [cliPath, "server", "--port", "0", "--http-port", "0", "--data-dir", join(dir, "server")]);
  processes.push(server);
  const listening = await server.waitForLine((line) => line.msg === "listening");
  const serverAddress = String(listening.grpcAddress);
  await runToExit("ctl init-admin", [cliPath, "ctl", "init-admin", "--data-dir", join(dir, "server"), "--out", join(dir, "admin")]);
  const admin = await ctlClients({ server: serverAddress, output: "json", credentialsDir: join(dir, "admin") });
  const base = { dir, server, serverAddress, admin, processes };
  const caller = await startSidecar(base, "bench-a", 0);
  const runner = await startSidecar(base, "bench-b", 64);
  return { ...base, caller, runner };
}

async function stopMesh(mesh: Mesh): Promise<void> {
  mesh.admin.close();
  const sidecars = mesh.processes.filter((process) => process !== mesh.server);
  await Promise.all(sidecars.map((process) => process.stop(15_000)));
  await mesh.server.stop(6000);
}

/** The pid of the agent process a sidecar runs for `instanceId` (a child of the sidecar carrying that id). */
function agentPid(sidecarPid: number, instanceId: string): number | undefined {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = readFileSync(`/proc/${entry}/status`, "utf8");
      if (Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]) !== sidecarPid) continue;
      if (readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes(`AGENTMESH_INSTANCE_ID=${instanceId}`)) return Number(entry);
    } catch {
      // The process went away between readdir and read.
    }
  }
  return undefined;
}

async function medianRssBytes(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let index = 0; index < 5; index += 1) {
    samples.push(sampleProcess(pid).rssBytes);
    await delay(100);
  }
  return percentile(samples, 0.5);
}

// ---------------------------------------------------------------- registry watch

interface SeenEvent {
  atMs: number;
  event: WatchResponse;
}

/** Every Watch event with its arrival time here; waits match events from a given index on. */
class WatchRecorder {
  readonly events: SeenEvent[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly stream: ReturnType<CtlClients["registry"]["watch"]>;

  constructor(admin: CtlClients) {
    this.stream = admin.registry.watch({ sinceRevision: 0, capability: "", epoch: "" });
    this.stream.on("data", (event: WatchResponse) => {
      this.events.push({ atMs: performance.now(), event });
      for (const waiter of [...this.waiters]) waiter();
    });
    this.stream.on("error", () => undefined);
  }

  get position(): number {
    return this.events.length;
  }

  waitFor(predicate: (event: WatchResponse) => boolean, fromIndex: number, timeoutMs = 20_000): Promise<SeenEvent> {
    return new Promise((resolveEvent, reject) => {
      let index = fromIndex;
      const check = (): boolean => {
        for (; index < this.events.length; index += 1) {
          const seen = this.events[index] as SeenEvent;
          if (predicate(seen.event)) {
            resolveEvent(seen);
            return true;
          }
        }
        return false;
      };
      if (check()) return;
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`no matching Watch event within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = () => {
        if (!check()) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
    });
  }

  close(): void {
    this.stream.cancel();
  }
}

const isEventOf = (deployment: string, state?: HealthState) => (event: WatchResponse) =>
  event.instance?.deployment === deployment && event.type !== WatchResponse_EventType.EVENT_TYPE_REMOVED && (state === undefined || event.instance.state === state);

// ---------------------------------------------------------------- deployments

interface EchoDeployment {
  name: string;
  capability: string;
  version: string;
  replicas: number;
  transport: "attach" | "unary";
}

function echoDeployment(spec: EchoDeployment): Deployment {
  const yaml = [
    "kind: Deployment",
    `name: ${spec.name}`,
    `version: ${spec.version}`,
    `replicas: ${spec.replicas}`,
    "capabilities:",
    `  - ${spec.capability}@${spec.version}`,
    "process:",
    `  command: ${JSON.stringify(process.execPath)}`,
    `  args: [${JSON.stringify(echoAgentPath)}]`,
    "  env:",
    `    ECHO_TRANSPORT: ${spec.transport}`,
    `    ECHO_CAPABILITIES: ${spec.capability}`,
    "health:",
    "  heartbeatInterval: 1s",
    "  readinessTimeout: 20s",
    // Restart policy and update strategy stay at their documented defaults.
  ].join("\n");
  const [deployment] = parseDeploymentYaml(yaml);
  if (!deployment) throw new Error("bench deployment did not parse");
  return deployment;
}

async function apply(mesh: Mesh, deployment: Deployment): Promise<number> {
  const response = await call<ApplyDeploymentResponse>((metadata, options, callback) => mesh.admin.orchestrator.applyDeployment({ deployment }, metadata, options, callback));
  return response.deployment?.generation ?? 0;
}

async function scale(mesh: Mesh, name: string, replicas: number): Promise<void> {
  await call<unknown>((metadata, options, callback) => mesh.admin.orchestrator.scaleDeployment({ name, replicas }, metadata, options, callback));
}

async function remove(mesh: Mesh, name: string): Promise<void> {
  await call<unknown>((metadata, options, callback) => mesh.admin.orchestrator.deleteDeployment({ name }, metadata, options, callback));
}

function discover(client: SidecarServiceClient, capability: string): Promise<AgentInstance[]> {
  return new Promise((resolveList, reject) =>
    client.discover({ capability, versionRange: "", labelSelector: undefined }, new Metadata(), { deadline: Date.now() + callTimeoutMs }, (error: ServiceError | null, response: SidecarServiceDiscoverResponse) =>
      error ? reject(error) : resolveList(response.instances),
    ),
  );
}

/** Waits until the caller sidecar's routing set for `capability` satisfies `predicate`. */
async function untilRouted(client: SidecarServiceClient, capability: string, predicate: (instances: AgentInstance[]) => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!predicate(await discover(client, capability))) {
    if (performance.now() > deadline) throw new Error(`caller sidecar never routed ${capability} as expected`);
    await delay(20);
  }
}

// ---------------------------------------------------------------- load

interface LoadResult {
  latenciesMs: number[];
  sent: number;
  errorsByKind: Record<string, number>;
  byVersion: Record<string, number>;
  elapsedMs: number;
}

type CallFn = () => Promise<{ version?: string }>;

/**
 * Open loop: call i is due at start + i / rate whether or not earlier calls have
 * answered; latency counts from the due time, so a stall shows as latency rather
 * than as a lower rate (no coordinated omission). Sends until `until()` is true,
 * then waits for the answers still outstanding.
 */
function openLoop(callFn: CallFn, rate: number, until: () => boolean): Promise<LoadResult> {
  const intervalMs = 1000 / rate;
  const result: LoadResult = { latenciesMs: [], sent: 0, errorsByKind: {}, byVersion: {}, elapsedMs: 0 };
  const startMs = performance.now();
  let pending = 0;
  let stopped = false;
  return new Promise((resolveLoad) => {
    const finishIfDone = () => {
      if (stopped && pending === 0) {
        result.elapsedMs = performance.now() - startMs;
        resolveLoad(result);
      }
    };
    const tick = () => {
      const nowMs = performance.now();
      if (until()) {
        stopped = true;
        finishIfDone();
        return;
      }
      while (startMs + result.sent * intervalMs <= nowMs) {
        const dueMs = startMs + result.sent * intervalMs;
        result.sent += 1;
        pending += 1;
        callFn().then(
          (response) => {
            result.latenciesMs.push(performance.now() - dueMs);
            if (response.version) result.byVersion[response.version] = (result.byVersion[response.version] ?? 0) + 1;
          },
          (error: Partial<ServiceError>) => {
            const kind = `${error.code ?? "?"} ${error.details ?? error.message ?? ""}`;
            result.errorsByKind[kind] = (result.errorsByKind[kind] ?? 0) + 1;
          },
        ).finally(() => {
          pending -= 1;
          finishIfDone();
        });
      }
      setTimeout(tick, Math.max(0, startMs + result.sent * intervalMs - performance.now()));
    };
    tick();
  });
}

const deadlinePassed = (durationMs: number) => {
  const endMs = performance.now() + durationMs;
  return () => performance.now() >= endMs;
};

const errorCount = (result: LoadResult) => Object.values(result.errorsByKind).reduce((sum, count) => sum + count, 0);

function meshCall(client: SidecarServiceClient, capability: string, payload: Buffer, idempotent: boolean): CallFn {
  return () =>
    new Promise((resolveCall, reject) =>
      client.invoke(
        { capability, versionRange: "", labelSelector: undefined, payload, contentType: "application/octet-stream", idempotent, metadata: {}, timeoutMs: 0 },
        new Metadata(),
        { deadline: Date.now() + callTimeoutMs },
        (error: ServiceError | null, response: SidecarServiceInvokeResponse) => (error ? reject(error) : resolveCall(response)),
      ),
    );
}

function directCall(client: AgentServiceClient, payload: Buffer): CallFn {
  return () =>
    new Promise((resolveCall, reject) =>
      client.invoke(
        {
          invocation: {
            callId: "",
            capability: "bench.echo",
            version: "1.0.0",
            payload,
            contentType: "application/octet-stream",
            caller: "bench",
            deadlineMs: 0,
            metadata: {},
            traceparent: "",
          },
        },
        new Metadata(),
        { deadline: Date.now() + callTimeoutMs },
        (error: ServiceError | null) => (error ? reject(error) : resolveCall({})),
      ),
    );
}

// ---------------------------------------------------------------- phases

interface StartResults {
  totalMs: number[];
  toRegisteredMs: number[];
  registeredToReadyMs: number[];
  readyOrder: string[];
  rssIdleBytes: number;
  rssOneBytes: number;
  rssManyBytes: number;
}

/** (1) Scale a trivial SDK agent up one replica at a time: ScaleDeployment sent → READY Watch event. */
async function measureStartToReady(mesh: Mesh, watch: WatchRecorder): Promise<StartResults> {
  const name = "trivial";
  await apply(mesh, echoDeployment({ name, capability: "bench.trivial", version: "1.0.0", replicas: 0, transport: "attach" }));
  await delay(1000);
  const results: StartResults = { totalMs: [], toRegisteredMs: [], registeredToReadyMs: [], readyOrder: [], rssIdleBytes: await medianRssBytes(mesh.runner.process.pid), rssOneBytes: 0, rssManyBytes: 0 };
  for (let replicas = 1; replicas <= replicasPhaseOne; replicas += 1) {
    const from = watch.position;
    const sentAtMs = performance.now();
    await scale(mesh, name, replicas);
    const added = await watch.waitFor((event) => event.type === WatchResponse_EventType.EVENT_TYPE_ADDED && event.instance?.deployment === name, from);
    const instanceId = added.event.instance?.instanceId ?? "";
    const ready = await watch.waitFor((event) => event.instance?.instanceId === instanceId && event.instance.state === HealthState.HEALTH_STATE_READY, from);
    if (replicas <= startSamples) {
      results.totalMs.push(ready.atMs - sentAtMs);
      results.toRegisteredMs.push(added.atMs - sentAtMs);
      results.registeredToReadyMs.push(ready.atMs - added.atMs);
    }
    results.readyOrder.push(instanceId);
    // RSS after the start's own garbage has had a moment to be collected.
    if (replicas === 1) results.rssOneBytes = await settledRss(mesh);
    if (replicas === rssAgents) results.rssManyBytes = await settledRss(mesh);
  }
  return results;
}

async function settledRss(mesh: Mesh): Promise<number> {
  await delay(1500);
  return medianRssBytes(mesh.runner.process.pid);
}

interface CrashResults {
  detectionMs: number[];
  detectionToRemovedMs: number[];
  crashToRemovedMs: number[];
  crashToReadyMs: number[];
  discoverPolls: number;
}

/**
 * (2) kill -9 of each agent once (so every restart is a first restart, backoff
 * drawn from [0, initialBackoff]), timing: the UNHEALTHY Watch event here
 * ("detection"), the first Discover answer of caller sidecar A without the
 * instance ("removed from routing"), and the READY Watch event ("READY again").
 */
async function measureCrashRecovery(mesh: Mesh, watch: WatchRecorder, instanceIds: string[]): Promise<CrashResults> {
  const results: CrashResults = { detectionMs: [], detectionToRemovedMs: [], crashToRemovedMs: [], crashToReadyMs: [], discoverPolls: 0 };
  const caller = new SidecarServiceClient(mesh.caller.localAddress, credentials.createInsecure());
  try {
    for (const instanceId of instanceIds) {
      await untilRouted(caller, "bench.trivial", (instances) => instances.some((instance) => instance.instanceId === instanceId));
      const pid = agentPid(mesh.runner.process.pid, instanceId);
      if (pid === undefined) throw new Error(`no process found for ${instanceId}`);
      const from = watch.position;
      let crashedAtMs = Number.POSITIVE_INFINITY;
      // Poll A's routing set back to back; the answer that first lacks the instance
      // bounds the removal from above (it happened before A answered).
      const removed = (async () => {
        for (;;) {
          const instances = await discover(caller, "bench.trivial");
          results.discoverPolls += 1;
          const atMs = performance.now();
          if (atMs > crashedAtMs && !instances.some((instance) => instance.instanceId === instanceId)) return atMs;
          if (atMs - crashedAtMs > 10_000) throw new Error("caller sidecar kept routing to a dead instance");
        }
      })();
      // Awaited below; a failure before then must not surface as an unhandled rejection.
      removed.catch(() => undefined);
      await delay(5);
      crashedAtMs = performance.now();
      process.kill(pid, "SIGKILL");
      const detected = await watch.waitFor((event) => event.instance?.instanceId === instanceId && event.instance.state !== HealthState.HEALTH_STATE_READY, from);
      const removedAtMs = await removed;
      const ready = await watch.waitFor(
        (event) => event.instance?.instanceId === instanceId && event.instance.state === HealthState.HEALTH_STATE_READY,
        watch.events.indexOf(detected) + 1,
      );
      results.detectionMs.push(detected.atMs - crashedAtMs);
      results.detectionToRemovedMs.push(removedAtMs - detected.atMs);
      results.crashToRemovedMs.push(removedAtMs - crashedAtMs);
      results.crashToReadyMs.push(ready.atMs - crashedAtMs);
      await delay(100);
    }
  } finally {
    caller.close();
  }
  return results;
}

interface ScenarioResult {
  scenario: string;
  path: string;
  calls: number;
  errors: number;
  errorsByKind: Record<string, number>;
  achievedRatePerSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** % of one core over the measured windows. */
  callerSidecarCpuPercent?: number;
  runnerSidecarCpuPercent?: number;
  agentCpuPercent?: number;
  /** One call in flight at a time (closed loop), before the open-loop rounds. */
  oneInFlightP50Ms: number;
  oneInFlightP99Ms: number;
}

interface Scenario {
  name: string;
  path: string;
  call: CallFn;
  /** Processes whose CPU is charged to this scenario: [caller sidecar, runner sidecar, agent]. */
  cpuPids: number[];
  windows: Array<{ load: LoadResult; cpuPercent: number[] }>;
  oneInFlightMs?: number[];
}

const oneInFlightCalls = 500;

/** Latencies of the successful ones of `count` calls made one after another. */
async function closedLoop(callFn: CallFn, count: number): Promise<number[]> {
  const latenciesMs: number[] = [];
  for (let index = 0; index < count; index += 1) {
    const startedAtMs = performance.now();
    const ok = await callFn().then(
      () => true,
      () => false,
    );
    if (ok) latenciesMs.push(performance.now() - startedAtMs);
  }
  return latenciesMs;
}

async function measureWindow(scenario: Scenario, rate: number, seconds: number): Promise<void> {
  const before: ProcessSample[] = scenario.cpuPids.map((pid) => sampleProcess(pid));
  const load = await openLoop(scenario.call, rate, deadlinePassed(seconds * 1000));
  const after: ProcessSample[] = scenario.cpuPids.map((pid) => sampleProcess(pid));
  const cpuPercent = before.map((sample, index) => {
    const end = after[index] as ProcessSample;
    return ((end.cpuTicks - sample.cpuTicks) / 100 / ((end.atMs - sample.atMs) / 1000)) * 100;
  });
  scenario.windows.push({ load, cpuPercent });
}

function summarize(scenario: Scenario): ScenarioResult {
  const latencies = scenario.windows.flatMap((window) => window.load.latenciesMs);
  const calls = scenario.windows.reduce((sum, window) => sum + window.load.sent, 0);
  const elapsedMs = scenario.windows.reduce((sum, window) => sum + window.load.elapsedMs, 0);
  const errorsByKind: Record<string, number> = {};
  for (const window of scenario.windows) for (const [kind, count] of Object.entries(window.load.errorsByKind)) errorsByKind[kind] = (errorsByKind[kind] ?? 0) + count;
  const cpu = (index: number) => round(scenario.windows.reduce((sum, window) => sum + (window.cpuPercent[index] ?? 0), 0) / scenario.windows.length, 1);
  const result: ScenarioResult = {
    scenario: scenario.name,
    path: scenario.path,
    calls,
    errors: Object.values(errorsByKind).reduce((sum, count) => sum + count, 0),
    errorsByKind,
    achievedRatePerSecond: round(calls / (elapsedMs / 1000), 1),
    p50Ms: round(percentile(latencies, 0.5), 3),
    p90Ms: round(percentile(latencies, 0.9), 3),
    p99Ms: round(percentile(latencies, 0.99), 3),
    maxMs: round(percentile(latencies, 1), 3),
    oneInFlightP50Ms: round(percentile(scenario.oneInFlightMs ?? [], 0.5), 3),
    oneInFlightP99Ms: round(percentile(scenario.oneInFlightMs ?? [], 0.99), 3),
  };
  if (scenario.cpuPids.length === 3) {
    result.callerSidecarCpuPercent = cpu(0);
    result.runnerSidecarCpuPercent = cpu(1);
    result.agentCpuPercent = cpu(2);
  } else {
    result.agentCpuPercent = cpu(0);
  }
  return result;
}

/** (3) Direct against meshed at `ratePerSecond`, scenarios taking turns in short rounds so background load falls on all alike. */
async function measureLatency(mesh: Mesh, watch: WatchRecorder): Promise<ScenarioResult[]> {
  const from = watch.position;
  await apply(mesh, echoDeployment({ name: "echo", capability: "bench.echo", version: "1.0.0", replicas: 1, transport: "attach" }));
  await apply(mesh, echoDeployment({ name: "echo-unary", capability: "bench.echo-unary", version: "1.0.0", replicas: 1, transport: "unary" }));
  const attachReady = await watch.waitFor(isEventOf("echo", HealthState.HEALTH_STATE_READY), from);
  const unaryReady = await watch.waitFor(isEventOf("echo-unary", HealthState.HEALTH_STATE_READY), from);
  const attachPid = agentPid(mesh.runner.process.pid, attachReady.event.instance?.instanceId ?? "");
  const unaryPid = agentPid(mesh.runner.process.pid, unaryReady.event.instance?.instanceId ?? "");
  if (attachPid === undefined || unaryPid === undefined) throw new Error("echo agent processes not found");

  const directAgent = startProcess("direct echo agent", [echoAgentPath], { ECHO_TRANSPORT: "unary", AGENTMESH_AGENT_ADDR: "127.0.0.1:0" });
  mesh.processes.push(directAgent);
  const listening = await directAgent.waitForLine((line) => line.msg === "echo agent listening");
  const direct = new AgentServiceClient(`127.0.0.1:${String(listening.port)}`, credentials.createInsecure());
  const caller = new SidecarServiceClient(mesh.caller.localAddress, credentials.createInsecure());
  // The SDK's caller: calls as frames on one SidecarService.Call stream.
  const sdkCaller = new MeshCaller(mesh.caller.localAddress);
  try {
    await untilRouted(caller, "bench.echo", (instances) => instances.length === 1);
    await untilRouted(caller, "bench.echo-unary", (instances) => instances.length === 1);
    const payload = randomBytes(payloadBytes);
    const sidecarPids = [mesh.caller.process.pid, mesh.runner.process.pid];
    const scenarios: Scenario[] = [
      { name: "direct", path: "client → echo agent (unary AgentService, plaintext)", call: directCall(direct, payload), cpuPids: [directAgent.pid], windows: [] },
      {
        name: "mesh → SDK agent",
        path: "SDK client → sidecar A (Call stream) → mTLS tunnel, signed → sidecar B → agent (Attach stream)",
        call: () => sdkCaller.invoke("bench.echo", payload, { contentType: "application/octet-stream", timeoutMs: callTimeoutMs }),
        cpuPids: [...sidecarPids, attachPid],
        windows: [],
      },
      {
        name: "mesh (unary local hop) → SDK agent",
        path: "client → sidecar A (local unary Invoke) → mTLS tunnel, signed → sidecar B → agent (Attach stream)",
        call: meshCall(caller, "bench.echo", payload, false),
        cpuPids: [...sidecarPids, attachPid],
        windows: [],
      },
      {
        name: "mesh → plain agent",
        path: "client → sidecar A (local unary) → mTLS tunnel, signed → sidecar B → agent (unary AgentService)",
        call: meshCall(caller, "bench.echo-unary", payload, false),
        cpuPids: [...sidecarPids, unaryPid],
        windows: [],
      },
    ];
    for (const scenario of scenarios) await openLoop(scenario.call, ratePerSecond, deadlinePassed(warmupSeconds * 1000));
    // One call at a time first: the hops' own cost, without any queueing.
    for (const scenario of scenarios) scenario.oneInFlightMs = await closedLoop(scenario.call, oneInFlightCalls);
    for (let roundNumber = 1; roundNumber <= rounds; roundNumber += 1) {
      process.stdout.write(`  latency round ${roundNumber}/${rounds}\n`);
      for (const scenario of scenarios) await measureWindow(scenario, ratePerSecond, latencySeconds / rounds);
    }
    return scenarios.map(summarize);
  } finally {
    direct.close();
    caller.close();
    sdkCaller.close();
    await directAgent.stop(2000);
    await remove(mesh, "echo-unary");
  }
}

interface RolloutResult {
  fromVersion: string;
  toVersion: string;
  idempotent: boolean;
  phase: string;
  rolloutMs: number;
  calls: number;
  failed: number;
  errorsByKind: Record<string, number>;
  answeredByVersion: Record<string, number>;
  p99Ms: number;
}

/** (4) A rolling update of `echo` while calls run at `rolloutRatePerSecond`; counts every failed call. */
async function measureRollout(mesh: Mesh, caller: SidecarServiceClient, fromVersion: string, toVersion: string, idempotent: boolean): Promise<RolloutResult> {
  const payload = randomBytes(payloadBytes);
  // Calls run from 1 s before the update until 1 s after it completes.
  let stopAtMs = Number.POSITIVE_INFINITY;
  const load = openLoop(meshCall(caller, "bench.echo", payload, idempotent), rolloutRatePerSecond, () => performance.now() >= stopAtMs);
  await delay(1000);
  const startedAtMs = performance.now();
  const generation = await apply(mesh, echoDeployment({ name: "echo", capability: "bench.echo", version: toVersion, replicas: rolloutReplicas, transport: "attach" }));
  let phase = Rollout_Phase.PHASE_UNSPECIFIED;
  for (;;) {
    const { rollout } = await call<GetRolloutResponse>((metadata, options, callback) => mesh.admin.orchestrator.getRollout({ deployment: "echo" }, metadata, options, callback)).catch(() => ({ rollout: undefined }));
    if (rollout && rollout.generation >= generation && rollout.toVersion === toVersion) phase = rollout.phase;
    if (phase === Rollout_Phase.PHASE_COMPLETE || phase === Rollout_Phase.PHASE_ROLLED_BACK) break;
    if (performance.now() - startedAtMs > 60_000) break;
    await delay(50);
  }
  const rolloutMs = performance.now() - startedAtMs;
  stopAtMs = performance.now() + 1000;
  const result = await load;
  return {
    fromVersion,
    toVersion,
    idempotent,
    phase: (Rollout_Phase[phase] ?? "?").replace("PHASE_", "").toLowerCase(),
    rolloutMs: round(rolloutMs, 0),
    calls: result.sent,
    failed: errorCount(result),
    errorsByKind: result.errorsByKind,
    answeredByVersion: result.byVersion,
    p99Ms: round(percentile(result.latenciesMs, 0.99), 2),
  };
}

// ---------------------------------------------------------------- reference figures

interface References {
  /** `node -e 0`: spawn to exit. */
  nodeBootMs: number[];
  /** spawn to exit of a node that only imports the SDK's serve() (grpc-js and the generated stubs). */
  sdkImportMs: number[];
  signMicros: number;
  verifyMicros: number;
}

async function timedRun(argv: string[]): Promise<number> {
  const startedAtMs = performance.now();
  const child = spawn(process.execPath, argv, { stdio: "ignore" });
  await new Promise((resolveExit) => child.once("exit", resolveExit));
  return performance.now() - startedAtMs;
}

/**
 * What the budgets rest on, measured on this machine at this moment: how long a
 * node process takes to boot and load the SDK (the floor under start → READY),
 * and what one ES256 envelope costs to sign and to verify (paid on every call).
 */
async function measureReferences(): Promise<References> {
  const nodeBootMs: number[] = [];
  const sdkImportMs: number[] = [];
  const serveModule = join(distRoot, "sdk", "ts", "src", "agent", "serve.js");
  for (let index = 0; index < 5; index += 1) {
    nodeBootMs.push(await timedRun(["-e", "0"]));
    sdkImportMs.push(await timedRun(["--input-type=module", "-e", `await import(${JSON.stringify(serveModule)})`]));
  }
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const payload = randomBytes(payloadBytes + 100);
  const envelopeFields = { signer: "spiffe://bench/sidecar/a", audience: "spiffe://bench/sidecar/b", method: "/agentmesh.v1.AgentService/Invoke", payloadType: "agentmesh.v1.Invocation" };
  const iterations = 1000;
  const envelopes: Array<ReturnType<typeof signEnvelope>> = [];
  let startedAtMs = performance.now();
  for (let index = 0; index < iterations; index += 1) envelopes.push(signEnvelope({ ...envelopeFields, payload, privateKey, clock: systemClock }));
  const signMicros = ((performance.now() - startedAtMs) * 1000) / iterations;
  const nonceCache = new MemoryNonceCache({ clock: systemClock });
  startedAtMs = performance.now();
  for (const envelope of envelopes) {
    await verifyEnvelope(envelope, {
      publicKey,
      expectedSigner: envelopeFields.signer,
      expectedAudience: envelopeFields.audience,
      expectedMethod: envelopeFields.method,
      expectedPayloadType: envelopeFields.payloadType,
      clock: systemClock,
      nonceCache,
    });
  }
  const verifyMicros = ((performance.now() - startedAtMs) * 1000) / iterations;
  return { nodeBootMs, sdkImportMs, signMicros, verifyMicros };
}

// ---------------------------------------------------------------- report

const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
const p = (samples: number[], fraction: number, digits = 1) => round(percentile(samples, fraction), digits);
const pair = (samples: number[], digits = 1) => `${p(samples, 0.5, digits)} / ${p(samples, 0.99, digits)}`;

async function main(): Promise<void> {
  const benchStartMs = performance.now();
  const loadBefore = loadavg();
  process.stdout.write(
    `bench:lifecycle — node ${process.version}, ${payloadBytes} B payloads, load average ${loadBefore.map((value) => value.toFixed(2)).join(" ")} (2 shared cores)\n`,
  );
  const references = await measureReferences();
  const mesh = await startMesh();
  const watch = new WatchRecorder(mesh.admin);
  let failure: unknown;
  const output: Record<string, unknown> = {};
  try {
    process.stdout.write(`mesh up in ${round((performance.now() - benchStartMs) / 1000, 1)} s (server ${mesh.serverAddress}, sidecars ${mesh.caller.inboundAddress} / ${mesh.runner.inboundAddress})\n`);
    process.stdout.write(`phase 1: start → READY, ${replicasPhaseOne} scale-ups\n`);
    const start = await measureStartToReady(mesh, watch);
    process.stdout.write(`phase 2: kill -9 → detection → READY, ${crashSamples} crashes\n`);
    const crash = await measureCrashRecovery(mesh, watch, start.readyOrder.slice(0, crashSamples));
    await remove(mesh, "trivial");
    await untilGone(watch, "trivial").catch(() => process.stdout.write("  (trivial instances still stopping after 30 s)\n"));
    process.stdout.write(`phase 3: latency at ${ratePerSecond} calls/s, ${latencySeconds} s per scenario in ${rounds} rounds\n`);
    const latency = await measureLatency(mesh, watch);
    process.stdout.write(`phase 4: rolling updates under ${rolloutRatePerSecond} calls/s, ${rolloutReplicas} replicas\n`);
    await scale(mesh, "echo", rolloutReplicas);
    const caller = new SidecarServiceClient(mesh.caller.localAddress, credentials.createInsecure());
    const rollouts: RolloutResult[] = [];
    try {
      await untilRouted(caller, "bench.echo", (instances) => instances.length === rolloutReplicas);
      rollouts.push(await measureRollout(mesh, caller, "1.0.0", "1.1.0", false));
      rollouts.push(await measureRollout(mesh, caller, "1.1.0", "1.2.0", true));
    } finally {
      caller.close();
    }
    const loadAfter = loadavg();

    const [direct, meshAttach, meshUnaryLocal, meshPlain] = latency as [ScenarioResult, ScenarioResult, ScenarioResult, ScenarioResult];
    const added = (result: ScenarioResult) => ({
      p50: round(result.p50Ms - direct.p50Ms, 3),
      p90: round(result.p90Ms - direct.p90Ms, 3),
      p99: round(result.p99Ms - direct.p99Ms, 3),
    });
    const addedAttach = added(meshAttach);
    const addedPlain = added(meshPlain);
    const perThousandOf = (result: ScenarioResult, percent: number | undefined) => round(((percent ?? 0) * 1000) / result.achievedRatePerSecond, 1);
    const perThousand = (percent: number | undefined) => round(((percent ?? 0) * 1000) / meshAttach.achievedRatePerSecond, 1);
    const cpuCaller = perThousand(meshAttach.callerSidecarCpuPercent);
    const cpuRunner = perThousand(meshAttach.runnerSidecarCpuPercent);
    const rssPerAgentBytes = (start.rssManyBytes - start.rssOneBytes) / Math.max(1, rssAgents - 1);
    const latencyOk = (delta: { p50: number; p90: number; p99: number }) => delta.p50 < 0.5 && delta.p90 < 1 && delta.p99 < 3;
    const rows: BenchRow[] = [
      { metric: "load average 1/5/15 min, before → after", value: `${loadBefore.map((value) => value.toFixed(1)).join("/")} → ${loadAfter.map((value) => value.toFixed(1)).join("/")}`, unit: "" },
      { metric: "reference: `node -e 0` spawn → exit p50 / max (n=5)", value: `${p(references.nodeBootMs, 0.5, 0)} / ${p(references.nodeBootMs, 1, 0)}`, unit: "ms" },
      { metric: "reference: node importing the SDK's serve() p50 / max (n=5)", value: `${p(references.sdkImportMs, 0.5, 0)} / ${p(references.sdkImportMs, 1, 0)}`, unit: "ms" },
      { metric: "reference: ES256 envelope sign / verify (1 KB payload)", value: `${round(references.signMicros, 0)} / ${round(references.verifyMicros, 0)}`, unit: "µs" },
      { metric: `agent start → READY p50 / p99 (n=${start.totalMs.length})`, value: pair(start.totalMs), unit: "ms", budget: "< 300", ok: percentile(start.totalMs, 0.99) < 300 },
      { metric: "  of which: scale RPC → registered (STARTING)", value: pair(start.toRegisteredMs), unit: "ms" },
      { metric: "  of which: registered → READY (process boot + attach)", value: pair(start.registeredToReadyMs), unit: "ms" },
      { metric: `crash (kill -9) → UNHEALTHY event p50 / p99 (n=${crash.detectionMs.length})`, value: pair(crash.detectionMs), unit: "ms", budget: "< 100", ok: percentile(crash.detectionMs, 0.99) < 100 },
      { metric: "detection → removed from caller routing p50 / p99", value: pair(crash.detectionToRemovedMs, 2), unit: "ms", budget: "< 100", ok: percentile(crash.detectionToRemovedMs, 0.99) < 100 },
      { metric: "crash → removed from caller routing p50 / p99", value: pair(crash.crashToRemovedMs), unit: "ms" },
      { metric: "crash → READY again p50 / p99", value: pair(crash.crashToReadyMs), unit: "ms", budget: "< 1000", ok: percentile(crash.crashToReadyMs, 0.99) < 1000 },
      { metric: `1 call in flight (n=${oneInFlightCalls}): direct / mesh → SDK agent / mesh → plain agent p50`, value: `${direct.oneInFlightP50Ms} / ${meshAttach.oneInFlightP50Ms} / ${meshPlain.oneInFlightP50Ms}`, unit: "ms" },
      { metric: "1 call in flight: added by the mesh p50 / p99 (SDK agent)", value: `${round(meshAttach.oneInFlightP50Ms - direct.oneInFlightP50Ms, 3)} / ${round(meshAttach.oneInFlightP99Ms - direct.oneInFlightP99Ms, 3)}`, unit: "ms" },
      { metric: `direct p50 / p90 / p99 (${direct.achievedRatePerSecond}/s, ${direct.errors} errors)`, value: `${direct.p50Ms} / ${direct.p90Ms} / ${direct.p99Ms}`, unit: "ms" },
      { metric: `mesh → SDK agent p50 / p90 / p99 (${meshAttach.errors} errors)`, value: `${meshAttach.p50Ms} / ${meshAttach.p90Ms} / ${meshAttach.p99Ms}`, unit: "ms" },
      { metric: "  added by the mesh p50 / p90 / p99", value: `${addedAttach.p50} / ${addedAttach.p90} / ${addedAttach.p99}`, unit: "ms", budget: "< 0.5 / 1 / 3", ok: latencyOk(addedAttach) && meshAttach.errors === 0 },
      { metric: `mesh, unary local hop → SDK agent p50 / p90 / p99 (${meshUnaryLocal.errors} errors)`, value: `${meshUnaryLocal.p50Ms} / ${meshUnaryLocal.p90Ms} / ${meshUnaryLocal.p99Ms}`, unit: "ms" },
      { metric: "  sidecar CPU per 1,000 calls/s with the unary local hop, A / B", value: `${perThousandOf(meshUnaryLocal, meshUnaryLocal.callerSidecarCpuPercent)} / ${perThousandOf(meshUnaryLocal, meshUnaryLocal.runnerSidecarCpuPercent)}`, unit: "% of a core" },
      { metric: `mesh → plain agent p50 / p90 / p99 (${meshPlain.errors} errors)`, value: `${meshPlain.p50Ms} / ${meshPlain.p90Ms} / ${meshPlain.p99Ms}`, unit: "ms" },
      { metric: "  added by the mesh p50 / p90 / p99", value: `${addedPlain.p50} / ${addedPlain.p90} / ${addedPlain.p99}`, unit: "ms", budget: "< 0.5 / 1 / 3", ok: latencyOk(addedPlain) && meshPlain.errors === 0 },
      { metric: "sidecar CPU per 1,000 calls/s, caller A / runner B", value: `${cpuCaller} / ${cpuRunner}`, unit: "% of a core", budget: "< 25 each", ok: cpuCaller < 25 && cpuRunner < 25 },
      {
        metric: "reference: CPU of the direct echo agent (a plain unary gRPC server) per 1,000 calls/s",
        value: round(((direct.agentCpuPercent ?? 0) * 1000) / direct.achievedRatePerSecond, 1),
        unit: "% of a core",
      },
      ...rollouts.map((rollout) => ({
        metric: `rolling update ${rollout.fromVersion} → ${rollout.toVersion} (${rollout.idempotent ? "idempotent" : "plain"} calls, ${rollout.calls} sent, ${rollout.phase} in ${rollout.rolloutMs} ms)`,
        value: rollout.failed,
        unit: "failed calls",
        budget: "0",
        ok: rollout.failed === 0,
      })),
      { metric: "sidecar B RSS: no agent / 1 agent / " + `${rssAgents} agents`, value: `${mib(start.rssIdleBytes)} / ${mib(start.rssOneBytes)} / ${mib(start.rssManyBytes)}`, unit: "MiB" },
      { metric: "sidecar RSS added per extra agent", value: round(rssPerAgentBytes / 2 ** 20, 2), unit: "MiB", budget: "< 5", ok: rssPerAgentBytes < 5 * 2 ** 20 },
    ];
    const title = `bench:lifecycle — mTLS + signed envelopes, ${ratePerSecond} calls/s open loop, node ${process.version}, total ${round((performance.now() - benchStartMs) / 1000, 0)} s`;
    printTable(title, rows);
    process.stdout.write(
      [
        "",
        "definitions:",
        "  start → READY: ScaleDeployment(+1) sent → Watch event with the new instance READY, at this process (reconcile, signed Start, register, spawn, node boot, Attach).",
        "  detection: kill -9 sent → the instance's UNHEALTHY Watch event at this process (sidecar sees the exit, reports on Connect, server publishes).",
        "  removed from caller routing: first Discover answer from caller sidecar A's local port (its Watch-fed routing set, polled back to back) without the instance;",
        "    an upper bound, since the removal happened before A answered. detection → removed can be ≤ 0: A and this process get the same Watch fan-out.",
        "  crash → READY again: kill -9 sent → READY Watch event (restart backoff drawn from [0, 200 ms], the default initialBackoff, first restart of each instance).",
        "  added latency: scenario minus direct, same percentile, same run (interleaved rounds). CPU: /proc/<pid>/stat utime+stime over the measured windows.",
        "",
      ].join("\n"),
    );
    for (const rollout of rollouts) {
      if (rollout.failed > 0) process.stdout.write(`rollout ${rollout.fromVersion} → ${rollout.toVersion} failures: ${JSON.stringify(rollout.errorsByKind)}\n`);
    }
    for (const result of latency) if (result.errors > 0) process.stdout.write(`${result.scenario} errors: ${JSON.stringify(result.errorsByKind)}\n`);
    Object.assign(output, {
      at: new Date().toISOString(),
      node: process.version,
      parameters: args,
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadAfter,
      rows,
      references,
      startToReadyMs: { samples: start.totalMs.map((value) => round(value, 1)), toRegistered: start.toRegisteredMs.map((value) => round(value, 1)) },
      crash: {
        detectionMs: crash.detectionMs.map((value) => round(value, 1)),
        detectionToRemovedMs: crash.detectionToRemovedMs.map((value) => round(value, 2)),
        crashToReadyMs: crash.crashToReadyMs.map((value) => round(value, 1)),
        discoverPolls: crash.discoverPolls,
      },
      latency,
      added: { sdkAgent: addedAttach, plainAgent: addedPlain },
      sidecarCpuPercentPerThousandCallsPerSecond: { caller: cpuCaller, runner: cpuRunner },
      rollouts,
      rss: { idleBytes: start.rssIdleBytes, oneAgentBytes: start.rssOneBytes, manyAgentsBytes: start.rssManyBytes, agents: rssAgents, perExtraAgentBytes: rssPerAgentBytes },
    });
  } catch (error) {
    failure = error;
  } finally {
    watch.close();
    await stopMesh(mesh);
    if (!args["keep-dir"]) rmSync(mesh.dir, { recursive: true, force: true });
  }
  if (failure) throw failure;
  const path = writeResults("lifecycle", output);
  process.stdout.write(`wrote ${path}\n`);
}

/** Waits until no instance of `deployment` is registered, folding the recorded Watch events. */
async function untilGone(watch: WatchRecorder, deployment: string): Promise<void> {
  const deadline = performance.now() + 30_000;
  for (;;) {
    const live = new Set<string>();
    for (const { event } of watch.events) {
      if (event.instance?.deployment !== deployment) continue;
      if (event.type === WatchResponse_EventType.EVENT_TYPE_REMOVED) live.delete(event.instance.instanceId);
      else live.add(event.instance.instanceId);
    }
    if (live.size === 0) return;
    if (performance.now() > deadline) throw new Error(`${deployment} instances still registered`);
    await delay(100);
  }
}

await main();
