/**
 * bench:dataplane — what the mesh adds to a call (issue 12, DESIGN §10) on real
 * processes: `agentmesh server`, sidecar A (capacity 0, only calls) and sidecar B
 * (runs the echo agents), so every mesh call goes client → A → tunnel → B → agent.
 * The whole mesh runs twice in one run: with mTLS and authenticated frames
 * (`mtls`), and with `--insecure-dev` (`dev`: plaintext, nothing signed).
 *
 *   npm run bench:dataplane -- [--seconds 3] [--warmup-seconds 1] [--rates 100,1000]
 *     [--concurrency 64] [--payload-bytes 1024] [--modes mtls,dev] [--label before]
 *     [--profile-dir D]   (sidecars run under --cpu-prof; profiles written to D at exit)
 *     [--paths direct,sdk,plain,server] [--sign-calls bench.echo,bench.echo-plain] [--no-ghz]
 *     [--server-sign-calls bench.echo-plain]   (the server's --sign-calls: its Invoke signs each call)
 *
 * Paths, each at every --rates (open loop, latency from the due time) and at
 * saturation (--concurrency calls kept in flight, closed loop):
 *   direct  client → plain echo agent (unary AgentService.Invoke, plaintext): the baseline
 *   sdk     SDK MeshCaller (SidecarService.Call stream) → A → tunnel → B → SDK agent (Attach)
 *   plain   unary SidecarService.Invoke → A → tunnel → B → plain agent (unary AgentService.Invoke)
 *   server  unary OrchestratorService.Invoke on the server (admin certificate) → tunnel → B → the
 *           same plain agent: the path of clients without a sidecar. Its "A" columns are the
 *           server process (not in the default --paths)
 * "added" is the path minus direct, same percentile, same rate, same mesh run.
 * CPU per call per sidecar: utime+stime from /proc/<pid>/stat over the window,
 * divided by the calls answered. When ghz is in .tools/bin or on PATH, it loads
 * sidecar A's SidecarService/Invoke (and the direct agent) from outside at
 * each rate: 50 workers, one connection.
 * Also, in this process and without sockets, what authenticating one call costs: an
 * ES256 signature and its verification (a signed call) against the MAC of the OPEN frame
 * and of its reply, each sealed and checked (docs/signing.md §8), so the difference the
 * mesh rows show can be told from the load of the machine.
 * Writes bench/results/dataplane.json (dataplane-<label>.json with --label).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes, verify as verifySignature } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Metadata, type ServiceError, credentials } from "@grpc/grpc-js";
import { type CtlClients, call, ctlClients } from "../cli/ctl-command.js";
import { MeshCaller } from "../sdk/ts/src/agent/invoke.js";
import type { CreateJoinTokenResponse } from "../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { AgentServiceClient, SidecarServiceClient, type SidecarServiceDiscoverResponse } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import type { ApplyDeploymentResponse } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { AgentInstance } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import { parseDeploymentYaml } from "../services/orchestrator/deployment-yaml.js";
import { systemClock } from "../sdk/ts/src/core/clock.js";
import { dataFrame } from "../sdk/ts/src/core/dataplane/frames.js";
import { FrameOpener, FrameSealer, deriveFrameKeys } from "../sdk/ts/src/core/frame-auth.js";
import { envelopeCanonicalBytes, signEnvelope } from "../sdk/ts/src/core/signing.js";
import { Invocation } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { type LoggedProcess, type ProcessSample, cpuPercent, delay, percentile, printGrid, round, sampleProcess, startLoggedProcess, writeResults } from "./bench-kit.js";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    "warmup-seconds": { type: "string", default: "1" },
    rates: { type: "string", default: "100,1000" },
    concurrency: { type: "string", default: "64" },
    "payload-bytes": { type: "string", default: "1024" },
    modes: { type: "string", default: "mtls,dev" },
    paths: { type: "string", default: "direct,sdk,plain" },
    label: { type: "string" },
    "sign-calls": { type: "string" },
    "server-sign-calls": { type: "string" },
    "profile-dir": { type: "string" },
    "no-ghz": { type: "boolean", default: false },
  },
});
const windowSeconds = Number(args.seconds);
const warmupSeconds = Number(args["warmup-seconds"]);
const rates = args.rates.split(",").map(Number).filter((rate) => rate > 0);
const concurrency = Number(args.concurrency);
const payloadBytes = Number(args["payload-bytes"]);
// Capabilities whose calls stay signed one by one (the sidecars' --sign-calls), to measure that option.
const signCalls = args["sign-calls"] ? ["--sign-calls", args["sign-calls"]] : [];
const modes = args.modes.split(",").filter((mode): mode is Mode => mode === "mtls" || mode === "dev");

const distRoot = resolve(import.meta.dirname, "..");
const repoRoot = resolve(distRoot, "..");
const cliPath = join(distRoot, "cli", "main.js");
const echoAgentPath = join(distRoot, "bench", "agents", "echo-agent.js");
const callTimeoutMs = 5000;

type Mode = "mtls" | "dev";
type PathName = "direct" | "sdk" | "plain" | "server";

const started: LoggedProcess[] = [];
process.on("exit", () => {
  for (const child of started) if (child.isRunning()) child.child.kill("SIGTERM");
});

function startProcess(name: string, argv: string[], env: NodeJS.ProcessEnv = {}): LoggedProcess {
  const child = startLoggedProcess(name, argv, { cwd: repoRoot, env });
  started.push(child);
  return child;
}

async function stopProcess(child: LoggedProcess, graceMs = 10_000): Promise<void> {
  if (!child.isRunning()) return;
  child.child.kill("SIGTERM");
  const killer = setTimeout(() => child.child.kill("SIGKILL"), graceMs);
  await child.exited;
  clearTimeout(killer);
}

// ---------------------------------------------------------------- mesh

interface Mesh {
  mode: Mode;
  dir: string;
  server: LoggedProcess;
  admin: CtlClients;
  caller: LoggedProcess;
  runner: LoggedProcess;
  callerLocalAddress: string;
  sdkAgentPid: number;
  plainAgentPid: number;
}

async function startSidecar(mode: Mode, dir: string, serverAddress: string, admin: CtlClients, host: string, capacity: number): Promise<{ process: LoggedProcess; localAddress: string }> {
  const profile = args["profile-dir"] ? ["--cpu-prof", "--cpu-prof-dir", join(args["profile-dir"], mode), "--cpu-prof-name", `${host}.cpuprofile`] : [];
  const common = ["--server", serverAddress, "--host", host, "--inbound-host", "127.0.0.1", "--inbound-port", "0", "--local-port", "0", "--http-port", "0", "--data-dir", join(dir, host), "--capacity", String(capacity), ...signCalls];
  let identity: string[];
  if (mode === "dev") {
    identity = ["--insecure-dev"];
  } else {
    const token = await call<CreateJoinTokenResponse>((metadata, options, callback) =>
      admin.identity.createJoinToken({ host, allowedAgentNames: ["*"], maxUses: 1, ttlSeconds: 600 }, metadata, options, callback),
    );
    identity = ["--join-token", token.token, "--ca-cert", join(dir, "admin", "ca.pem")];
  }
  const sidecar = startProcess(`sidecar ${host} (${mode})`, [...profile, cliPath, "sidecar", ...common, ...identity]);
  const listening = sidecar.nextLine((line) => line.msg === "sidecar listening");
  return { process: sidecar, localAddress: String((await listening).localAddress) };
}

function echoYaml(name: string, capability: string, transport: "attach" | "unary"): string {
  return [
    "kind: Deployment",
    `name: ${name}`,
    "version: 1.0.0",
    "replicas: 1",
    "capabilities:",
    `  - ${capability}@1.0.0`,
    "process:",
    `  command: ${JSON.stringify(process.execPath)}`,
    `  args: [${JSON.stringify(echoAgentPath)}]`,
    "  env:",
    `    ECHO_TRANSPORT: ${transport}`,
    `    ECHO_CAPABILITIES: ${capability}`,
    "health:",
    "  heartbeatInterval: 1s",
    "  readinessTimeout: 20s",
  ].join("\n");
}

async function apply(admin: CtlClients, yaml: string): Promise<void> {
  const [deployment] = parseDeploymentYaml(yaml);
  if (!deployment) throw new Error("bench deployment did not parse");
  await call<ApplyDeploymentResponse>((metadata, options, callback) => admin.orchestrator.applyDeployment({ deployment }, metadata, options, callback));
}

function discover(client: SidecarServiceClient, capability: string): Promise<AgentInstance[]> {
  return new Promise((resolveList, reject) =>
    client.discover({ capability, versionRange: "", labelSelector: undefined }, new Metadata(), { deadline: Date.now() + callTimeoutMs }, (error: ServiceError | null, response: SidecarServiceDiscoverResponse) =>
      error ? reject(error) : resolveList(response.instances),
    ),
  );
}

async function untilRouted(client: SidecarServiceClient, capability: string): Promise<void> {
  const deadline = performance.now() + 30_000;
  while ((await discover(client, capability)).length === 0) {
    if (performance.now() > deadline) throw new Error(`caller sidecar never routed ${capability}`);
    await delay(20);
  }
}

/** The pid of the agent a sidecar runs with ECHO_CAPABILITIES=`capability`. */
function agentPid(sidecarPid: number, capability: string): number {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = readFileSync(`/proc/${entry}/status`, "utf8");
      if (Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]) !== sidecarPid) continue;
      if (readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes(`ECHO_CAPABILITIES=${capability}`)) return Number(entry);
    } catch {
      // Gone between readdir and read.
    }
  }
  throw new Error(`agent for ${capability} not found`);
}

