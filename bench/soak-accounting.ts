/**
 * The soak's bookkeeping, apart from its processes so it can be tested alone:
 * which failed call a fault window explains, when a window counts as overrun,
 * how the fault schedule is laid out, and how RSS growth is judged.
 * bench/soak.ts documents the rules for users.
 */
import { status } from "@grpc/grpc-js";
import { percentile, round } from "./bench-kit.js";

export const faultKinds = ["agent-kill", "agent-stop", "sidecar-kill", "server-kill", "rollout"] as const;
export type FaultKind = (typeof faultKinds)[number];
export type PathName = "local" | "server";
export const pathNames: readonly PathName[] = ["local", "server"];

/** gRPC status code -1: the call answered OK with a wrong payload. */
export const wrongAnswerCode = -1;

export interface CallRecord {
  path: PathName;
  capability: string;
  /** Due time (open loop: sent then, whatever earlier calls did). */
  startMs: number;
  endMs: number;
  /** gRPC status code; 0 = OK; wrongAnswerCode for a wrong answer. */
  code: number;
  message: string;
  instanceId: string;
  version: string;
}

export interface FaultWindow {
  /** "agent-stop #1" */
  fault: string;
  kind: FaultKind;
  phase: string;
  target: string;
  /** Failed calls on these paths overlapping the window are explained by it. */
  paths: PathName[];
  startMs: number;
  budgetMs: number;
  budgetWhy: string;
  /** Observed recovery; undefined when never seen. */
  endMs?: number;
  /** When the harness stopped waiting for a window that did not close. */
  gaveUpAtMs?: number;
  /** Detection (the target leaving READY in the Watch), where the fault has one. */
  detectedMs?: number;
  /** Set when the fault could not be injected at all. */
  skipped?: boolean;
  notes: string[];
}

/** DESIGN §10: traffic rerouted < 100 ms after detection; a window explains failures that long after it ends. */
export const reroutedGraceMs = 100;

/**
 * After a server restart a client channel whose connection was refused retries only
 * after the gRPC connection backoff's initial delay (1 s, ±20 % jitter: gRPC's
 * connection-backoff spec, grpc-js' defaults), and fails calls fast until then, although
 * the server is back. A server-kill window explains UNAVAILABLE that long after it ends.
 */
export const channelReconnectGraceMs = 1200;

function graceOf(window: FaultWindow, record: CallRecord): number {
  return window.kind === "server-kill" && record.code === 14 ? channelReconnectGraceMs : reroutedGraceMs;
}

/** The latest moment a window may end without counting as overrun. */
export function capOf(window: FaultWindow, margin: number): number {
  return window.startMs + window.budgetMs * margin;
}

export type WindowOutcome = "ok" | "late" | "never" | "skipped";

export function windowOutcome(window: FaultWindow, margin: number): WindowOutcome {
  if (window.skipped) return "skipped";
  if (window.endMs === undefined) return "never";
  return window.endMs <= capOf(window, margin) ? "ok" : "late";
}

/**
 * What a lost process or a slow recovery can answer. Anything else (UNAUTHENTICATED,
 * INTERNAL, a wrong answer, ...) is a defect whenever it happens: no window explains it.
 */
export const faultCodes: ReadonlySet<number> = new Set([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.RESOURCE_EXHAUSTED, status.CANCELLED, status.ABORTED]);

export type Classification = { kind: "explained" | "overrun"; window: FaultWindow } | { kind: "outside" };

/**
 * Where a failed call falls: explained by a window of its path that it overlaps
 * (from the window's start to its end, at most budget × margin, plus the reroute
 * grace); "overrun" when it overlaps only the part of a window past that bound;
 * otherwise outside every window.
 */
export function classify(record: CallRecord, windows: readonly FaultWindow[], margin: number): Classification {
  if (!faultCodes.has(record.code)) return { kind: "outside" };
  const own = windows.filter((window) => !window.skipped && window.paths.includes(record.path));
  for (const window of own) {
    const explainedUntil = Math.min(window.endMs ?? Number.POSITIVE_INFINITY, capOf(window, margin)) + graceOf(window, record);
    if (record.endMs >= window.startMs && record.startMs <= explainedUntil) return { kind: "explained", window };
  }
  for (const window of own) {
    const overrunUntil = (window.endMs ?? window.gaveUpAtMs ?? Number.POSITIVE_INFINITY) + graceOf(window, record);
    if (record.endMs >= capOf(window, margin) && record.startMs <= overrunUntil) return { kind: "overrun", window };
  }
  return { kind: "outside" };
}

export interface PlannedFault {
  kind: FaultKind;
  atMs: number;
  round: number;
  label: string;
}

