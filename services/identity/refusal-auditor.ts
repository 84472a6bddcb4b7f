import type { AuditSink } from "../../sdk/ts/src/core/audit-log.js";
import type { Clock } from "../../sdk/ts/src/core/clock.js";

/** One refused call, connection or message, before it becomes (at most) one audit entry. */
export interface Refusal {
  /** SPIFFE ID when the caller proved one; otherwise the peer address or the name it claimed. */
  actor: string;
  /** True when `actor` is a verified identity. */
  authenticated: boolean;
  /** Dotted verb: `call.unauthenticated`, `call.denied`, `limit.breach`, `connect.denied`... */
  action: string;
  /** The RPC method or what was asked for. */
  target: string;
  /** The short, safe message the caller was given. */
  reason: string;
  requestId: string;
}

export interface RefusalAuditorOptions {
  audit: AuditSink;
  clock: Clock;
  /** Length of one sampling window; each window ends with one summary entry per busy key. */
  intervalMs: number;
  /** Individual entries one authenticated identity may cause per window. */
  perIdentityPerInterval: number;
  /** Distinct keys tracked per window; more share one overflow key (address spraying). */
  maxKeys: number;
  /** Every refusal, written or not: for the metric. */
  onRefusal?: (refusal: Refusal, written: boolean) => void;
}

interface WindowKey {
  actor: string;
  authenticated: boolean;
  written: number;
  suppressed: number;
  firstSuppressedAtMs: number;
  lastSuppressedAtMs: number;
  /** action → count, reason → count: bounded, so a summary stays small. */
  actions: Map<string, number>;
  reasons: Map<string, number>;
  targets: Map<string, number>;
}

const MAX_SUMMARY_KINDS = 10;
const OVERFLOW_ACTOR = "*";

/**
 * Keeps refusals from filling the disk. A refused caller costs nothing to repeat,
 * so one entry per refusal lets anyone without a certificate write the audit log at
 * line rate. Instead, per window:
 * - unauthenticated refusals: the first per (peer host, action, target, reason) is
 *   written at once; the rest are counted;
 * - authenticated refusals: up to `perIdentityPerInterval` per identity are written
 *   individually; the rest are counted;
 * and at the end of the window each key with counted refusals gets one
 * `audit.sampled` entry (how many, which actions, reasons and targets, first and
 * last time). Keys are bounded per window, so the log grows by at most about
 * 2 × maxKeys entries per window for anonymous callers, whatever the call rate.
 */
export class RefusalAuditor {
  private window = new Map<string, WindowKey>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: RefusalAuditorOptions) {}

  record(refusal: Refusal): void {
    const key = this.keyFor(refusal);
    const state = this.window.get(key.id) ?? this.track(key.id, key.actor, refusal.authenticated);
    const budget = refusal.authenticated ? this.options.perIdentityPerInterval : 1;
    if (state.written < budget) {
      state.written += 1;
      this.options.onRefusal?.(refusal, true);
      this.append({
        actor: refusal.actor || "anonymous",
        action: refusal.action,
        target: refusal.target,
        outcome: "denied",
        requestId: refusal.requestId,
        details: { reason: refusal.reason },
      });
      return;
    }
    const nowMs = this.options.clock.nowMs();
    if (state.suppressed === 0) state.firstSuppressedAtMs = nowMs;
    state.suppressed += 1;
    state.lastSuppressedAtMs = nowMs;
    countBounded(state.actions, refusal.action);
    countBounded(state.reasons, refusal.reason);
    countBounded(state.targets, refusal.target);
    this.options.onRefusal?.(refusal, false);
  }

  /** Writes the summaries of the current window and starts a new one. */
  flush(): void {
    const ended = this.window;
    this.window = new Map();
    clearInterval(this.timer);
    this.timer = undefined;
    for (const state of ended.values()) {
      if (state.suppressed === 0) continue;
      this.append({
        actor: state.actor || "anonymous",
        action: "audit.sampled",
        target: state.targets.size === 1 ? ([...state.targets.keys()][0] ?? "") : "*",
        outcome: "denied",
        requestId: "",
        details: {
          refusals: state.suppressed,
          authenticated: state.authenticated,
          actions: Object.fromEntries(state.actions),
          reasons: Object.fromEntries(state.reasons),
          targets: Object.fromEntries(state.targets),
          firstAt: new Date(state.firstSuppressedAtMs).toISOString(),
          lastAt: new Date(state.lastSuppressedAtMs).toISOString(),
        },
      });
    }
  }

  close(): void {
    this.flush();
  }

  private keyFor(refusal: Refusal): { id: string; actor: string } {
    const actor = refusal.authenticated ? refusal.actor : peerHost(refusal.actor);
    const id = refusal.authenticated ? `id|${actor}` : `anon|${actor}|${refusal.action}|${refusal.target}|${refusal.reason}`;
    if (this.window.has(id) || this.window.size < this.options.maxKeys) return { id, actor };
    return { id: refusal.authenticated ? `id|${OVERFLOW_ACTOR}` : `anon|${OVERFLOW_ACTOR}`, actor: OVERFLOW_ACTOR };
  }

  private track(id: string, actor: string, authenticated: boolean): WindowKey {
    const state: WindowKey = {
      actor,
      authenticated,
      written: 0,
      suppressed: 0,
      firstSuppressedAtMs: 0,
      lastSuppressedAtMs: 0,
      actions: new Map(),
      reasons: new Map(),
      targets: new Map(),
    };
    this.window.set(id, state);
    // The window timer runs only while something is tracked: an idle server never wakes for it.
    if (!this.timer) {
      this.timer = setInterval(() => this.flush(), this.options.intervalMs);
      this.timer.unref();
    }
    return state;
  }

  private append(event: Parameters<AuditSink["append"]>[0]): void {
    // A failed append is counted by the log, and its state change logged once: nothing to add per entry.
    this.options.audit.append(event).catch(() => undefined);
  }
}

function countBounded(counts: Map<string, number>, key: string): void {
  const current = counts.get(key);
  if (current !== undefined) counts.set(key, current + 1);
  else if (counts.size < MAX_SUMMARY_KINDS) counts.set(key, 1);
  else counts.set("other", (counts.get("other") ?? 0) + 1);
}

/** `ipv4:10.0.0.1:5555`, `10.0.0.1:5555`, `[::1]:5555` → without the port: one key per host, not per connection. */
export function peerHost(peer: string): string {
  const bracket = /^(.*\[[^\]]*\]):\d+$/.exec(peer);
  if (bracket) return bracket[1] ?? peer;
  const colons = peer.split(":").length - 1;
  // A bare IPv6 address has several colons and no port to strip.
  if (colons === 1 || (colons === 2 && peer.startsWith("ipv4:"))) return peer.replace(/:\d+$/, "");
  return peer;
}