async function startMesh(mode: Mode): Promise<Mesh> {
  const dir = mkdtempSync(join(tmpdir(), `agentmesh-bench-dataplane-${mode}-`));
  const serverSignCalls = args["server-sign-calls"] ? ["--sign-calls", args["server-sign-calls"]] : [];
  const serverArgs = [cliPath, "server", "--port", "0", "--http-port", "0", "--data-dir", join(dir, "server"), ...(mode === "dev" ? ["--insecure-dev"] : []), ...serverSignCalls];
  const server = startProcess(`server (${mode})`, serverArgs);
  const serverAddress = String((await server.nextLine((line) => line.msg === "listening")).grpcAddress);
  let admin: CtlClients;
  if (mode === "dev") {
    admin = await ctlClients({ server: serverAddress, output: "json", plaintext: true });
  } else {
    const init = startProcess("ctl init-admin", [cliPath, "ctl", "init-admin", "--data-dir", join(dir, "server"), "--out", join(dir, "admin")]);
    if ((await init.exited) !== 0) throw new Error(`ctl init-admin failed\n${init.tail()}`);
    admin = await ctlClients({ server: serverAddress, output: "json", credentialsDir: join(dir, "admin") });
  }
  const caller = await startSidecar(mode, dir, serverAddress, admin, "bench-a", 0);
  const runner = await startSidecar(mode, dir, serverAddress, admin, "bench-b", 64);
  await apply(admin, echoYaml("echo-sdk", "bench.echo", "attach"));
  await apply(admin, echoYaml("echo-plain", "bench.echo-plain", "unary"));
  const probe = new SidecarServiceClient(caller.localAddress, credentials.createInsecure());
  try {
    await untilRouted(probe, "bench.echo");
    await untilRouted(probe, "bench.echo-plain");
  } finally {
    probe.close();
  }
  return {
    mode,
    dir,
    server,
    admin,
    caller: caller.process,
    runner: runner.process,
    callerLocalAddress: caller.localAddress,
    sdkAgentPid: agentPid(runner.process.pid, "bench.echo"),
    plainAgentPid: agentPid(runner.process.pid, "bench.echo-plain"),
  };
}

