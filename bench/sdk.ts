/**
 * bench:sdk — the three SDKs side by side on real processes: `agentmesh server`
 * (mTLS), three `agentmesh sidecar`s joined with tokens, each running the
 * polyglot agent (examples/polyglot) of one language: TypeScript, Python, Go.
 *
 *   npm run bench:sdk -- [--start-samples 10] [--rate 200] [--seconds 3]
 *     [--warmup-calls 100] [--payload-bytes 1024]
 *
 * Measures, per language: agent start → READY (spawn → the sidecar welcomes its
 * Attach stream, from the sidecar's log: the first start, then restarts after
 * kill -9), the interpreter's own start and the SDK's import (Python's risk), and
 * the agent process's RSS idle and after the load. Per caller × callee language
 * (3 × 3): invoke round trip p50/p99 at a fixed rate, measured inside the calling
 * agent with its own SDK (`<lang>.load`: open loop, each call sent on schedule).
 * A call between two languages crosses both their sidecars and the mTLS tunnel
 * between them; a language calling itself goes through its one sidecar.
 * Writes bench/results/sdk.json.
 */
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { type CtlClients, call, ctlClients } from "../cli/ctl-command.js";
import { MeshCaller } from "../sdk/ts/src/agent/invoke.js";
import type { CreateJoinTokenResponse } from "../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { type LogLine, type LoggedProcess, percentile, printGrid, round, sampleProcess, startLoggedProcess, writeResults } from "./bench-kit.js";

const { values: args } = parseArgs({
  options: {
    "start-samples": { type: "string", default: "10" },
    rate: { type: "string", default: "200" },
    seconds: { type: "string", default: "3" },
    "warmup-calls": { type: "string", default: "100" },
    "payload-bytes": { type: "string", default: "1024" },
  },
});
const startSamples = Number(args["start-samples"]);
const ratePerSecond = Number(args.rate);
const seconds = Number(args.seconds);
const warmupCalls = Number(args["warmup-calls"]);
const payloadBytes = Number(args["payload-bytes"]);

const distRoot = resolve(import.meta.dirname, "..");
const repoRoot = resolve(distRoot, "..");
const cliPath = join(distRoot, "cli", "main.js");
const python = join(repoRoot, ".venv", "bin", "python");
const languages = ["ts", "py", "go"] as const;
type Language = (typeof languages)[number];
const startBudgetMs = 300;

const processes: LoggedProcess[] = [];
process.on("exit", () => {
  for (const child of processes) if (child.isRunning()) child.child.kill("SIGTERM");
});

function execute(file: string, argv: string[], cwd: string): Promise<string> {
  return new Promise((resolveRun, reject) =>
    execFile(file, argv, { cwd, timeout: 300_000 }, (error, stdout, stderr) => (error ? reject(new Error(`${file} ${argv.join(" ")}: ${stderr}`)) : resolveRun(stdout))),
  );
}

function agentYaml(language: Language, goAgentPath: string): string {
  const processSpec =
    language === "ts"
      ? `{command: ${JSON.stringify(process.execPath)}, args: [${JSON.stringify(join(distRoot, "examples", "polyglot", "agent.js"))}]}`
      : language === "py"
        ? `{command: ${JSON.stringify(python)}, args: [${JSON.stringify(join(repoRoot, "examples", "polyglot", "agent.py"))}]}`
        : `{command: ${JSON.stringify(goAgentPath)}}`;
  return [
    "kind: Deployment",
    `name: poly-${language}`,
    "version: 1.0.0",
    "replicas: 1",
    `capabilities: [${language}.echo@1.0.0, ${language}.load@1.0.0]`,
    `process: ${processSpec}`,
    "health: {heartbeatInterval: 500ms, readinessTimeout: 10s}",
    // Restarted at once after each kill -9, however many the bench asks for.
    "restartPolicy: {initialBackoff: 10ms, maxBackoff: 20ms, maxRestarts: 1000, window: 60s}",
    "",
  ].join("\n");
}

