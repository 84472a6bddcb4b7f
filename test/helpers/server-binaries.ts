import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";

// Shared by the throwaway PostgreSQL and Redis harnesses: find a system binary (or
// say in one line how to install it), pick a free port, run a child and wait for the
// line that says it is ready.

/** First existing path, or an Error whose message is a one-line install hint. */
export function findBinary(candidates: string[], installHint: string): string {
  for (const candidate of candidates) if (existsSync(candidate)) return candidate;
  throw new Error(`${candidates[0]} not found; install it with: ${installHint}`);
}

/**
 * A port nobody listens on right now. There is a window between closing this probe
 * and the server binding it; the servers started here fail loudly if they lose it.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

export interface RunningChild {
  child: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
}

export interface RunAs {
  uid: number;
  gid: number;
}

/** initdb and postgres refuse to run as root: run them as the `postgres` user then. */
export function unprivilegedUser(name: string): RunAs | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
  return { uid, gid };
}

/** Starts `command` and resolves once its output contains `readyText`; rejects if it exits first. */
export function startUntilReady(command: string, args: string[], readyText: string, options: { runAs?: RunAs; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunningChild> {
  const child = spawn(command, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LC_ALL: "C", ...options.env },
    ...(options.runAs ?? {}),
  });
  const output: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? 20_000;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} not ready within ${timeoutMs} ms: ${output.join("").slice(-2000)}`));
    }, timeoutMs);
    const onData = (chunk: Buffer) => {
      output.push(chunk.toString());
      if (output.join("").includes(readyText)) {
        clearTimeout(timer);
        resolve({ child, output, exited });
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited with ${code} before it was ready: ${output.join("").slice(-2000)}`));
    });
  });
}

/** Signals the child and waits for it to exit (SIGKILL after graceMs). */
export async function stopChild(running: RunningChild, signal: NodeJS.Signals, graceMs = 10_000): Promise<void> {
  if (running.child.exitCode !== null || running.child.signalCode !== null) return;
  running.child.kill(signal);
  const timer = setTimeout(() => running.child.kill("SIGKILL"), graceMs);
  await running.exited;
  clearTimeout(timer);
}
