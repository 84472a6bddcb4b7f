/**
 * The soak's bookkeeping, apart from its processes so it can be tested alone:
 * which failed call a fault window explains, when a window counts as overrun,
 * how the fault schedule is laid out, and how memory growth is judged.
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

/** One scrape of the process's own /metrics (prom-client's default metrics): V8's heap and RSS at the same instant. */
export interface HeapSample {
  component: string;
  incarnation: number;
  atMs: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
  rssBytes: number;
}

export interface RssVerdict {
  component: string;
  incarnation: number;
  lifeS: number;
  /** RSS: median of the first 30 s after a 10 s settle, median of the last minute, highest. */
  baselineMiB: number;
  endMiB: number;
  maxMiB: number;
  /** RSS, end against start: warm-up included (judged against the gross bound only). */
  growthMiB: number;
  /** Lowest heapUsed (≈ what survives a GC) over the 2 minutes around the midpoint and the last 2 minutes. */
  heapFloorMidMiB: number;
  heapFloorEndMiB: number;
  heapFloorGrowthMiB: number;
  /** RSS − heapTotal (malloc, code, buffers: memory V8's heap sizing does not move), medians of the same windows. */
  nativeMidMiB: number;
  nativeEndMiB: number;
  nativeGrowthMiB: number;
  /** "second half": a life of ≥ 4 min (also held to the gross bound); "gross": 1-4 min; "none": < 1 min. */
  judged: "second half" | "gross" | "none";
  ok: boolean;
  /** Why it failed, empty when ok. */
  reasons: string[];
}

/**
 * Bounds (see bench/soak.ts, "memory"). A healthy node process's RSS warms up
 * for its first 1-2 minutes (V8 grows its heap to the size its GC settles on,
 * malloc's arena reaches its high-water mark) and then swings with V8's heap
 * (±15 MiB on the server) without a trend. A leak keeps going, in one of two
 * places: JS objects that survive GC (the heap floor) or native memory (RSS −
 * heapTotal, which V8's heap sizing does not move). So a life long enough is
 * judged on the second half of both: 8 MiB of heap floor over the last 15
 * minutes of a 30-minute life is ≥ 0.23 KB of JS objects kept per call at 2 × 20
 * calls/s, 16 MiB native ≥ 0.45 KB per call. RSS itself only has to stay
 * within a gross bound, which warm-up (up to ~40 MiB in the runs of issue 8)
 * does not reach.
 */
export const heapFloorBoundBytes = 8 * 2 ** 20;
export const nativeBoundBytes = 16 * 2 ** 20;
export const rssGrossBoundBytes = 64 * 2 ** 20;
const rssSettleMs = 10_000;
const rssBaselineMs = 30_000;
const rssEndWindowMs = 60_000;
const secondHalfWindowMs = 120_000;
const secondHalfShortestLifeMs = 4 * 60_000;
const grossShortestLifeMs = 60_000;

const mib = (bytes: number): number => round(bytes / 2 ** 20, 1);
const median = (values: readonly number[]): number => (values.length > 0 ? percentile(values, 0.5) : Number.NaN);
const lowest = (values: readonly number[]): number => (values.length > 0 ? Math.min(...values) : Number.NaN);

function byLife<T extends { component: string; incarnation: number }>(samples: readonly T[]): Map<string, T[]> {
  const lives = new Map<string, T[]>();
  for (const sample of samples) {
    const key = `${sample.component}\u0000${sample.incarnation}`;
    const life = lives.get(key) ?? [];
    life.push(sample);
    lives.set(key, life);
  }
  return lives;
}

const within = <T extends { atMs: number }>(samples: readonly T[], fromMs: number, toMs: number): T[] => samples.filter((sample) => sample.atMs >= fromMs && sample.atMs <= toMs);

/**
 * Per process life (component and incarnation), from RSS samples (1 s) and
 * /metrics scrapes (5 s). Every life of ≥ 1 minute: RSS of its last minute
 * against its first 30 s (after 10 s) within the gross bound. A life of ≥ 4
 * minutes besides: heap floor and native memory of its last 2 minutes against
 * the 2 minutes around its midpoint.
 */
