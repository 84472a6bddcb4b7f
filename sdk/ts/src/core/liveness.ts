/**
 * Hung-peer detection for a process that is alive but not answering: an SDK
 * agent behind its Attach stream (PING/PONG frames) or a plain agent behind its
 * grpc.health.v1 port (Check with a deadline). The rule is the one in
 * docs/protocol.md, "Attach stream":
 *
 * - probe every half heartbeat interval, unless the peer was heard from within
 *   the last quarter interval (replies to calls in flight already prove it
 *   answers, so a busy stream carries no probes at all);
 * - the peer is hung once nothing has been heard from it for 1.5 intervals,
 *   judged at a probe tick, so detection takes 1.5 to 2 intervals: inside the
 *   2.5-interval budget of DESIGN §4 with room for the report to reach routing;
 * - it is responsive again at the first answer.
 *
 * A tick that fires late (our own event loop stalled, e.g. a long GC) passes no
 * verdict: answers may be waiting unread in our socket, and calling the peer
 * hung for our own stall would flap healthy agents on a busy host.
 */
export interface LivenessTiming {
  /** Time between probe ticks (and so between probes to a silent peer). */
  probeIntervalMs: number;
  /** Silence after which the peer is hung. */
  deadlineMs: number;
}

const probesPerInterval = 2;
const deadlineIntervals = 1.5;
/** A tick this many probe intervals after the previous one means we, not the peer, were stalled. */
const lateTickIntervals = 2;
/** Hung this many heartbeat intervals (after detection) → killed and restarted, unless the manifest says otherwise. */
export const defaultHungRestartIntervals = 10;

export function livenessTiming(heartbeatIntervalMs: number): LivenessTiming {
  return { probeIntervalMs: heartbeatIntervalMs / probesPerInterval, deadlineMs: heartbeatIntervalMs * deadlineIntervals };
}

/** health_policy.hung_restart_after_ms with its default (0 = 10 heartbeat intervals). */
export function hungRestartAfterMs(heartbeatIntervalMs: number, configuredMs: number): number {
  return configuredMs > 0 ? configuredMs : heartbeatIntervalMs * defaultHungRestartIntervals;
}

/** What one probe tick concluded. */
export interface TickVerdict {
  /** Send a probe now (nothing heard within the last half probe interval). */
  probe: boolean;
  /** The peer just turned hung at this tick (reported once per episode). */
  becameHung: boolean;
  /** Time since the peer was last heard from. */
  silentMs: number;
}

/** The per-peer state machine: responsive ⇄ hung. Time comes in as arguments. */
export class LivenessTracker {
  private lastHeardMs: number;
  private lastTickMs: number;
  private hungNow = false;

  constructor(
    readonly timing: LivenessTiming,
    startedAtMs: number,
  ) {
    this.lastHeardMs = startedAtMs;
    this.lastTickMs = startedAtMs;
  }

  get hung(): boolean {
    return this.hungNow;
  }

  /** The peer answered (a PONG, a reply, a health check answer). Returns true when this ends a hung episode. */
  heard(nowMs: number): boolean {
    if (nowMs > this.lastHeardMs) this.lastHeardMs = nowMs;
    if (!this.hungNow) return false;
    this.hungNow = false;
    return true;
  }

  /** Call every `timing.probeIntervalMs`. */
  tick(nowMs: number): TickVerdict {
    const stalled = nowMs - this.lastTickMs > this.timing.probeIntervalMs * lateTickIntervals;
    this.lastTickMs = nowMs;
    const silentMs = nowMs - this.lastHeardMs;
    let becameHung = false;
    if (!stalled && !this.hungNow && silentMs >= this.timing.deadlineMs) {
      this.hungNow = true;
      becameHung = true;
    }
    // Half a probe interval, not a whole one: the answer to the previous probe arrives just after
    // that tick, and must not make us skip this one.
    return { probe: silentMs >= this.timing.probeIntervalMs / 2, becameHung, silentMs };
  }
}
