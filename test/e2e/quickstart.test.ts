// The README's Quickstart, as written: its shell commands are taken from README.md and
// run in order in one bash (so `A=…`, `TOKEN=$(…)` and the background sidecar work as
// they do for a reader), against a real server and sidecar. Every command must print
// something meaningful; the Discover example once answered `{}` because it ran before
// any agent existed.
//
// What the test changes, and only this: `npm ci && npm start` is the server started
// directly (npm test has built already), and the fixed ports (7420, 7421, 7430, 7431)
// become free ones, through the AGENTMESH_* variables every command reads and by
// rewriting the two literal addresses grpcurl, grpc-health-probe and curl are given.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type ManagedProcess, cliPath, repoRoot, startProcess, tempDir } from "../helpers/processes.js";

let server: ManagedProcess | undefined;
const backgroundPids: number[] = [];

afterEach(async () => {
  for (const pid of backgroundPids.splice(0)) await stopPid(pid);
  await server?.stop("SIGTERM");
  server = undefined;
});

/** SIGTERM to a process the script left in the background, then wait (bounded) until it is gone; SIGKILL after 10 s. */
async function stopPid(pid: number): Promise<void> {
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (!alive()) return;
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 10_000;
  while (alive() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  if (alive()) process.kill(pid, "SIGKILL");
}

/** The shell commands of the README's Quickstart section (up to the next `## `), continuation lines joined. */
function quickstartCommands(readme: string): string[] {
  const start = readme.indexOf("## Quickstart");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end === -1 ? undefined : end);
  const commands: string[] = [];
  for (const block of section.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const text = (block[1] ?? "").replace(/\\\n\s*/g, "");
    for (const line of text.split("\n")) if (line.trim() !== "" && !line.trim().startsWith("#")) commands.push(line.trim());
  }
  return commands;
}

interface Step {
  command: string;
  code: number;
  output: string;
  backgroundPid?: number;
}

/** What each Quickstart command must print. A command the README gains needs a row here. */
const expectations: Array<[RegExp, (step: Step, context: { home: string; logs: Array<Record<string, unknown>> }) => void]> = [
  [/^A=/, (step) => expect(step.output).toBe("")],
  [/^TOKEN=/, (step) => expect(step.output).toBe("")],
  [
    /ctl init-admin$/,
    (step, { home }) => {
      expect(step.output).toContain("spiffe://agentmesh.local/admin/operator");
      expect(step.output).toContain(`wrote ${join(home, ".config", "agentmesh", "admin")}/{admin-cert.pem,admin-key.pem,ca.pem}; ctl finds them there`);
    },
  ],
  [/^grpcurl .* list$/, (step) => expect(step.output.split("\n")).toEqual(expect.arrayContaining(["agentmesh.v1.RegistryService", "agentmesh.v1.OrchestratorService", "grpc.health.v1.Health"]))],
  [/^grpc-health-probe /, (step) => expect(step.output.trim()).toBe("status: SERVING")],
  [/ sidecar .*&$/, (step, { logs }) => {
    expect(step.backgroundPid).toBeGreaterThan(0);
    expect(logs.some((line) => line.msg === "sidecar listening")).toBe(true);
  }],
  [/ctl apply -f examples\/deployments\/word-stats\.yaml$/, (step) => expect(step.output).toBe("deployment/word-stats created\n")],
  [/ctl rollout status word-stats$/, (step) => expect(step.output.trim().split("\n").at(-1)).toMatch(/3\/3 updated, 3 ready\s+- → 1\.0\.0\s+complete/)],
  [
    /ctl agents$/,
    (step) => {
      const rows = step.output.trim().split("\n");
      expect(rows[0]).toMatch(/^NAME\s+VERSION\s+INSTANCE\s+STATE\s+CAPABILITIES\s+AGE$/);
      expect(rows.slice(1).filter((row) => /^word-stats\s+1\.0\.0\s+\S+\s+READY\s+text\.word-stats@1\.0\.0\s/.test(row))).toHaveLength(3);
    },
  ],
  [/ctl deployments$/, (step) => expect(step.output).toMatch(/^word-stats\s+1\.0\.0\s+3\/3\s+3\s+complete\s/m)],
  [
    /^grpcurl .*RegistryService\/Discover$/,
    (step) => {
      const answer = JSON.parse(step.output) as { instances?: Array<{ manifest: { name: string }; state: string }> };
      expect(answer.instances?.map((instance) => [instance.manifest.name, instance.state])).toEqual([
        ["word-stats", "HEALTH_STATE_READY"],
        ["word-stats", "HEALTH_STATE_READY"],
        ["word-stats", "HEALTH_STATE_READY"],
      ]);
    },
  ],
  [/ctl invoke text\.word-stats '\^1' --data "to be or not to be"$/, (step) => expect(JSON.parse(step.output)).toMatchObject({ words: 6, top: [["be", 2], ["to", 2], ["not", 1], ["or", 1]] })],
  [/^curl .*\/metrics \| grep \^agentmesh_agents$/, (step) => expect(step.output).toContain('agentmesh_agents{state="ready"} 3\n')],
];

