/**
 * npm run demo — a whole mesh on this machine, narrated:
 * a control plane (mTLS), two sidecars that join with one-time tokens, the
 * example agents deployed by the orchestrator (examples/deployments/demo.yaml),
 * then routed calls from a client beside sidecar "alpha": word statistics,
 * JSON validation of a valid and an invalid document, a streamed tokenization,
 * and one call through the control plane for clients without a sidecar.
 * Everything runs in a temporary directory and is shut down at the end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Metadata, type ServiceError, credentials } from "@grpc/grpc-js";
import { type CtlClients, call, ctlClients } from "../cli/ctl-command.js";
import { MeshCaller } from "../sdk/ts/src/agent/invoke.js";
import { SidecarServiceClient, type SidecarServiceInvokeStreamResponse } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import type { ListAgentsResponse } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../sdk/ts/src/gen/agentmesh/v1/types.js";

const repoRoot = resolve(import.meta.dirname, "..", "..");
const cliPath = join(repoRoot, "dist", "cli", "main.js");
const deploymentFile = join("examples", "deployments", "demo.yaml");
const expectedReplicas = 4;

const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const dim = (text: string) => (process.stdout.isTTY ? `\x1b[2m${text}\x1b[0m` : text);
const say = (text = "") => process.stdout.write(`${text}\n`);
const step = (title: string) => say(`\n${bold(`▶ ${title}`)}`);
const indent = (text: string) => text.trimEnd().split("\n").map((line) => `    ${line}`).join("\n");

// ---------------------------------------------------------------- processes

interface Running {
  name: string;
  child: ChildProcess;
  logPath: string;
  waitForLine(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(): Promise<number | null>;
}

const children = new Set<ChildProcess>();
// Should the demo itself die, SIGTERM still reaches every process it started: the
// sidecars then stop their agents as on any shutdown, and nothing is left behind.
process.on("exit", () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
});

/** Starts `agentmesh <args>` with its JSON log going to a file in the demo directory. */
function startAgentmesh(name: string, args: string[], logDir: string): Running {
  const logPath = join(logDir, `${name}.log`);
  const log = createWriteStream(logPath);
  const child = spawn(process.execPath, [cliPath, ...args], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  const waiters = new Set<(line: Record<string, unknown>) => void>();
  const seen: Array<Record<string, unknown>> = [];
  let buffered = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    log.write(chunk);
    buffered += chunk.toString();
    const parts = buffered.split("\n");
    buffered = parts.pop() ?? "";
    for (const part of parts) {
      try {
        const line = JSON.parse(part) as Record<string, unknown>;
        if (seen.length < 100) seen.push(line);
        for (const waiter of [...waiters]) waiter(line);
      } catch {
        // Not a log line; it is in the file all the same.
      }
    }
  });
  child.stderr?.on("data", (chunk: Buffer) => log.write(chunk));
  const exited = new Promise<number | null>((resolveExit) => child.once("exit", (code) => log.end(() => resolveExit(code))));
  return {
    name,
    child,
    logPath,
    waitForLine(predicate, timeoutMs = 30_000) {
      const already = seen.find(predicate);
      if (already) return Promise.resolve(already);
      return new Promise((resolveLine, reject) => {
        const timer = setTimeout(() => finish(new Error(`${name} did not log the expected line within ${timeoutMs} ms (see ${logPath})`)), timeoutMs);
        const waiter = (line: Record<string, unknown>) => {
          if (predicate(line)) finish(undefined, line);
        };
        function finish(error?: Error, line?: Record<string, unknown>) {
          clearTimeout(timer);
          waiters.delete(waiter);
          if (error) reject(error);
          else resolveLine(line as Record<string, unknown>);
        }
        waiters.add(waiter);
        void exited.then((code) => {
          if (waiters.has(waiter)) finish(new Error(`${name} exited (${code}) before it was ready (see ${logPath})`));
        });
      });
    },
    stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

/** Runs one `agentmesh ctl` command to completion, as an operator would type it. */
function ctl(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [cliPath, "ctl", ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.once("exit", (code) => (code === 0 ? resolveRun(stdout) : reject(new Error(`agentmesh ctl ${args[0]} failed: ${stderr.trim() || `exit ${code}`}`))));
  });
}

// ---------------------------------------------------------------- mesh helpers

