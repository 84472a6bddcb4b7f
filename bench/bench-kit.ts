import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";

/** Percentile by nearest rank over a copy of the samples. */
export function percentile(samples: readonly number[], fraction: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((left, right) => left - right);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1));
  return sorted[rank] as number;
}

export function round(value: number, digits = 2): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

export interface ProcessSample {
  cpuTicks: number;
  rssBytes: number;
  atMs: number;
}

const CLOCK_TICKS_PER_SECOND = 100;

/** CPU ticks (user + system) and RSS of another process, from /proc. */
export function sampleProcess(pid: number): ProcessSample {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuTicks = Number(fields[11]) + Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return { cpuTicks, rssBytes: rssKb * 1024, atMs: performance.now() };
}

/** Share of one core used between two samples, in percent. */
export function cpuPercent(before: ProcessSample, after: ProcessSample): number {
  const seconds = (after.atMs - before.atMs) / 1000;
  return ((after.cpuTicks - before.cpuTicks) / CLOCK_TICKS_PER_SECOND / seconds) * 100;
}

export interface BenchRow {
  metric: string;
  value: number | string;
  unit: string;
  budget?: string;
  ok?: boolean;
}

export function printTable(title: string, rows: BenchRow[]): void {
  const cells = rows.map((row) => [row.metric, String(row.value), row.unit, row.budget ?? "", row.ok === undefined ? "" : row.ok ? "ok" : "MISSED"]);
  const headers = ["metric", "value", "unit", "budget", ""];
  const widths = headers.map((header, column) => Math.max(header.length, ...cells.map((cell) => (cell[column] ?? "").length)));
  const line = (cell: string[]) => `| ${cell.map((text, column) => text.padEnd(widths[column] ?? 0)).join(" | ")} |`;
  process.stdout.write(`\n${title}\n${line(headers)}\n|${widths.map((width) => "-".repeat(width + 2)).join("|")}|\n${cells.map(line).join("\n")}\n`);
}

export function writeResults(name: string, data: unknown): string {
  const path = join(dirname(new URL(import.meta.url).pathname), "..", "..", "bench", "results", `${name}.json`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(data, null, 2)}\n`);
  return path;
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A free TCP port on 127.0.0.1 (bound and released), for a process that must keep its port across restarts. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolvePort(address.port) : reject(new Error("no port"))));
    });
  });
}

/** mulberry32: a small seeded PRNG, so a bench's choices (fault order, targets) repeat with its --seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A table with any columns, in the same Markdown-ish form as printTable. */
export function printGrid(title: string, headers: string[], rows: Array<Array<string | number>>): void {
  const cells = rows.map((row) => row.map(String));
  const widths = headers.map((header, column) => Math.max(header.length, ...cells.map((cell) => (cell[column] ?? "").length)));
  const line = (cell: string[]) => `| ${headers.map((_, column) => (cell[column] ?? "").padEnd(widths[column] ?? 0)).join(" | ")} |`;
  const body = cells.length > 0 ? cells.map(line).join("\n") : line(["(none)"]);
  process.stdout.write(`\n${title}\n${line(headers)}\n|${widths.map((width) => "-".repeat(width + 2)).join("|")}|\n${body}\n`);
}

export type LogLine = Record<string, unknown>;

/** A child process whose stdout is pino JSON: lines go to listeners as they arrive; only a short tail is kept. */
export interface LoggedProcess {
  name: string;
  child: ChildProcess;
  pid: number;
  startedAtMs: number;
  exited: Promise<number | null>;
  /** Calls `listener` for every JSON line from now on; returns a function that removes it. */
  onLine(listener: (line: LogLine) => void): () => void;
  /** The first line from now on matching `predicate`; rejects on timeout or exit. */
  nextLine(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** The end of its stderr, unparsed output and warn+ lines, for error messages. */
  tail(): string;
  isRunning(): boolean;
}

export function startLoggedProcess(name: string, argv: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): LoggedProcess {
  const child = spawn(process.execPath, argv, { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ["ignore", "pipe", "pipe"] });
  const listeners = new Set<(line: LogLine) => void>();
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
      if (part.trim() === "") continue;
      let line: LogLine;
      try {
        line = JSON.parse(part) as LogLine;
      } catch {
        keepTail(`${part}\n`);
        continue;
      }
      if (typeof line.level === "number" && line.level >= 40) keepTail(`${part}\n`);
      for (const listener of [...listeners]) listener(line);
    }
  });
  child.stderr?.on("data", (chunk: Buffer) => keepTail(chunk.toString()));
  const exited = new Promise<number | null>((resolveExit) => child.once("exit", (code) => resolveExit(code)));
  const isRunning = () => child.exitCode === null && child.signalCode === null;
  const onLine = (listener: (line: LogLine) => void) => {
    listeners.add(listener);
    return () => listeners.delete(listener);
  };
  return {
    name,
    child,
    pid: child.pid as number,
    startedAtMs: Date.now(),
    exited,
    onLine,
    tail: () => tailText,
    isRunning,
    nextLine(predicate, timeoutMs = 30_000) {
      return new Promise((resolveLine, reject) => {
        let settled = false;
        const settle = () => {
          settled = true;
          clearTimeout(timer);
          remove();
        };
        const timer = setTimeout(() => {
          settle();
          reject(new Error(`${name}: expected log line not seen within ${timeoutMs} ms\n${tailText}`));
        }, timeoutMs);
        const remove = onLine((line) => {
          if (settled || !predicate(line)) return;
          settle();
          resolveLine(line);
        });
        void exited.then((code) => {
          if (settled) return;
          settle();
          reject(new Error(`${name} exited (${code}) before the expected log line\n${tailText}`));
        });
      });
    },
  };
}
