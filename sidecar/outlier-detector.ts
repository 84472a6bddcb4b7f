import { status } from "@grpc/grpc-js";
import type { TimerHandle, Timers } from "../sdk/ts/src/core/dataplane/timers.js";

/** How one call handed to a local agent ended, as far as outlier detection cares. */
export type CallOutcome =
  | "answered" // the agent replied: success, or an error of its own
  | "timedOut" // no reply before the deadline
  | "ignored"; // refused or cut off on our side (limits, agent gone, caller gave up early)

export interface OutlierDetectorOptions {
  /** Timed-out calls in a row, with no answer in between, that eject an instance; default 5. */
  consecutiveTimeouts?: number;
  /** Length of an instance's first ejection (the sidecar: 10 heartbeat intervals); the nth in a row lasts n times as long. */
  baseEjectionMs(instanceId: string): number;
  /** Ceiling of an ejection; default 5 min. */
  maxEjectionMs?: number;
  timers: Timers;
  /** Vetoes an ejection, e.g. of the last routable instance of its agent (callers would only get UNAVAILABLE instead of slow answers). */
  mayEject(instanceId: string): boolean;
  onEject(instanceId: string, reason: string, ejectionMs: number): void;
  onReturn(instanceId: string): void;
}

interface InstanceRecord {
  timeouts: number;
  /** Ejections since the instance last answered a call outside an ejection. */
  ejections: number;
  ejectedTimer: TimerHandle | undefined;
}

const defaultConsecutiveTimeouts = 5;
const defaultMaxEjectionMs = 300_000;
/** A caller's CANCEL this close to the call's deadline is its deadline firing first on its own clock. */
const cancelAtDeadlineSlackMs = 100;

/**
 * Consecutive-timeout outlier detection (Envoy's consecutive_5xx, Linkerd's
 * failure accrual), for an agent whose process is alive and answers pings or
 * health checks while its calls hang (a deadlocked handler, a stuck
 * downstream). An ejected instance is reported out of routing for the
 * ejection time, then returns; each ejection in a row lasts longer, and one
 * answered call after its return starts the count over.
 */
export class OutlierDetector {
  private readonly records = new Map<string, InstanceRecord>();
  private readonly consecutiveTimeouts: number;
  private readonly maxEjectionMs: number;

  constructor(private readonly options: OutlierDetectorOptions) {
    this.consecutiveTimeouts = options.consecutiveTimeouts ?? defaultConsecutiveTimeouts;
    this.maxEjectionMs = options.maxEjectionMs ?? defaultMaxEjectionMs;
  }

  record(instanceId: string, outcome: CallOutcome): void {
    if (outcome === "ignored") return;
    let record = this.records.get(instanceId);
    if (record === undefined) {
      if (outcome === "answered") return; // the common case costs no allocation
      record = { timeouts: 0, ejections: 0, ejectedTimer: undefined };
      this.records.set(instanceId, record);
    }
    const ejected = record.ejectedTimer !== undefined;
    if (outcome === "answered") {
      record.timeouts = 0;
      if (!ejected) this.records.delete(instanceId);
      return;
    }
    record.timeouts += 1;
    if (ejected || record.timeouts < this.consecutiveTimeouts || !this.options.mayEject(instanceId)) return;
    this.eject(instanceId, record);
  }

  isEjected(instanceId: string): boolean {
    return this.records.get(instanceId)?.ejectedTimer !== undefined;
  }

  /** Drops what is known about an instance (it restarted, or is gone), without a return callback. */
  forget(instanceId: string): void {
    const record = this.records.get(instanceId);
    if (record?.ejectedTimer !== undefined) this.options.timers.clearTimeout(record.ejectedTimer);
    this.records.delete(instanceId);
  }

  close(): void {
    for (const instanceId of [...this.records.keys()]) this.forget(instanceId);
  }

  private eject(instanceId: string, record: InstanceRecord): void {
    record.ejections += 1;
    const ejectionMs = Math.min(this.options.baseEjectionMs(instanceId) * record.ejections, this.maxEjectionMs);
    const timeouts = record.timeouts;
    record.timeouts = 0;
    record.ejectedTimer = this.options.timers.setTimeout(() => {
      record.ejectedTimer = undefined;
      this.options.onReturn(instanceId);
    }, ejectionMs);
    this.options.onEject(instanceId, `outlier: ${timeouts} calls in a row timed out`, ejectionMs);
  }
}

/** Sorts a dispatch's end into an outcome; `deadlineMs` is the call's absolute deadline (0 = none). */
export function classifyOutcome(error: unknown, deadlineMs: number, nowMs: number): CallOutcome {
  if (error === undefined) return "answered";
  const code = (error as { code?: unknown }).code;
  switch (code) {
    case status.DEADLINE_EXCEEDED:
      return "timedOut";
    case status.CANCELLED:
      return deadlineMs > 0 && nowMs >= deadlineMs - cancelAtDeadlineSlackMs ? "timedOut" : "ignored";
    case status.UNAVAILABLE:
    case status.RESOURCE_EXHAUSTED:
      return "ignored";
    default:
      return typeof code === "number" ? "answered" : "ignored";
  }
}
