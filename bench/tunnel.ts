// Data plane transport bench (DESIGN §5.1): latency a multiplexed Tunnel hop
// adds over a direct unary gRPC call, and the CPU the tunnel server spends.
//
//   npx tsx bench/tunnel.ts [--rate 1000] [--seconds 10] [--rounds 5] [--warmup-seconds 2] [--max-frames-per-message 1024]
//
// Every server runs in its own child process (forked from this file with a
// role argument) so client, tunnel and agent do not share an event loop.
// Scenarios, each open loop at --rate calls/s with 1 KB payloads, plaintext:
//   direct        client → echo agent (unary AgentService.Invoke)
//   tunnel        client → tunnel server (echo handler in process)
//   tunnel+agent  client → tunnel server → echo agent (unary, as for an agent without SDK)
//   tunnel+attach client → tunnel server → SDK agent over its Attach stream
// Writes bench/results/tunnel.json.
import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServiceError,
  type sendUnaryData,
  credentials,
  status,
} from "@grpc/grpc-js";
import { AgentClientPool } from "../sdk/ts/src/core/dataplane/agent-client.js";
import { AttachHub } from "../sdk/ts/src/core/dataplane/attach-hub.js";
import { TunnelClient } from "../sdk/ts/src/core/dataplane/tunnel-client.js";
import { type InboundHandler, TunnelServer } from "../sdk/ts/src/core/dataplane/tunnel-server.js";
import {
  AgentServiceClient,
  type AgentServiceInvokeRequest,
  type AgentServiceInvokeResponse,
  AgentServiceService,
  type AttachResponse,
  type CallFrame,
  CallFrame_Kind,
  Invocation,
  SidecarServiceClient,
  SidecarServiceService,
} from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { SignedEnvelope } from "../sdk/ts/src/gen/agentmesh/v1/types.js";

const payloadBytes = 1024;
const thisFile = fileURLToPath(import.meta.url);

type ChildMessage =
  | { type: "ready"; ports: Record<string, number> }
  | { type: "cpu"; cpuMicros: number; elapsedMs: number };

type ParentMessage = { type: "cpu-start" } | { type: "cpu-stop" };

// ---------------------------------------------------------------- children

function bind(server: Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) =>
      error === null ? resolve(port) : reject(error),
    ),
  );
}

/** Answers the parent's CPU probes with process.cpuUsage over the measured window. */
function serveCpuProbes(): void {
  let startCpu = process.cpuUsage();
  let startMs = performance.now();
  process.on("message", (message: ParentMessage) => {
    if (message.type === "cpu-start") {
      startCpu = process.cpuUsage();
      startMs = performance.now();
    } else {
      const used = process.cpuUsage(startCpu);
      process.send?.({ type: "cpu", cpuMicros: used.user + used.system, elapsedMs: performance.now() - startMs } satisfies ChildMessage);
    }
  });
  process.on("disconnect", () => process.exit(0));
}

async function runEchoAgent(): Promise<void> {
  const server = new Server();
  server.addService(AgentServiceService, {
    invoke: (call: ServerUnaryCall<AgentServiceInvokeRequest, AgentServiceInvokeResponse>, callback: sendUnaryData<AgentServiceInvokeResponse>) => {
      const invocation = call.request.invocation;
      callback(null, { payload: invocation?.payload ?? Buffer.alloc(0), contentType: invocation?.contentType ?? "" });
    },
    invokeStream: (_call: unknown, callback: sendUnaryData<never>) =>
      callback({ code: status.UNIMPLEMENTED, details: "unary only" } as ServiceError, null),
  });
  const port = await bind(server);
  serveCpuProbes();
  process.send?.({ type: "ready", ports: { agent: port } } satisfies ChildMessage);
}