interface Sidecar {
  name: string;
  process: Running;
  localAddress: string;
  inboundAddress: string;
}

async function startSidecar(name: string, serverAddress: string, dir: string, env: NodeJS.ProcessEnv): Promise<Sidecar> {
  const token = (await ctl(["join-token", "--host", name, "--agents", "*"], env)).split("\n")[0] ?? "";
  say(`    $ agentmesh ctl join-token --host ${name} --agents '*'   ${dim(`→ ${token.slice(0, 8)}… (one use, 10 minutes)`)}`);
  const running = startAgentmesh(
    `sidecar-${name}`,
    [
      "sidecar",
      "--server", serverAddress,
      "--host", name,
      "--join-token", token,
      "--ca-cert", join(dir, "admin", "ca.pem"),
      "--inbound-host", "127.0.0.1",
      "--inbound-port", "0",
      "--local-port", "0", "--http-port", "0",
      "--data-dir", join(dir, `sidecar-${name}`),
      "--capacity", "4",
    ],
    join(dir, "logs"),
  );
  const listening = await running.waitForLine((line) => line.msg === "sidecar listening");
  const sidecar = { name, process: running, localAddress: String(listening.localAddress), inboundAddress: String(listening.inboundAddress) };
  say(`    sidecar ${bold(name)}: ${String(listening.spiffeId)}, mTLS inbound ${sidecar.inboundAddress}, local port ${sidecar.localAddress} (plaintext, loopback)`);
  return sidecar;
}

async function listInstances(admin: CtlClients): Promise<AgentInstance[]> {
  const response = await call<ListAgentsResponse>((metadata, options, callback) =>
    admin.registry.listAgents({ name: "", labelSelector: undefined, states: [], pageSize: 1000, pageToken: "" }, metadata, options, callback),
  );
  return response.instances;
}

async function waitForReady(admin: CtlClients, count: number, timeoutMs = 60_000): Promise<AgentInstance[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const instances = await listInstances(admin);
    const ready = instances.filter((instance) => instance.state === HealthState.HEALTH_STATE_READY);
    if (ready.length >= count) return ready;
    if (Date.now() > deadline) throw new Error(`only ${ready.length} of ${count} agent instances READY after ${timeoutMs / 1000} s`);
    await new Promise((resolveWait) => setTimeout(resolveWait, 200));
  }
}

// ---------------------------------------------------------------- the calls

type HostOf = (instanceId: string) => string;

function route(from: Sidecar, host: string): string {
  return host === from.name ? `${from.name} → its own agent` : `${from.name} ⇄ ${host} over the mTLS tunnel, signed envelope`;
}

async function wordStatsCalls(caller: MeshCaller, from: Sidecar, hostOf: HostOf): Promise<void> {
  step(`Word statistics: 4 calls from a client beside ${from.name} (MeshCaller → SidecarService.Invoke on its local port)`);
  const texts = [
    "the quick brown fox jumps over the lazy dog and the dog sleeps",
    "to be or not to be that is the question",
    "agents call agents through sidecars\nsidecars pick an instance from their own routing table",
    "one two three two three three",
  ];
  const picks = new Map<string, number>();
  for (const text of texts) {
    const result = await caller.invoke("text.word-stats", text, { idempotent: true });
    picks.set(result.instanceId, (picks.get(result.instanceId) ?? 0) + 1);
    const stats = JSON.parse(result.payload.toString("utf8")) as { words: number; lines: number; top: Array<[string, number]> };
    const top = stats.top.slice(0, 3).map(([word, count]) => `${word}×${count}`).join(", ");
    say(`    "${text.split("\n")[0]?.slice(0, 40)}${text.length > 40 ? "…" : ""}"`);
    say(`      ${stats.words} words, ${stats.lines} line(s), top ${top}`);
    say(dim(`      answered by ${result.instanceId} v${result.version} on sidecar ${hostOf(result.instanceId)} (${route(from, hostOf(result.instanceId))})`));
  }
  const spread = [...picks.entries()].map(([instanceId, count]) => `${instanceId} on ${hostOf(instanceId)} ×${count}`).join(", ");
  say(`    picks: ${spread}`);
  say(dim("    (power of two choices on in-flight calls, latency EWMA as tie-break, from alpha's own Watch-fed table: no control-plane round trip per call)"));
}