async function stopMesh(mesh: Mesh): Promise<void> {
  mesh.admin.close();
  // SIGTERM lets --cpu-prof write its profile.
  await Promise.all([stopProcess(mesh.caller, 15_000), stopProcess(mesh.runner, 15_000)]);
  await stopProcess(mesh.server, 6000);
  rmSync(mesh.dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------- load

type CallFn = () => Promise<unknown>;

interface LoadResult {
  latenciesMs: number[];
  answered: number;
  errors: number;
  firstError: string;
  elapsedMs: number;
}

function recordError(result: LoadResult, error: Partial<ServiceError>): void {
  result.errors += 1;
  if (result.firstError === "") result.firstError = `${error.code ?? "?"} ${error.details ?? error.message ?? ""}`;
}

/** Open loop: call i is due at start + i / rate; latency counts from the due time (no coordinated omission). */
function openLoop(callFn: CallFn, rate: number, durationMs: number): Promise<LoadResult> {
  const intervalMs = 1000 / rate;
  const result: LoadResult = { latenciesMs: [], answered: 0, errors: 0, firstError: "", elapsedMs: 0 };
  const startMs = performance.now();
  let sent = 0;
  let pending = 0;
  let stopped = false;
  return new Promise((resolveLoad) => {
    const finishIfDone = () => {
      if (!stopped || pending > 0) return;
      result.elapsedMs = performance.now() - startMs;
      resolveLoad(result);
    };
    const tick = () => {
      const nowMs = performance.now();
      if (nowMs - startMs >= durationMs) {
        stopped = true;
        finishIfDone();
        return;
      }
      while (startMs + sent * intervalMs <= nowMs) {
        const dueMs = startMs + sent * intervalMs;
        sent += 1;
        pending += 1;
        callFn()
          .then(
            () => {
              result.answered += 1;
              result.latenciesMs.push(performance.now() - dueMs);
            },
            (error: Partial<ServiceError>) => recordError(result, error),
          )
          .finally(() => {
            pending -= 1;
            finishIfDone();
          });
      }
      setTimeout(tick, Math.max(0, startMs + sent * intervalMs - performance.now()));
    };
    tick();
  });
}

/** Closed loop: `workers` calls always in flight for `durationMs`; the rate is what the path sustains. */
async function saturate(callFn: CallFn, workers: number, durationMs: number): Promise<LoadResult> {
  const result: LoadResult = { latenciesMs: [], answered: 0, errors: 0, firstError: "", elapsedMs: 0 };
  const startMs = performance.now();
  const worker = async () => {
    while (performance.now() - startMs < durationMs) {
      const callStartMs = performance.now();
      try {
        await callFn();
        result.answered += 1;
        result.latenciesMs.push(performance.now() - callStartMs);
      } catch (error) {
        recordError(result, error as Partial<ServiceError>);
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  result.elapsedMs = performance.now() - startMs;
  return result;
}

function directCall(client: AgentServiceClient, payload: Buffer): CallFn {
  const request = {
    invocation: { callId: "", capability: "bench.echo", version: "1.0.0", payload, contentType: "application/octet-stream", caller: "bench", deadlineMs: 0, metadata: {}, traceparent: "" },
  };
  return () => new Promise((resolveCall, reject) => client.invoke(request, new Metadata(), { deadline: Date.now() + callTimeoutMs }, (error) => (error ? reject(error) : resolveCall(undefined))));
}

function plainCall(client: SidecarServiceClient, payload: Buffer): CallFn {
  const request = { capability: "bench.echo-plain", versionRange: "", labelSelector: undefined, payload, contentType: "application/octet-stream", idempotent: false, metadata: {}, timeoutMs: 0 };
  return () => new Promise((resolveCall, reject) => client.invoke(request, new Metadata(), { deadline: Date.now() + callTimeoutMs }, (error) => (error ? reject(error) : resolveCall(undefined))));
}

function serverCall(admin: CtlClients, payload: Buffer): CallFn {
  const request = { capability: "bench.echo-plain", versionRange: "", labelSelector: undefined, payload, contentType: "application/octet-stream", idempotent: false, metadata: {} };
  return () =>
    new Promise((resolveCall, reject) => admin.orchestrator.invoke(request, new Metadata(), { deadline: Date.now() + callTimeoutMs }, (error) => (error ? reject(error) : resolveCall(undefined))));
}

function sdkCall(caller: MeshCaller, payload: Buffer): CallFn {
  return () => caller.invoke("bench.echo", payload, { contentType: "application/octet-stream", timeoutMs: callTimeoutMs });
}

// ---------------------------------------------------------------- measurement

interface Row {
  mode: Mode;
  path: PathName;
  /** Offered calls/s, or "saturation". */
  load: number | "saturation";
  achievedPerSecond: number;
  answered: number;
  errors: number;
  firstError: string;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  addedP50Ms?: number;
  addedP90Ms?: number;
  addedP99Ms?: number;
  /** CPU per answered call, µs, sidecar A / sidecar B (mesh paths only). */
  callerSidecarCpuMicrosPerCall?: number;
  runnerSidecarCpuMicrosPerCall?: number;
  callerSidecarCpuPercent?: number;
  runnerSidecarCpuPercent?: number;
  agentCpuMicrosPerCall: number;
  callerSidecarRssMiB?: number;
  runnerSidecarRssMiB?: number;
}

const mib = (bytes: number) => round(bytes / 2 ** 20, 1);

async function measure(mode: Mode, path: PathName, load: number | "saturation", callFn: CallFn, pids: { sidecars: number[]; agent: number }): Promise<Row> {
  const durationMs = windowSeconds * 1000;
  const watched = [...pids.sidecars, pids.agent];
  const before: ProcessSample[] = watched.map(sampleProcess);
  const result = load === "saturation" ? await saturate(callFn, concurrency, durationMs) : await openLoop(callFn, load, durationMs);
  const after: ProcessSample[] = watched.map(sampleProcess);
  const cpuSeconds = watched.map((_, index) => ((after[index] as ProcessSample).cpuTicks - (before[index] as ProcessSample).cpuTicks) / 100);
  const elapsedSeconds = result.elapsedMs / 1000;
  const perCall = (seconds: number) => round((seconds * 1e6) / Math.max(1, result.answered), 0);
  const row: Row = {
    mode,
    path,
    load,
    achievedPerSecond: round(result.answered / elapsedSeconds, 0),
    answered: result.answered,
    errors: result.errors,
    firstError: result.firstError,
    p50Ms: round(percentile(result.latenciesMs, 0.5), 3),
    p90Ms: round(percentile(result.latenciesMs, 0.9), 3),
    p99Ms: round(percentile(result.latenciesMs, 0.99), 3),
    agentCpuMicrosPerCall: perCall(cpuSeconds[watched.length - 1] ?? 0),
  };
  if (pids.sidecars.length === 2) {
    row.callerSidecarCpuMicrosPerCall = perCall(cpuSeconds[0] ?? 0);
    row.runnerSidecarCpuMicrosPerCall = perCall(cpuSeconds[1] ?? 0);
    row.callerSidecarCpuPercent = round(((cpuSeconds[0] ?? 0) / elapsedSeconds) * 100, 0);
    row.runnerSidecarCpuPercent = round(((cpuSeconds[1] ?? 0) / elapsedSeconds) * 100, 0);
    row.callerSidecarRssMiB = mib((after[0] as ProcessSample).rssBytes);
    row.runnerSidecarRssMiB = mib((after[1] as ProcessSample).rssBytes);
  }
  return row;
}

// ---------------------------------------------------------------- ghz

interface GhzRow {
  mode: Mode;
  target: "direct" | "sidecar";
  rps: number;
  achievedPerSecond: number;
  errors: number;
  /** ghz's status code distribution; calls still in flight when the run stops count as Canceled. */
  statusCodes: Record<string, number>;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  addedP50Ms?: number;
  addedP90Ms?: number;
  addedP99Ms?: number;
  callerSidecarCpuMicrosPerCall?: number;
  runnerSidecarCpuMicrosPerCall?: number;
}

function ghzPath(): string | undefined {
  if (args["no-ghz"]) return undefined;
  const local = join(repoRoot, ".tools", "bin", "ghz");
  if (existsSync(local)) return local;
  try {
    return execFileSync("sh", ["-c", "command -v ghz"], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

interface GhzReport {
  count: number;
  rps: number;
  latencyDistribution: Array<{ percentage: number; latency: number }> | null;
  statusCodeDistribution?: Record<string, number>;
}

function runGhz(ghz: string, address: string, method: string, data: unknown, rps: number): Promise<GhzReport> {
  const argv = [
    "--insecure",
    "--proto", join(repoRoot, "proto", "agentmesh", "v1", "agent.proto"),
    "--import-paths", join(repoRoot, "proto"),
    "--call", method,
    "--data", JSON.stringify(data),
    "--rps", String(rps),
    "--duration", `${windowSeconds}s`,
    "--concurrency", "50",
    "--connections", "1",
    "--timeout", "5s",
    "--format", "json",
    address,
  ];
  return new Promise((resolveReport, reject) => {
    const child: ChildProcess = spawn(ghz, argv, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let errors = "";
    child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (errors += chunk.toString()));
    child.once("exit", (code) => {
      try {
        resolveReport(JSON.parse(output) as GhzReport);
      } catch {
        reject(new Error(`ghz failed (${code}): ${errors.slice(-500)}`));
      }
    });
  });
}

const ghzLatencyMs = (report: GhzReport, percentage: number) => round((report.latencyDistribution?.find((entry) => entry.percentage === percentage)?.latency ?? Number.NaN) / 1e6, 3);

async function measureGhz(ghz: string, mesh: Mesh, directAddress: string, payload: Buffer): Promise<GhzRow[]> {
  const rows: GhzRow[] = [];
  const payloadBase64 = payload.toString("base64");
  for (const rps of rates) {
    const direct = await runGhz(ghz, directAddress, "agentmesh.v1.AgentService/Invoke", { invocation: { capability: "bench.echo", version: "1.0.0", payload: payloadBase64 } }, rps);
    const sidecars = [mesh.caller.pid, mesh.runner.pid];
    const before = sidecars.map(sampleProcess);
    const meshed = await runGhz(ghz, mesh.callerLocalAddress, "agentmesh.v1.SidecarService/Invoke", { capability: "bench.echo-plain", payload: payloadBase64 }, rps);
    const after = sidecars.map(sampleProcess);
    const perCall = (index: number) => round((((after[index] as ProcessSample).cpuTicks - (before[index] as ProcessSample).cpuTicks) / 100 / Math.max(1, meshed.count)) * 1e6, 0);
    // Calls cut off by the end of the run are not errors of the path.
    const errorsOf = (report: GhzReport) => Object.entries(report.statusCodeDistribution ?? {}).reduce((sum, [code, count]) => sum + (code === "OK" || code === "Canceled" ? 0 : count), 0);
    const directRow: GhzRow = { mode: mesh.mode, target: "direct", rps, achievedPerSecond: round(direct.rps, 0), errors: errorsOf(direct), statusCodes: direct.statusCodeDistribution ?? {}, p50Ms: ghzLatencyMs(direct, 50), p90Ms: ghzLatencyMs(direct, 90), p99Ms: ghzLatencyMs(direct, 99) };
    const meshRow: GhzRow = {
      mode: mesh.mode,
      target: "sidecar",
      rps,
      achievedPerSecond: round(meshed.rps, 0),
      errors: errorsOf(meshed),
      statusCodes: meshed.statusCodeDistribution ?? {},
      p50Ms: ghzLatencyMs(meshed, 50),
      p90Ms: ghzLatencyMs(meshed, 90),
      p99Ms: ghzLatencyMs(meshed, 99),
      callerSidecarCpuMicrosPerCall: perCall(0),
      runnerSidecarCpuMicrosPerCall: perCall(1),
    };
    meshRow.addedP50Ms = round(meshRow.p50Ms - directRow.p50Ms, 3);
    meshRow.addedP90Ms = round(meshRow.p90Ms - directRow.p90Ms, 3);
    meshRow.addedP99Ms = round(meshRow.p99Ms - directRow.p99Ms, 3);
    rows.push(directRow, meshRow);
  }
  return rows;
}

// ---------------------------------------------------------------- authentication cost per call

interface AuthCostRow {
  scheme: string;
  /** Best of the rounds, µs per call: the caller's side (OPEN out, reply in), the receiver's (OPEN in, reply out), both. Reply frames are built on both rows. */
  callerMicros: number;
  receiverMicros: number;
  totalMicros: number;
}

/** Runs each scheme's caller and receiver halves in turns, best of `rounds` rounds of `calls` calls. */
function measureAuthCosts(payload: Buffer, calls = 2000, rounds = 5): AuthCostRow[] {
  const callerId = "spiffe://agentmesh.local/server/bench";
  const receiverId = "spiffe://agentmesh.local/sidecar/bench-b";
  const method = "/agentmesh.v1.AgentService/Invoke";
  const payloadType = "agentmesh.v1.Invocation";
  const bytes = Invocation.encode({ callId: "bench", capability: "bench.echo-plain", version: "1.0.0", payload, contentType: "application/octet-stream", caller: callerId, deadlineMs: 0, metadata: {}, traceparent: "" }).finish();
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const keys = deriveFrameKeys(randomBytes(32), callerId, receiverId, randomBytes(200), randomBytes(200));
  const notAfterMs = Date.now() + 3_600_000;
  let sealer = new FrameSealer(keys, callerId, receiverId, systemClock);
  let opener = new FrameOpener({ keys, peerId: callerId, selfId: receiverId, peerSerial: "1", peerNotAfterMs: notAfterMs, clock: systemClock });
  // caller: makes the OPEN; receiver: checks it and makes the reply; answered: the caller checks the reply.
  const schemes: Array<{ scheme: string; caller: () => unknown; receiver: (sent: unknown) => unknown; answered: (reply: unknown) => void }> = [
    {
      scheme: "ES256 signed call (sign + verify, reply not authenticated)",
      caller: () => signEnvelope({ payload: bytes, signer: callerId, audience: receiverId, method, payloadType, privateKey, clock: systemClock }),
      receiver: (sent) => {
        const envelope = sent as ReturnType<typeof signEnvelope>;
        if (!verifySignature("sha256", envelopeCanonicalBytes(envelope), { key: publicKey, dsaEncoding: "ieee-p1363" }, envelope.signature)) throw new Error("bench signature did not verify");
        return dataFrame(1, payload, { end: true, contentType: "application/octet-stream" });
      },
      answered: () => undefined,
    },
    {
      scheme: "HS256 MACed call (OPEN sealed + opened, reply sealed + opened)",
      caller: () => sealer.seal(bytes, method, payloadType),
      receiver: (sent) => {
        opener.open(sent as ReturnType<FrameSealer["seal"]>, method, payloadType);
        const reply = dataFrame(1, payload, { end: true, contentType: "application/octet-stream" });
        opener.sealReply(reply);
        return reply;
      },
      answered: (reply) => sealer.openReply(reply as ReturnType<typeof dataFrame>),
    },
  ];
  const best = schemes.map(() => ({ caller: Number.POSITIVE_INFINITY, receiver: Number.POSITIVE_INFINITY }));
  for (let round = 0; round < rounds; round += 1) {
    // Fresh sequence state each round.
    sealer = new FrameSealer(keys, callerId, receiverId, systemClock);
    opener = new FrameOpener({ keys, peerId: callerId, selfId: receiverId, peerSerial: "1", peerNotAfterMs: notAfterMs, clock: systemClock });
    schemes.forEach((entry, index) => {
      const sent: unknown[] = [];
      const callerStart = performance.now();
      for (let call = 0; call < calls; call += 1) sent.push(entry.caller());
      const callerMs = performance.now() - callerStart;
      const receiverStart = performance.now();
      const replies = sent.map((item) => entry.receiver(item));
      const receiverMs = performance.now() - receiverStart;
      const answeredStart = performance.now();
      for (const reply of replies) entry.answered(reply);
      const answeredMs = performance.now() - answeredStart;
      const slot = best[index] as { caller: number; receiver: number };
      slot.caller = Math.min(slot.caller, ((callerMs + answeredMs) * 1000) / calls);
      slot.receiver = Math.min(slot.receiver, (receiverMs * 1000) / calls);
    });
  }
  return schemes.map((entry, index) => {
    const slot = best[index] as { caller: number; receiver: number };
    return { scheme: entry.scheme, callerMicros: round(slot.caller, 1), receiverMicros: round(slot.receiver, 1), totalMicros: round(slot.caller + slot.receiver, 1) };
  });
}

// ---------------------------------------------------------------- main

async function measureMesh(mode: Mode, directClient: AgentServiceClient, directPid: number, payload: Buffer): Promise<Row[]> {
  const mesh = await startMesh(mode);
  const plainClient = new SidecarServiceClient(mesh.callerLocalAddress, credentials.createInsecure());
  const sdkCaller = new MeshCaller(mesh.callerLocalAddress);
  const rows: Row[] = [];
  try {
    const sidecars = [mesh.caller.pid, mesh.runner.pid];
    const paths: Array<{ path: PathName; callFn: CallFn; pids: { sidecars: number[]; agent: number } }> = [
      { path: "direct", callFn: directCall(directClient, payload), pids: { sidecars: [], agent: directPid } },
      { path: "sdk", callFn: sdkCall(sdkCaller, payload), pids: { sidecars, agent: mesh.sdkAgentPid } },
      { path: "plain", callFn: plainCall(plainClient, payload), pids: { sidecars, agent: mesh.plainAgentPid } },
      { path: "server", callFn: serverCall(mesh.admin, payload), pids: { sidecars: [mesh.server.pid, mesh.runner.pid], agent: mesh.plainAgentPid } },
    ];
    const chosen = args.paths.split(",");
    paths.splice(0, paths.length, ...paths.filter((entry) => chosen.includes(entry.path)));
    for (const { callFn } of paths) await openLoop(callFn, 1000, warmupSeconds * 1000);
    // What the sidecars burn with no calls at all (heartbeats, health checks, process
    // polling): at 100 calls/s it is a large share of the CPU per call.
    const idleBefore = sidecars.map(sampleProcess);
    await delay(windowSeconds * 1000);
    const idleAfter = sidecars.map(sampleProcess);
    const idlePercent = sidecars.map((_, index) => round(cpuPercent(idleBefore[index] as ProcessSample, idleAfter[index] as ProcessSample), 1));
    idleRows.push({ mode, callerSidecarCpuPercent: idlePercent[0] ?? 0, runnerSidecarCpuPercent: idlePercent[1] ?? 0 });
    process.stdout.write(`  ${mode} idle: sidecar CPU ${idlePercent.join(" / ")} % of a core\n`);
    const loads: Array<number | "saturation"> = [...rates, "saturation"];
    for (const load of loads) {
      // Direct and both mesh paths take turns at each load, so background load falls on all alike.
      for (const { path, callFn, pids } of paths) {
        const row = await measure(mode, path, load, callFn, pids);
        rows.push(row);
        process.stdout.write(`  ${mode} ${path} @ ${load}: ${row.achievedPerSecond}/s p50 ${row.p50Ms} p99 ${row.p99Ms} ms${row.errors > 0 ? `, ${row.errors} errors (${row.firstError})` : ""}\n`);
      }
      const direct = rows.find((row) => row.mode === mode && row.load === load && row.path === "direct");
      if (!direct) continue;
      for (const row of rows.filter((candidate) => candidate.mode === mode && candidate.load === load && candidate.path !== "direct")) {
        row.addedP50Ms = round(row.p50Ms - direct.p50Ms, 3);
        row.addedP90Ms = round(row.p90Ms - direct.p90Ms, 3);
        row.addedP99Ms = round(row.p99Ms - direct.p99Ms, 3);
      }
    }
    const ghz = ghzPath();
    if (ghz) ghzRows.push(...(await measureGhz(ghz, mesh, directAddress, payload)));
  } finally {
    plainClient.close();
    sdkCaller.close();
    await stopMesh(mesh);
  }
  return rows;
}

const ghzRows: GhzRow[] = [];
const idleRows: Array<{ mode: Mode; callerSidecarCpuPercent: number; runnerSidecarCpuPercent: number }> = [];
let directAddress = "";

async function main(): Promise<void> {
  const benchStartMs = performance.now();
  const loadBefore = loadavg();
  process.stdout.write(`bench:dataplane — node ${process.version}, ${payloadBytes} B payloads, ${windowSeconds} s per row, load average ${loadBefore.map((value) => value.toFixed(2)).join(" ")}\n`);
  const directAgent = startProcess("direct echo agent", [echoAgentPath], { ECHO_TRANSPORT: "unary", AGENTMESH_AGENT_ADDR: "127.0.0.1:0" });
  directAddress = `127.0.0.1:${String((await directAgent.nextLine((line) => line.msg === "echo agent listening")).port)}`;
  const directClient = new AgentServiceClient(directAddress, credentials.createInsecure());
  const payload = randomBytes(payloadBytes);
  const rows: Row[] = [];
  try {
    for (const mode of modes) {
      process.stdout.write(`mesh ${mode}\n`);
      rows.push(...(await measureMesh(mode, directClient, directAgent.pid, payload)));
    }
  } finally {
    directClient.close();
    await stopProcess(directAgent, 2000);
  }
  const authCosts = measureAuthCosts(payload);
  const loadAfter = loadavg();
  const ms = (value: number | undefined) => (value === undefined ? "" : value.toFixed(2));
  const triple = (first: number | undefined, second: number | undefined, third: number | undefined) => `${ms(first)} / ${ms(second)} / ${ms(third)}`;
  printGrid(
    `bench:dataplane (${payloadBytes} B, ${windowSeconds} s per row, saturation = ${concurrency} in flight; path server: A = the server)`,
    ["mode", "path", "load", "calls/s", "errors", "p50 / p90 / p99 ms", "added p50 / p90 / p99 ms", "CPU µs/call A / B", "CPU % A / B", "RSS MiB A / B"],
    rows.map((row) => [
      row.mode,
      row.path,
      String(row.load),
      row.achievedPerSecond,
      row.errors,
      triple(row.p50Ms, row.p90Ms, row.p99Ms),
      row.path === "direct" ? "" : triple(row.addedP50Ms, row.addedP90Ms, row.addedP99Ms),
      row.path === "direct" ? `agent ${row.agentCpuMicrosPerCall}` : `${row.callerSidecarCpuMicrosPerCall} / ${row.runnerSidecarCpuMicrosPerCall}`,
      row.path === "direct" ? "" : `${row.callerSidecarCpuPercent} / ${row.runnerSidecarCpuPercent}`,
      row.path === "direct" ? "" : `${row.callerSidecarRssMiB} / ${row.runnerSidecarRssMiB}`,
    ]),
  );
  printGrid(
    `authenticating one call, in process (${payloadBytes} B payload, best of 5 × 2000)`,
    ["scheme", "caller µs", "receiver µs", "total µs"],
    authCosts.map((row) => [row.scheme, row.callerMicros, row.receiverMicros, row.totalMicros]),
  );
  for (const idle of idleRows) process.stdout.write(`idle sidecars (${idle.mode}, no calls): ${idle.callerSidecarCpuPercent} / ${idle.runnerSidecarCpuPercent} % of a core (A / B)\n`);
  if (ghzRows.length > 0) {
    printGrid(
      "ghz (50 workers, 1 connection) → SidecarService/Invoke → plain agent, against direct",
      ["mode", "target", "rps", "calls/s", "errors", "p50 / p90 / p99 ms", "added p50 / p90 / p99 ms", "CPU µs/call A / B"],
      ghzRows.map((row) => [
        row.mode,
        row.target,
        row.rps,
        row.achievedPerSecond,
        row.errors,
        triple(row.p50Ms, row.p90Ms, row.p99Ms),
        row.target === "direct" ? "" : triple(row.addedP50Ms, row.addedP90Ms, row.addedP99Ms),
        row.target === "direct" ? "" : `${row.callerSidecarCpuMicrosPerCall} / ${row.runnerSidecarCpuMicrosPerCall}`,
      ]),
    );
  } else {
    process.stdout.write("\n(ghz skipped: --no-ghz, or not in .tools/bin or on PATH)\n");
  }
  const name = args.label ? `dataplane-${args.label}` : "dataplane";
  const path = writeResults(name, {
    bench: "dataplane",
    label: args.label ?? "",
    node: process.version,
    payloadBytes,
    windowSeconds,
    concurrency,
    loadAverageBefore: loadBefore,
    loadAverageAfter: loadAfter,
    durationSeconds: round((performance.now() - benchStartMs) / 1000, 1),
    idle: idleRows,
    authCosts,
    rows,
    ghz: ghzRows,
  });
  process.stdout.write(`\nwrote ${path} in ${round((performance.now() - benchStartMs) / 1000, 1)} s\n`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