async function runTunnelServer(agentAddress: string | undefined, maxFramesPerMessage: number): Promise<void> {
  const agents = new AgentClientPool();
  const hub = new AttachHub();
  const handler: InboundHandler = {
    // Default verify decodes the envelope: the same work as the real path minus the signature check.
    dispatch: (invocation, instanceId, { signal }) => {
      if (instanceId === "echo") return Promise.resolve({ payload: invocation.payload, contentType: invocation.contentType });
      if (instanceId === "agent" && agentAddress !== undefined) return agents.invoke(agentAddress, invocation, { signal });
      return hub.dispatch(instanceId, invocation, { signal });
    },
  };
  const inbound = new Server();
  new TunnelServer({ handler, batcher: { maxFramesPerMessage } }).addTo(inbound);
  const local = new Server();
  local.addService(SidecarServiceService, {
    attach: hub.attach,
    invoke: () => {},
    invokeStream: () => {},
    discover: () => {},
  });
  const [inboundPort, localPort] = await Promise.all([bind(inbound), bind(local)]);
  serveCpuProbes();
  process.send?.({ type: "ready", ports: { inbound: inboundPort, local: localPort } } satisfies ChildMessage);
}

/** An SDK agent in miniature: attach, echo each call frame back as a unary reply. */
async function runSdkAgent(sidecarAddress: string): Promise<void> {
  const client = new SidecarServiceClient(sidecarAddress, credentials.createInsecure());
  const stream = client.attach();
  stream.on("data", (response: AttachResponse) => {
    if (response.msg?.$case === "welcome") {
      process.send?.({ type: "ready", ports: {} } satisfies ChildMessage);
      return;
    }
    const frames = response.msg?.$case === "call" ? [response.msg.value, ...response.calls] : response.calls;
    const replies: CallFrame[] = frames
      .filter((frame) => frame.kind === CallFrame_Kind.KIND_OPEN)
      .map((frame) => ({ ...frame, kind: CallFrame_Kind.KIND_DATA, invocation: undefined, payload: frame.invocation?.payload ?? Buffer.alloc(0), end: true }));
    if (replies.length > 0) stream.write({ msg: undefined, replies });
  });
  stream.write({ msg: { $case: "hello", value: { instanceId: "sdk-agent" } }, replies: [] });
  serveCpuProbes();
}

// ---------------------------------------------------------------- parent

interface Child {
  process: ChildProcess;
  ports: Record<string, number>;
}

function spawnChild(role: string, ...args: string[]): Promise<Child> {
  const child = fork(thisFile, [role, ...args], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`${role} exited with ${code}`)));
    child.once("message", (message: ChildMessage) => {
      if (message.type === "ready") resolve({ process: child, ports: message.ports });
    });
  });
}

function probeCpu(child: Child, type: ParentMessage["type"]): Promise<{ cpuMicros: number; elapsedMs: number } | undefined> {
  child.process.send({ type } satisfies ParentMessage);
  if (type === "cpu-start") return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const onMessage = (message: ChildMessage): void => {
      if (message.type !== "cpu") return;
      child.process.off("message", onMessage);
      resolve(message);
    };
    child.process.on("message", onMessage);
  });
}

type CallFn = () => Promise<unknown>;

interface LoadResult {
  latenciesMs: number[];
  errors: number;
  /** Failures by gRPC code and message, e.g. "8 tunnel window full". */
  errorsByKind: Record<string, number>;
  sent: number;
  elapsedMs: number;
  maxSendLagMs: number;
}

/**
 * Open loop: call i starts at start + i / rate whether or not earlier calls
 * have answered, so a slow path shows up as latency instead of a lower rate.
 * Latency is measured from each call's scheduled start (no coordinated omission).
 */