interface Sidecar {
  language: Language;
  process: LoggedProcess;
  localAddress: string;
  /** Supervisor state changes, oldest first. */
  states: LogLine[];
}

async function startMesh(dir: string, goAgentPath: string): Promise<{ server: LoggedProcess; admin: CtlClients; sidecars: Record<Language, Sidecar> }> {
  const server = startLoggedProcess("server", [cliPath, "server", "--port", "0", "--http-port", "0", "--data-dir", join(dir, "server")]);
  processes.push(server);
  const listening = await server.nextLine((line) => line.msg === "listening");
  const address = String(listening.grpcAddress);
  const initAdmin = startLoggedProcess("ctl init-admin", [cliPath, "ctl", "init-admin", "--data-dir", join(dir, "server"), "--out", join(dir, "admin")]);
  if ((await initAdmin.exited) !== 0) throw new Error(`ctl init-admin failed\n${initAdmin.tail()}`);
  const admin = await ctlClients({ server: address, output: "json", credentialsDir: join(dir, "admin") });
  const sidecars = {} as Record<Language, Sidecar>;
  await Promise.all(
    languages.map(async (language) => {
      const host = `bench-${language}`;
      const token = await call<CreateJoinTokenResponse>((metadata, options, callback) =>
        admin.identity.createJoinToken({ host, allowedAgentNames: ["*"], maxUses: 1, ttlSeconds: 600 }, metadata, options, callback),
      );
      const manifest = join(dir, `${language}.yaml`);
      writeFileSync(manifest, agentYaml(language, goAgentPath));
      const child = startLoggedProcess(`sidecar ${host}`, [
        cliPath, "sidecar",
        "--server", address,
        "--host", host,
        "--join-token", token.token,
        "--ca-cert", join(dir, "admin", "ca.pem"),
        "--inbound-host", "127.0.0.1",
        "--inbound-port", "0",
        "--local-port", "0",
        "--http-port", "0",
        "--data-dir", join(dir, host),
        "--manifest", manifest,
      ]);
      processes.push(child);
      const states: LogLine[] = [];
      child.onLine((line) => {
        if (line.msg === "agent process state changed") states.push(line);
      });
      const sidecarListening = await child.nextLine((line) => line.msg === "sidecar listening");
      sidecars[language] = { language, process: child, localAddress: String(sidecarListening.localAddress), states };
    }),
  );
  return { server, admin, sidecars };
}

function timeMs(line: LogLine): number {
  return typeof line.time === "number" ? line.time : Date.parse(String(line.time));
}

/** Waits for the next `state` line of the sidecar's agent at index `from` or later. */
async function nextState(sidecar: Sidecar, state: string, from: number, timeoutMs = 20_000): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = sidecar.states.slice(from).find((line) => line.state === state);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`${sidecar.language} agent: no "${state}" within ${timeoutMs} ms\n${sidecar.process.tail()}`);
    await new Promise((resolveWait) => setTimeout(resolveWait, 10));
  }
}

/** Spawn → READY of the run that reaches READY at or after index `from`, from the sidecar's own timestamps. */
async function startToReadyMs(sidecar: Sidecar, from: number): Promise<{ ms: number; pid: number }> {
  const starting = await nextState(sidecar, "starting", from);
  const ready = await nextState(sidecar, "ready", sidecar.states.indexOf(starting));
  return { ms: timeMs(ready) - timeMs(starting), pid: Number(ready.pid) };
}

async function measureStarts(sidecar: Sidecar): Promise<{ firstMs: number; restartMs: number[]; pid: number }> {
  const first = await startToReadyMs(sidecar, 0);
  const restartMs: number[] = [];
  let pid = first.pid;
  for (let sample = 0; sample < startSamples; sample += 1) {
    const from = sidecar.states.length;
    process.kill(pid, "SIGKILL");
    const again = await startToReadyMs(sidecar, from);
    restartMs.push(again.ms);
    pid = again.pid;
  }
  return { firstMs: first.ms, restartMs, pid };
}

