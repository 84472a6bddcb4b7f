import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
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