async function validationCalls(caller: MeshCaller, from: Sidecar, hostOf: HostOf): Promise<void> {
  step("JSON validation: json-validator has no SDK; its sidecar calls its plain AgentService port");
  const schema = {
    type: "object",
    required: ["name", "age"],
    properties: { name: { type: "string", minLength: 1 }, age: { type: "integer", minimum: 0 }, email: { type: "string" } },
  };
  say(dim(`    schema: ${JSON.stringify(schema)}`));
  for (const document of [{ name: "Ada", age: 36, email: "ada@example.org" }, { name: "", age: -1 }]) {
    const result = await caller.invoke("json.validate", JSON.stringify({ schema, document }), { idempotent: true, contentType: "application/json" });
    const verdict = JSON.parse(result.payload.toString("utf8")) as { valid: boolean; errors: string[] };
    say(`    ${JSON.stringify(document)}`);
    say(`      ${verdict.valid ? "valid" : `invalid: ${verdict.errors.join("; ")}`}`);
    say(dim(`      answered by ${result.instanceId} v${result.version} on sidecar ${hostOf(result.instanceId)} (${route(from, hostOf(result.instanceId))})`));
  }
}

async function tokenizeStream(caller: MeshCaller, from: Sidecar, hostOf: HostOf): Promise<void> {
  step("Streamed tokenization: SidecarService.InvokeStream, one message per token");
  const [tokenizer] = await caller.discover("text.tokenize");
  const text = "Agents talk through sidecars, not to each other; the mesh does the rest!";
  say(`    "${text}"`);
  const client = new SidecarServiceClient(from.localAddress, credentials.createInsecure());
  const tokens: string[] = [];
  const startedAtMs = performance.now();
  let firstTokenMs = 0;
  try {
    await new Promise<void>((resolveStream, reject) => {
      const stream = client.invokeStream(
        { capability: "text.tokenize", versionRange: "^1.0.0", labelSelector: undefined, payload: Buffer.from(text), contentType: "text/plain", metadata: {}, timeoutMs: 10_000 },
        new Metadata(),
      );
      stream.on("data", (message: SidecarServiceInvokeStreamResponse) => {
        if (tokens.length === 0) firstTokenMs = performance.now() - startedAtMs;
        tokens.push(Buffer.from(message.payload).toString("utf8"));
      });
      stream.on("end", () => resolveStream());
      stream.on("error", (error: ServiceError) => reject(error));
    });
  } finally {
    client.close();
  }
  say(`      ${tokens.length} messages: ${tokens.join(" | ")}`);
  const where = tokenizer ? `${tokenizer.instanceId} v${tokenizer.manifest?.version ?? "?"} on sidecar ${hostOf(tokenizer.instanceId)} (${route(from, hostOf(tokenizer.instanceId))})` : "the tokenizer";
  say(dim(`      streamed by ${where}; first token after ${firstTokenMs.toFixed(1)} ms, all after ${(performance.now() - startedAtMs).toFixed(1)} ms`));
}