/** Median wall time of a command run `runs` times (the interpreter's start, an import). */
function medianRunMs(file: string, argv: string[], runs = 7): number {
  const times: number[] = [];
  for (let run = 0; run < runs; run += 1) {
    const startedAt = performance.now();
    const result = spawnSync(file, argv, { cwd: repoRoot, stdio: "ignore" });
    if (result.status !== 0) throw new Error(`${file} ${argv.join(" ")} exited ${result.status}`);
    times.push(performance.now() - startedAt);
  }
  return percentile(times, 0.5);
}

interface LoadAnswer {
  latenciesUs: number[];
  failed: number;
  firstError: string;
  seconds: number;
}

interface PairResult {
  caller: Language;
  callee: Language;
  calls: number;
  failed: number;
  firstError: string;
  achievedRatePerSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
}

async function load(entry: MeshCaller, caller: Language, callee: Language, count: number): Promise<LoadAnswer> {
  const request = { capability: `${callee}.echo`, count, ratePerSec: ratePerSecond, payloadBytes, timeoutMs: 5000 };
  const reply = await entry.invoke(`${caller}.load`, JSON.stringify(request), { timeoutMs: 30_000 + (count / ratePerSecond) * 2000 });
  return JSON.parse(reply.payload.toString("utf8")) as LoadAnswer;
}

async function measurePair(entry: MeshCaller, caller: Language, callee: Language): Promise<PairResult> {
  await load(entry, caller, callee, warmupCalls);
  const answer = await load(entry, caller, callee, Math.round(ratePerSecond * seconds));
  const okMs = answer.latenciesUs.filter((value) => value >= 0).map((value) => value / 1000);
  return {
    caller,
    callee,
    calls: answer.latenciesUs.length,
    failed: answer.failed,
    firstError: answer.firstError,
    achievedRatePerSecond: round(answer.latenciesUs.length / answer.seconds, 1),
    p50Ms: round(percentile(okMs, 0.5)),
    p90Ms: round(percentile(okMs, 0.9)),
    p99Ms: round(percentile(okMs, 0.99)),
    maxMs: round(Math.max(...okMs)),
  };
}