export function judgeRss(samples: readonly RssSample[], heapSamples: readonly HeapSample[] = []): RssVerdict[] {
  const heapLives = byLife(heapSamples);
  return [...byLife(samples)].map(([key, life]) => {
    const first = life[0] as RssSample;
    const lastAtMs = (life[life.length - 1] as RssSample).atMs;
    const lifeMs = lastAtMs - first.atMs;
    const midAtMs = first.atMs + lifeMs / 2;
    const rss = (fromMs: number, toMs: number) => within(life, fromMs, toMs).map((sample) => sample.rssBytes);
    const baselineBytes = median(rss(first.atMs + rssSettleMs, first.atMs + rssSettleMs + rssBaselineMs));
    const endBytes = median(rss(lastAtMs - rssEndWindowMs, lastAtMs));
    const scrapes = heapLives.get(key) ?? [];
    const midScrapes = within(scrapes, midAtMs - secondHalfWindowMs / 2, midAtMs + secondHalfWindowMs / 2);
    const endScrapes = within(scrapes, lastAtMs - secondHalfWindowMs, lastAtMs);
    const floor = (window: HeapSample[]) => lowest(window.map((sample) => sample.heapUsedBytes));
    const native = (window: HeapSample[]) => median(window.map((sample) => sample.rssBytes - sample.heapTotalBytes));
    const heapFloorMidBytes = floor(midScrapes);
    const heapFloorEndBytes = floor(endScrapes);
    const nativeMidBytes = native(midScrapes);
    const nativeEndBytes = native(endScrapes);
    const judged = lifeMs >= secondHalfShortestLifeMs ? "second half" : lifeMs >= grossShortestLifeMs && Number.isFinite(baselineBytes) ? "gross" : "none";
    const reasons: string[] = [];
    if (judged !== "none" && endBytes - baselineBytes > rssGrossBoundBytes) {
      reasons.push(`RSS grew ${mib(endBytes - baselineBytes)} MiB over a life of ${round(lifeMs / 1000, 0)} s (${mib(baselineBytes)} → ${mib(endBytes)}), gross bound ${mib(rssGrossBoundBytes)} MiB`);
    }
    if (judged === "second half") {
      if (heapFloorEndBytes - heapFloorMidBytes > heapFloorBoundBytes) {
        reasons.push(`heap floor grew ${mib(heapFloorEndBytes - heapFloorMidBytes)} MiB over the second half of its life (${mib(heapFloorMidBytes)} → ${mib(heapFloorEndBytes)}), bound ${mib(heapFloorBoundBytes)} MiB`);
      }
      if (nativeEndBytes - nativeMidBytes > nativeBoundBytes) {
        reasons.push(`native memory (RSS − heapTotal) grew ${mib(nativeEndBytes - nativeMidBytes)} MiB over the second half of its life (${mib(nativeMidBytes)} → ${mib(nativeEndBytes)}), bound ${mib(nativeBoundBytes)} MiB`);
      }
      if (midScrapes.length === 0 || endScrapes.length === 0) reasons.push("no /metrics scrape in the middle or at the end of its life: heap and native memory not measured");
    }
    return {
      component: first.component,
      incarnation: first.incarnation,
      lifeS: round(lifeMs / 1000, 0),
      baselineMiB: mib(baselineBytes),
      endMiB: mib(endBytes),
      maxMiB: mib(Math.max(...life.map((sample) => sample.rssBytes))),
      growthMiB: mib(endBytes - baselineBytes),
      heapFloorMidMiB: mib(heapFloorMidBytes),
      heapFloorEndMiB: mib(heapFloorEndBytes),
      heapFloorGrowthMiB: mib(heapFloorEndBytes - heapFloorMidBytes),
      nativeMidMiB: mib(nativeMidBytes),
      nativeEndMiB: mib(nativeEndBytes),
      nativeGrowthMiB: mib(nativeEndBytes - nativeMidBytes),
      judged,
      ok: reasons.length === 0,
      reasons,
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