function openLoop(call: CallFn, rate: number, seconds: number): Promise<LoadResult> {
  const total = Math.round(rate * seconds);
  const intervalMs = 1000 / rate;
  const latenciesMs: number[] = [];
  let errors = 0;
  const errorsByKind: Record<string, number> = {};
  let sent = 0;
  let finished = 0;
  let maxSendLagMs = 0;
  const startMs = performance.now();
  return new Promise((resolve) => {
    const done = (): void => {
      finished += 1;
      if (finished === total) resolve({ latenciesMs, errors, errorsByKind, sent, elapsedMs: performance.now() - startMs, maxSendLagMs });
    };
    const tick = (): void => {
      const nowMs = performance.now();
      while (sent < total && startMs + sent * intervalMs <= nowMs) {
        const scheduledMs = startMs + sent * intervalMs;
        maxSendLagMs = Math.max(maxSendLagMs, nowMs - scheduledMs);
        sent += 1;
        call().then(
          () => {
            latenciesMs.push(performance.now() - scheduledMs);
            done();
          },
          (error: { code?: number; message?: string }) => {
            errors += 1;
            const kind = `${error.code ?? "?"} ${error.message ?? ""}`;
            errorsByKind[kind] = (errorsByKind[kind] ?? 0) + 1;
            done();
          },
        );
      }
      if (sent < total) setTimeout(tick, Math.max(0, startMs + sent * intervalMs - performance.now()));
    };
    tick();
  });
}

function percentile(sorted: readonly number[], fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1));
  return sorted[rank] as number;
}

const round = (value: number, digits = 3): number => Math.round(value * 10 ** digits) / 10 ** digits;

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
  maxSendLagMs: number;
  clientCpuPercent: number;
  /** CPU of the process under test (the tunnel server; the echo agent for `direct`), % of one core. */
  serverCpuPercent: number;
  /** CPU of the echo agent process, when one takes part. */
  agentCpuPercent?: number;
  addedP50Ms?: number;
  addedP90Ms?: number;
  addedP99Ms?: number;
}

interface Scenario {
  name: string;
  path: string;
  call: CallFn;
  server: Child;
  agent?: Child;
}

interface CpuSample {
  cpuMicros: number;
  elapsedMs: number;
}

interface Window {
  load: LoadResult;
  clientCpu: CpuSample;
  serverCpu: CpuSample | undefined;
  agentCpu: CpuSample | undefined;
}

/** One measured stretch of one scenario, with the CPU each process spent in it. */
async function measureWindow(scenario: Scenario, rate: number, seconds: number): Promise<Window> {
  await probeCpu(scenario.server, "cpu-start");
  if (scenario.agent !== undefined) await probeCpu(scenario.agent, "cpu-start");
  const clientCpuBefore = process.cpuUsage();
  const load = await openLoop(scenario.call, rate, seconds);
  const clientCpu = process.cpuUsage(clientCpuBefore);
  const serverCpu = await probeCpu(scenario.server, "cpu-stop");
  const agentCpu = scenario.agent === undefined ? undefined : await probeCpu(scenario.agent, "cpu-stop");
  return { load, clientCpu: { cpuMicros: clientCpu.user + clientCpu.system, elapsedMs: load.elapsedMs }, serverCpu, agentCpu };
}

function cpuPercent(samples: Array<CpuSample | undefined>): number {
  let cpuMicros = 0;
  let elapsedMs = 0;
  for (const sample of samples) {
    if (sample === undefined) return Number.NaN;
    cpuMicros += sample.cpuMicros;
    elapsedMs += sample.elapsedMs;
  }
  return round((cpuMicros / 1000 / elapsedMs) * 100, 1);
}