/** A fault about every minute in long runs; a 2-minute run gets one round. */
export const faultSlotTargetMs = 60_000;

/**
 * Rounds of every chosen fault kind, each round in seeded order, spread evenly
 * from `fromMs` to `untilMs`; each fault is due at a seeded point in the first
 * fifth of its slot.
 */
export function planFaults(faults: readonly FaultKind[], random: () => number, fromMs: number, untilMs: number): { plan: PlannedFault[]; slotMs: number } {
  if (faults.length === 0) return { plan: [], slotMs: 0 };
  const availableMs = Math.max(0, untilMs - fromMs);
  const rounds = Math.max(1, Math.floor(availableMs / (faults.length * faultSlotTargetMs)));
  const slotMs = availableMs / (rounds * faults.length);
  const plan: PlannedFault[] = [];
  const counts = new Map<FaultKind, number>();
  for (let roundIndex = 0; roundIndex < rounds; roundIndex += 1) {
    const order = [...faults];
    for (let index = order.length - 1; index > 0; index -= 1) {
      const swap = Math.floor(random() * (index + 1));
      [order[index], order[swap]] = [order[swap] as FaultKind, order[index] as FaultKind];
    }
    order.forEach((kind, index) => {
      const count = (counts.get(kind) ?? 0) + 1;
      counts.set(kind, count);
      const slotStartMs = fromMs + (roundIndex * order.length + index) * slotMs;
      plan.push({ kind, round: roundIndex, atMs: slotStartMs + random() * 0.2 * slotMs, label: `${kind} #${count}` });
    });
  }
  return { plan, slotMs };
}

export interface RssSample {
  component: string;
  incarnation: number;
  atMs: number;
  rssBytes: number;
}

export interface RssVerdict {
  component: string;
  incarnation: number;
  lifeS: number;
  baselineMiB: number;
  endMiB: number;
  maxMiB: number;
  growthMiB: number;
  judged: boolean;
  ok: boolean;
}

/** See bench/soak.ts: V8 moves a healthy node process's RSS by tens of MiB; 32 MiB in 30 minutes is ≥ 0.5 KB kept per call. */
export const rssBoundBytes = 32 * 2 ** 20;
const rssSettleMs = 10_000;
const rssBaselineMs = 30_000;
const rssEndSamples = 10;
const rssShortestLifeMs = 60_000;

const mib = (bytes: number): number => round(bytes / 2 ** 20, 1);

/**
 * Per process life (component and incarnation): the median RSS of its first
 * 30 s after a 10 s settle against the median of its last 10 samples.
 */
export function judgeRss(samples: readonly RssSample[]): RssVerdict[] {
  const lives = new Map<string, RssSample[]>();
  for (const sample of samples) {
    const key = `${sample.component}\u0000${sample.incarnation}`;
    const life = lives.get(key) ?? [];
    life.push(sample);
    lives.set(key, life);
  }
  return [...lives.values()].map((life) => {
    const first = life[0] as RssSample;
    const lifeMs = (life[life.length - 1] as RssSample).atMs - first.atMs;
    const settled = life.filter((sample) => sample.atMs >= first.atMs + rssSettleMs);
    const baselineFromMs = settled[0]?.atMs ?? 0;
    const baseline = settled.filter((sample) => sample.atMs < baselineFromMs + rssBaselineMs).map((sample) => sample.rssBytes);
    const endBytes = percentile(life.slice(-rssEndSamples).map((sample) => sample.rssBytes), 0.5);
    const judged = lifeMs >= rssShortestLifeMs && baseline.length > 0;
    const baselineBytes = baseline.length > 0 ? percentile(baseline, 0.5) : Number.NaN;
    const growthBytes = endBytes - baselineBytes;
    return {
      component: first.component,
      incarnation: first.incarnation,
      lifeS: round(lifeMs / 1000, 0),
      baselineMiB: mib(baselineBytes),
      endMiB: mib(endBytes),
      maxMiB: mib(Math.max(...life.map((sample) => sample.rssBytes))),
      growthMiB: mib(growthBytes),
      judged,
      ok: !judged || growthBytes <= rssBoundBytes,
    };
  });
}

/** A status name with ids and numbers taken out of the message, so alike failures group together. */
export function causeOf(record: Pick<CallRecord, "code" | "message">): string {
  const name = record.code === wrongAnswerCode ? "WRONG_ANSWER" : (status[record.code] ?? String(record.code));
  const message = record.message
    .replace(/[0-9a-f]{8}-[0-9a-f-]{27,}/gi, "<id>")
    .replace(/\b[0-9a-f]{12,}\b/gi, "<hex>")
    .replace(/\d+(\.\d+)?/g, "N")
    .slice(0, 90);
  return `${name} ${message}`;
}
