import type { Logger } from "pino";
import type { Clock } from "../sdk/ts/src/core/clock.js";

/**
 * Calls the inbound side refused at admission (signature, certificate, allow
 * rules), counted by reason. A data plane that starts refusing calls (say, every
 * call after a certificate renewal) must be seen: the counts travel to the server
 * on the Connect stream (agentmesh_dataplane_refusals_total and the
 * DataPlaneRefusing alert), and the sidecar logs them at warn, at most once per
 * interval with the counts since the last line, never once per call.
 */
export class RefusalTally {
  private readonly totals = new Map<string, number>();
  private readonly sinceLastLine = new Map<string, number>();
  private lastLineAtMs = Number.NEGATIVE_INFINITY;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly logIntervalMs = 10_000,
  ) {}

  /** Counts one refusal; `message` is the refusal's short safe message. */
  record(message: string): void {
    const reason = refusalReason(message);
    this.totals.set(reason, (this.totals.get(reason) ?? 0) + 1);
    this.sinceLastLine.set(reason, (this.sinceLastLine.get(reason) ?? 0) + 1);
    const dueInMs = this.lastLineAtMs + this.logIntervalMs - this.clock.nowMs();
    if (dueInMs <= 0) this.writeLine();
    else if (this.flushTimer === undefined) {
      // The tail of a burst is logged too, once the interval has passed.
      this.flushTimer = setTimeout(() => this.writeLine(), dueInMs);
      this.flushTimer.unref();
    }
  }

  /** Refusals since start, by reason label (cumulative: a lost report loses nothing). */
  totalsByReason(): ReadonlyMap<string, number> {
    return this.totals;
  }

  close(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
  }

  private writeLine(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.sinceLastLine.size === 0) return;
    const refusals = Object.fromEntries(this.sinceLastLine);
    this.sinceLastLine.clear();
    this.lastLineAtMs = this.clock.nowMs();
    this.log.warn({ refusals, intervalMs: this.logIntervalMs }, "data plane refusing calls");
  }
}

const maxReasonLength = 48;

/**
 * A metric label from a refusal message: `signature invalid` → `signature_invalid`.
 * The messages come from a fixed set in agentmesh's code (never from callers), so
 * the label's cardinality stays small.
 */
export function refusalReason(message: string): string {
  const label = message
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "_")
    .replace(/^_+|_+$/g, "")
    .slice(0, maxReasonLength);
  return label === "" ? "unknown" : label;
}