const mib = (bytes: number) => round(bytes / 1024 / 1024, 1);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "agentmesh-bench-sdk-"));
  const goAgentPath = join(dir, "polyglot-go");
  await Promise.all([
    execute("go", ["build", "-o", goAgentPath, "."], join(repoRoot, "examples", "polyglot", "go")),
    execute("bash", [join(repoRoot, "scripts", "python-env.sh")], repoRoot),
  ]);
  const goVersion = (await execute("go", ["version"], repoRoot)).trim();
  const pythonVersion = (await execute(python, ["--version"], repoRoot)).trim();
  const loadBefore = loadavg()[0] ?? 0;

  const interpreter = {
    nodeBareMs: round(medianRunMs(process.execPath, ["-e", "0"])),
    nodeImportSdkMs: round(medianRunMs(process.execPath, ["-e", `await import(${JSON.stringify(join(distRoot, "sdk", "ts", "src", "index.js"))})`, "--input-type=module"])),
    pythonBareMs: round(medianRunMs(python, ["-c", "pass"])),
    pythonImportSdkMs: round(medianRunMs(python, ["-c", "import agentmesh.agent, agentmesh.caller"])),
  };

  const mesh = await startMesh(dir, goAgentPath);
  try {
    const starts = {} as Record<Language, { firstMs: number; restartMs: number[]; pid: number }>;
    // One language at a time, so the starts do not share the two cores.
    for (const language of languages) starts[language] = await measureStarts(mesh.sidecars[language]);
    const entry = new MeshCaller(mesh.sidecars.ts.localAddress);
    const deadline = Date.now() + 20_000;
    while ((await entry.discover("ts.load")).length + (await entry.discover("py.load")).length + (await entry.discover("go.load")).length < 3) {
      if (Date.now() > deadline) throw new Error("the agents never all appeared in the entry sidecar's routing");
      await new Promise((resolveWait) => setTimeout(resolveWait, 100));
    }
    const rssIdle = Object.fromEntries(languages.map((language) => [language, sampleProcess(starts[language].pid).rssBytes])) as Record<Language, number>;
    const pairs: PairResult[] = [];
    const rssPeak = { ...rssIdle };
    for (const caller of languages) {
      for (const callee of languages) {
        pairs.push(await measurePair(entry, caller, callee));
        for (const language of languages) rssPeak[language] = Math.max(rssPeak[language], sampleProcess(starts[language].pid).rssBytes);
      }
    }
    entry.close();

    const startRows = languages.map((language) => {
      const samples = starts[language].restartMs;
      const p99 = percentile(samples, 0.99);
      return [language, starts[language].firstMs, samples.length, percentile(samples, 0.5), p99, `p99 < ${startBudgetMs} ms`, p99 < startBudgetMs ? "ok" : "MISSED"];
    });
    printGrid(`agent start → READY (spawn → Attach welcomed; first start, then ${startSamples} restarts after kill -9), ms`, ["language", "first", "restarts", "p50", "p99", "budget", ""], startRows);
    printGrid("interpreter start and SDK import (median of 7 runs, ms)", ["what", "ms"], [
      ["node -e 0", interpreter.nodeBareMs],
      ["node: import the TS SDK entry", interpreter.nodeImportSdkMs],
      ["python -c pass", interpreter.pythonBareMs],
      ["python: import agentmesh.agent, agentmesh.caller", interpreter.pythonImportSdkMs],
    ]);
    printGrid(`invoke round trip, caller × callee, ${ratePerSecond}/s open loop for ${seconds} s, ${payloadBytes} B payload (measured inside the calling agent), ms`, ["caller → callee", "calls", "failed", "rate/s", "p50", "p90", "p99", "max"], pairs.map((pair) => [
      `${pair.caller} → ${pair.callee}${pair.caller === pair.callee ? " (one sidecar)" : ""}`, pair.calls, pair.failed, pair.achievedRatePerSecond, pair.p50Ms, pair.p90Ms, pair.p99Ms, pair.maxMs,
    ]));
    printGrid("agent process RSS (MiB)", ["language", "idle after start", "peak during the load"], languages.map((language) => [language, mib(rssIdle[language]), mib(rssPeak[language])]));
    const failures = pairs.filter((pair) => pair.failed > 0);
    for (const pair of failures) process.stdout.write(`\n${pair.caller} → ${pair.callee}: ${pair.failed} failed, first: ${pair.firstError}\n`);

    process.stdout.write(`\nmachine: ${cpus().length} cores, 1-minute load average ${round(loadBefore)} before, ${round(loadavg()[0] ?? 0)} after (the budgets assume a quiet machine, load < 1)\n`);
    const path = writeResults("sdk", {
      at: new Date().toISOString(),
      machine: { cpus: cpus().length, loadAverage1mBefore: round(loadBefore), loadAverage1mAfter: round(loadavg()[0] ?? 0) },
      versions: { node: process.version, go: goVersion, python: pythonVersion },
      settings: { startSamples, ratePerSecond, seconds, warmupCalls, payloadBytes },
      startToReadyMs: Object.fromEntries(languages.map((language) => [language, { first: starts[language].firstMs, restarts: starts[language].restartMs, p50: percentile(starts[language].restartMs, 0.5), p99: percentile(starts[language].restartMs, 0.99) }])),
      interpreterMs: interpreter,
      invoke: pairs,
      rssBytes: { idle: rssIdle, peak: rssPeak },
    });
    process.stdout.write(`\nwrote ${path}\n`);
  } finally {
    mesh.admin.close();
    const sidecars = processes.filter((child) => child !== mesh.server);
    await Promise.all(sidecars.map(async (child) => {
      child.child.kill("SIGTERM");
      await child.exited;
    }));
    mesh.server.child.kill("SIGTERM");
    await mesh.server.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:sdk failed: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