function summarize(scenario: Scenario, windows: Window[]): ScenarioResult {
  const sorted = windows.flatMap((window) => window.load.latenciesMs).sort((left, right) => left - right);
  const sent = windows.reduce((sum, window) => sum + window.load.sent, 0);
  const elapsedMs = windows.reduce((sum, window) => sum + window.load.elapsedMs, 0);
  return {
    scenario: scenario.name,
    path: scenario.path,
    calls: sent,
    errors: windows.reduce((sum, window) => sum + window.load.errors, 0),
    errorsByKind: windows.reduce<Record<string, number>>((merged, window) => {
      for (const [kind, count] of Object.entries(window.load.errorsByKind)) merged[kind] = (merged[kind] ?? 0) + count;
      return merged;
    }, {}),
    achievedRatePerSecond: round(sent / (elapsedMs / 1000), 1),
    p50Ms: round(percentile(sorted, 0.5)),
    p90Ms: round(percentile(sorted, 0.9)),
    p99Ms: round(percentile(sorted, 0.99)),
    maxMs: round(percentile(sorted, 1)),
    maxSendLagMs: round(Math.max(...windows.map((window) => window.load.maxSendLagMs))),
    clientCpuPercent: cpuPercent(windows.map((window) => window.clientCpu)),
    serverCpuPercent: cpuPercent(windows.map((window) => window.serverCpu)),
    ...(scenario.agent === undefined ? {} : { agentCpuPercent: cpuPercent(windows.map((window) => window.agentCpu)) }),
  };
}

function printTable(rows: ScenarioResult[]): void {
  const headers = ["scenario", "p50 ms", "p90 ms", "p99 ms", "max ms", "added p50/p90/p99 ms", "errors", "rate/s", "server CPU %", "agent CPU %", "client CPU %"];
  const cells = rows.map((row) => [
    row.scenario,
    String(row.p50Ms),
    String(row.p90Ms),
    String(row.p99Ms),
    String(row.maxMs),
    row.addedP50Ms === undefined ? "(baseline)" : `${row.addedP50Ms} / ${row.addedP90Ms} / ${row.addedP99Ms}`,
    String(row.errors),
    String(row.achievedRatePerSecond),
    String(row.serverCpuPercent),
    row.agentCpuPercent === undefined ? "" : String(row.agentCpuPercent),
    String(row.clientCpuPercent),
  ]);
  const widths = headers.map((header, column) => Math.max(header.length, ...cells.map((cell) => (cell[column] ?? "").length)));
  const line = (cell: string[]): string => `| ${cell.map((text, column) => text.padEnd(widths[column] ?? 0)).join(" | ")} |`;
  process.stdout.write(`${line(headers)}\n|${widths.map((width) => "-".repeat(width + 2)).join("|")}|\n${cells.map(line).join("\n")}\n`);
}

function repositoryRoot(): string {
  let directory = dirname(thisFile);
  while (!existsSync(join(directory, "package.json")) && dirname(directory) !== directory) directory = dirname(directory);
  return directory;
}

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(`--${name}`);
  const value = index === -1 ? undefined : Number(process.argv[index + 1]);
  return value === undefined || Number.isNaN(value) ? fallback : value;
}

