import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const repoRoot = resolve(import.meta.dirname, "../..");
export const cliPath = join(repoRoot, "bin", "agentmesh.js");

/** A tool from .tools/bin (installed by scripts/install-tools.sh) or PATH. */
export function toolPath(name: string): string {
  const local = join(repoRoot, ".tools", "bin", name);
  return existsSync(local) ? local : name;
}

export function tempDir(prefix = "agentmesh-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface ManagedProcess {
  child: ChildProcess;
  lines: Array<Record<string, unknown>>;
  stderr: string[];
  /** Resolves with the first JSON log line matching `predicate`. */
  waitForLog(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts a process whose stdout is pino JSON, collecting its lines. */
export function startProcess(command: string, args: string[], env: NodeJS.ProcessEnv = {}): ManagedProcess {
  // Sidecars started by tests take any free HTTP port unless a test says otherwise: files run in parallel.
  const child = spawn(command, args, { env: { ...process.env, AGENTMESH_SIDECAR_HTTP_PORT: "0", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const lines: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  const listeners = new Set<(line: Record<string, unknown>) => void>();
  let buffered = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    const parts = buffered.split("\n");
    buffered = parts.pop() ?? "";
    for (const part of parts) {
      if (part.trim() === "") continue;
      try {
        const line = JSON.parse(part) as Record<string, unknown>;
        lines.push(line);
        for (const listener of listeners) listener(line);
      } catch {
        stderr.push(part);
      }
    }
  });
  child.stderr?.on("data", (chunk: Buffer) => stderr.push(chunk.toString()));
  const exited = new Promise<number | null>((resolveExit) => child.once("exit", (code) => resolveExit(code)));
  return {
    child,
    lines,
    stderr,
    exited,
    waitForLog(predicate, timeoutMs = 15_000) {
      const found = lines.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolveLine, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(listener);
          reject(new Error(`log line not seen within ${timeoutMs} ms; stderr: ${stderr.join("").slice(-2000)}`));
        }, timeoutMs);
        const listener = (line: Record<string, unknown>) => {
          if (!predicate(line)) return;
          clearTimeout(timer);
          listeners.delete(listener);
          resolveLine(line);
        };
        listeners.add(listener);
        exited.then(() => {
          if (!listeners.has(listener)) return;
          clearTimeout(timer);
          listeners.delete(listener);
          reject(new Error(`process exited before the log line; stderr: ${stderr.join("").slice(-2000)}`));
        });
      });
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export interface ServerProcess extends ManagedProcess {
  address: string;
  httpPort: number;
  dataDir: string;
}

/** Runs `agentmesh server` on free ports and waits until it listens. */
export async function startServerProcess(extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ServerProcess> {
  const dataDir = tempDir();
  const managed = startProcess(process.execPath, [cliPath, "server", "--port", "0", "--http-port", "0", "--data-dir", dataDir, ...extraArgs], env);
  const listening = await managed.waitForLog((line) => line.msg === "listening");
  return { ...managed, address: String(listening.grpcAddress), httpPort: Number(listening.httpPort), dataDir };
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded), never throwing on a non-zero exit; `env` is added to this process's. */
export function run(command: string, args: string[], timeoutMs = 20_000, options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<CommandResult> {
  return new Promise((resolveRun) => {
    execFile(command, args, { timeout: timeoutMs, env: { ...process.env, ...options.env }, cwd: options.cwd }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolveRun({ code, stdout: stdout.toString(), stderr: stderr.toString() });
    });
  });
}