/** Runs the commands in one bash, each between markers, and splits the output back into steps. */
function runInOneShell(commands: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ steps: Step[]; logs: Array<Record<string, unknown>> }> {
  const script = [
    "set -u",
    `cd ${JSON.stringify(repoRoot)}`,
    ...commands.flatMap((command, index) => [
      `printf '\\n@@@ begin ${index}\\n'`,
      command,
      command.endsWith("&") ? `printf '\\n@@@ end ${index} 0 %s\\n' "$!"` : `printf '\\n@@@ end ${index} %s\\n' "$?"`,
    ]),
  ].join("\n");
  return new Promise((resolve, reject) => {
    // Its own process group, so a timeout can end the shell and whatever it left in the background.
    const child: ChildProcess = spawn("bash", ["-c", script], { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      for (const match of output.matchAll(/\n@@@ end \d+ 0 (\d+)\n/g)) backgroundPids.push(Number(match[1]));
      if (child.pid !== undefined) process.kill(-child.pid, "SIGTERM");
      reject(new Error(`the Quickstart did not finish within ${timeoutMs} ms; output so far:\n${output.slice(-4000)}`));
    }, timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(splitSteps(commands, output));
    });
  });
}

/** The output between each command's markers; the background sidecar's JSON log lines set aside. */
function splitSteps(commands: readonly string[], output: string): { steps: Step[]; logs: Array<Record<string, unknown>> } {
  const logs: Array<Record<string, unknown>> = [];
  const kept: string[] = [];
  for (const line of output.split("\n")) {
    if (line.startsWith('{"level":')) logs.push(JSON.parse(line) as Record<string, unknown>);
    else kept.push(line);
  }
  const text = kept.join("\n");
  const steps = commands.map((command, index): Step => {
    const match = new RegExp(`\\n@@@ begin ${index}\\n([\\s\\S]*?)\\n@@@ end ${index} (\\d+)(?: (\\d+))?\\n`).exec(text);
    if (!match) return { command, code: -1, output: text.slice(-2000) };
    return { command, code: Number(match[2]), output: match[1] ?? "", backgroundPid: match[3] === undefined ? undefined : Number(match[3]) };
  });
  return { steps, logs };
}

describe("README Quickstart", () => {
  it("every command, in the README's order, prints something meaningful", async () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const commands = quickstartCommands(readme);
    const [start, ...rest] = commands;
    expect(start).toMatch(/^npm ci && npm start\b/);
    expect(rest.length).toBeGreaterThan(10);

    const home = tempDir("agentmesh-home-");
    const dataDir = join(tempDir(), "server");
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, XDG_CONFIG_HOME: "", AGENTMESH_DATA_DIR: dataDir };
    for (const name of ["AGENTMESH_CREDENTIALS_DIR", "AGENTMESH_LOG_LEVEL", "AGENTMESH_SERVER", "AGENTMESH_PLAINTEXT"]) delete env[name];

    // `npm start`: the server on free ports.
    server = startProcess(process.execPath, [cliPath, "server"], { ...env, AGENTMESH_PORT: "0", AGENTMESH_HTTP_PORT: "0" });
    const listening = await server.waitForLog((line) => line.msg === "listening", 20_000);
    const grpcPort = Number(String(listening.grpcAddress).split(":").pop());
    const httpPort = Number(listening.httpPort);

    const shellEnv: NodeJS.ProcessEnv = {
      ...env,
      PATH: `${join(repoRoot, ".tools", "bin")}:${env.PATH ?? ""}`,
      AGENTMESH_SERVER: `127.0.0.1:${grpcPort}`,
      AGENTMESH_INBOUND_PORT: "0",
      AGENTMESH_LOCAL_PORT: "0",
      AGENTMESH_SIDECAR_HTTP_PORT: "0",
      AGENTMESH_SIDECAR_DATA_DIR: join(tempDir(), "sidecar"),
    };
    const runnable = rest.map((command) => command.replaceAll("localhost:7420", `localhost:${grpcPort}`).replaceAll("127.0.0.1:7421", `127.0.0.1:${httpPort}`));
    const { steps, logs } = await runInOneShell(runnable, shellEnv, 150_000);
    for (const step of steps) if (step.backgroundPid) backgroundPids.push(step.backgroundPid);

    for (const step of steps) {
      const expectation = expectations.find(([pattern]) => pattern.test(step.command));
      expect(expectation, `no expectation for the README command: ${step.command}`).toBeDefined();
      expect({ command: step.command, code: step.code }).toEqual({ command: step.command, code: 0 });
      if (!/^[A-Z]+=/.test(step.command) && !step.command.endsWith("&")) expect(step.output.trim(), step.command).not.toBe("");
      expectation?.[1](step, { home, logs });
    }
  }, 180_000);
});