async function main(): Promise<void> {
  const rate = option("rate", 1000);
  const seconds = option("seconds", 10);
  const warmupSeconds = option("warmup-seconds", 2);
  const rounds = Math.max(1, Math.round(option("rounds", 5)));
  // 1 turns batching off, to measure what coalescing frames buys.
  const maxFramesPerMessage = option("max-frames-per-message", 1024);
  const children: Child[] = [];
  try {
    const agent = await spawnChild("echo-agent");
    children.push(agent);
    const agentAddress = `127.0.0.1:${agent.ports.agent}`;
    const tunnelServer = await spawnChild("tunnel-server", agentAddress, String(maxFramesPerMessage));
    children.push(tunnelServer);
    const sdkAgent = await spawnChild("sdk-agent", `127.0.0.1:${tunnelServer.ports.local}`);
    children.push(sdkAgent);

    const payload = randomBytes(payloadBytes);
    const invocation = (): Invocation => ({
      callId: "",
      capability: "bench.echo",
      version: "1.0.0",
      payload,
      contentType: "application/octet-stream",
      caller: "spiffe://bench/agent/client",
      deadlineMs: 0,
      metadata: {},
      traceparent: "",
    });

    const direct = new AgentServiceClient(agentAddress, credentials.createInsecure());
    const tunnel = new TunnelClient({
      address: `127.0.0.1:${tunnelServer.ports.inbound}`,
      credentials: credentials.createInsecure(),
      batcher: { maxFramesPerMessage },
    });
    // A sending sidecar encodes the invocation for every call (it signs those bytes), so the bench does too.
    const open = (instanceId: string) => ({
      instanceId,
      envelope: SignedEnvelope.fromPartial({
        payload: Buffer.from(Invocation.encode(invocation()).finish()),
        signer: "spiffe://bench/sidecar/a",
        alg: "ES256",
        payloadType: "agentmesh.v1.Invocation",
      }),
    });
    const scenarios: Scenario[] = [
      {
        name: "direct",
        path: "client → echo agent (unary gRPC)",
        server: agent,
        call: () =>
          new Promise((resolve, reject) =>
            direct.invoke({ invocation: invocation() }, (error, response) => (error === null ? resolve(response) : reject(error))),
          ),
      },
      { name: "tunnel", path: "client → tunnel → echo handler", server: tunnelServer, call: () => tunnel.unary(open("echo")) },
      {
        name: "tunnel+agent",
        path: "client → tunnel → echo agent (unary gRPC)",
        server: tunnelServer,
        agent,
        call: () => tunnel.unary(open("agent")),
      },
      {
        name: "tunnel+attach",
        path: "client → tunnel → SDK agent (Attach stream)",
        server: tunnelServer,
        agent: sdkAgent,
        call: () => tunnel.unary(open("sdk-agent")),
      },
    ];

    process.stdout.write(
      `tunnel bench: ${rate} calls/s open loop, ${seconds} s per scenario in ${rounds} rounds after ${warmupSeconds} s warm-up, ${payloadBytes} B payloads, plaintext\n`,
    );
    for (const scenario of scenarios) await openLoop(scenario.call, rate, warmupSeconds);
    // Scenarios take turns in short rounds, so load from whatever else runs on
    // this shared machine falls on all of them alike instead of on one.
    const windows = new Map<Scenario, Window[]>(scenarios.map((scenario) => [scenario, []]));
    for (let roundNumber = 1; roundNumber <= rounds; roundNumber += 1) {
      process.stdout.write(`  round ${roundNumber}/${rounds}\n`);
      for (const scenario of scenarios) windows.get(scenario)?.push(await measureWindow(scenario, rate, seconds / rounds));
    }
    const results = scenarios.map((scenario) => summarize(scenario, windows.get(scenario) ?? []));
    const baseline = results[0] as ScenarioResult;
    for (const result of results.slice(1)) {
      result.addedP50Ms = round(result.p50Ms - baseline.p50Ms);
      result.addedP90Ms = round(result.p90Ms - baseline.p90Ms);
      result.addedP99Ms = round(result.p99Ms - baseline.p99Ms);
    }
    printTable(results);
    direct.close();
    tunnel.close();

    const resultsName = maxFramesPerMessage === 1024 ? "tunnel" : `tunnel-max-frames-${maxFramesPerMessage}`;
    const resultsPath = join(repositoryRoot(), "bench", "results", `${resultsName}.json`);
    mkdirSync(dirname(resultsPath), { recursive: true });
    writeFileSync(
      resultsPath,
      `${JSON.stringify(
        {
          bench: "tunnel",
          date: new Date().toISOString(),
          node: process.version,
          ratePerSecond: rate,
          seconds,
          warmupSeconds,
          rounds,
          maxFramesPerMessage,
          payloadBytes,
          credentials: "plaintext",
          note: "added = scenario minus direct; CPU in % of one core over the measured window",
          results,
        },
        null,
        2,
      )}\n`,
    );
    process.stdout.write(`wrote ${resultsPath}\n`);
  } finally {
    for (const child of children) child.process.kill();
  }
}

const role = process.argv[2];
if (role === "echo-agent") await runEchoAgent();
else if (role === "tunnel-server") await runTunnelServer(process.argv[3], Number(process.argv[4]));
else if (role === "sdk-agent") await runSdkAgent(process.argv[3] as string);
else await main();