async function controlPlaneCall(env: NodeJS.ProcessEnv, hostOf: HostOf): Promise<void> {
  step("A client without a sidecar: OrchestratorService.Invoke through the control plane");
  const text = "the server picks an instance and forwards the call";
  say(`    $ agentmesh ctl invoke text.word-stats ^1.0.0 --data "${text}" -o json`);
  const reply = JSON.parse(await ctl(["invoke", "text.word-stats", "^1.0.0", "--data", text, "-o", "json"], env)) as { instanceId: string; version: string; payload: string };
  const stats = JSON.parse(reply.payload) as { words: number };
  say(`      ${stats.words} words`);
  say(dim(`      answered by ${reply.instanceId} v${reply.version} on sidecar ${hostOf(reply.instanceId)}`));
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "agentmesh-demo-"));
  mkdirSync(join(dir, "logs"));
  const processes: Running[] = [];
  let admin: CtlClients | undefined;
  let caller: MeshCaller | undefined;
  let failed = false;
  try {
    say(bold("agentmesh demo: a control plane, two sidecars, three example agents"));
    say(dim(`working directory ${dir}`));

    step("Control plane: agentmesh server (mTLS on by default; it creates the mesh CA on first start)");
    const server = startAgentmesh("server", ["server", "--port", "0", "--http-port", "0", "--data-dir", join(dir, "server")], join(dir, "logs"));
    processes.push(server);
    const listening = await server.waitForLine((line) => line.msg === "listening");
    const serverAddress = String(listening.grpcAddress);
    say(`    listening on ${serverAddress} (gRPC), http://127.0.0.1:${String(listening.httpPort)}/metrics`);
    const env = { AGENTMESH_SERVER: serverAddress, AGENTMESH_CREDENTIALS_DIR: join(dir, "admin") };
    await ctl(["init-admin", "--data-dir", join(dir, "server"), "--out", join(dir, "admin")], env);
    say(`    $ agentmesh ctl init-admin   ${dim("→ admin certificate spiffe://agentmesh.local/admin/operator for ctl")}`);
    admin = await ctlClients({ server: serverAddress, output: "table", credentialsDir: join(dir, "admin") });

    step("Two sidecars join the mesh: join token → CSR → certificate, one Connect stream each");
    const alpha = await startSidecar("alpha", serverAddress, dir, env);
    processes.push(alpha.process);
    const beta = await startSidecar("beta", serverAddress, dir, env);
    processes.push(beta.process);

    step(`Deploy the example agents: ${deploymentFile}`);
    say(`    $ agentmesh ctl apply -f ${deploymentFile}`);
    say(indent(await ctl(["apply", "-f", deploymentFile], env)));
    const appliedAtMs = performance.now();
    const ready = await waitForReady(admin, expectedReplicas);
    say(`    the orchestrator placed ${ready.length} instances on the sidecars; all READY after ${((performance.now() - appliedAtMs) / 1000).toFixed(1)} s:`);
    const hosts = new Map(ready.map((instance) => [instance.instanceId, instance.host]));
    const hostOf: HostOf = (instanceId) => hosts.get(instanceId) ?? "?";
    for (const instance of [...ready].sort((left, right) => (left.manifest?.name ?? "").localeCompare(right.manifest?.name ?? ""))) {
      const capabilities = (instance.manifest?.capabilities ?? []).map((capability) => `${capability.name}@${capability.version}`).join(", ");
      say(`      ${instance.instanceId.padEnd(24)} v${(instance.manifest?.version ?? "").padEnd(7)} on ${instance.host.padEnd(6)} ${capabilities}`);
    }
    say(`    $ agentmesh ctl deployments`);
    say(indent(await ctl(["deployments"], env)));

    caller = new MeshCaller(alpha.localAddress);
    // The sidecar's routing table is fed by the registry's Watch; wait until it has every instance.
    for (const [capability, count] of [["text.word-stats", 2], ["json.validate", 1], ["text.tokenize", 1]] as const) {
      const deadline = Date.now() + 10_000;
      while ((await caller.discover(capability)).length < count && Date.now() < deadline) await new Promise((resolveWait) => setTimeout(resolveWait, 100));
    }
    await wordStatsCalls(caller, alpha, hostOf);
    await validationCalls(caller, alpha, hostOf);
    await tokenizeStream(caller, alpha, hostOf);
    await controlPlaneCall(env, hostOf);
  } catch (error) {
    failed = true;
    process.stderr.write(`\ndemo failed: ${error instanceof Error ? error.message : String(error)}\n`);
    for (const running of processes) {
      const tail = readFileSync(running.logPath, "utf8").trimEnd().split("\n").slice(-5).join("\n");
      process.stderr.write(`--- last lines of ${running.logPath}\n${tail}\n`);
    }
  } finally {
    caller?.close();
    admin?.close();
    step("Shut down: sidecars drain and stop their agents, then the server stops");
    const startedAtMs = performance.now();
    const sidecars = processes.filter((running) => running.name.startsWith("sidecar-"));
    const sidecarCodes = await Promise.all(sidecars.map((running) => running.stop()));
    const serverCodes = await Promise.all(processes.filter((running) => running.name === "server").map((running) => running.stop()));
    const codes = [...sidecarCodes, ...serverCodes];
    say(`    ${codes.length} processes exited (${codes.map((code) => String(code)).join(", ")}) in ${((performance.now() - startedAtMs) / 1000).toFixed(1)} s`);
    if (codes.some((code) => code !== 0)) failed = true;
    if (failed) say(`    logs kept in ${join(dir, "logs")}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  say(failed ? "\ndemo finished with errors" : "\ndone.");
  return failed ? 1 : 0;
}

process.exit(await main());
