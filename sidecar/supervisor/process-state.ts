import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";

/**
 * Lifecycle of one managed agent process (DESIGN §4, §6). `stopped` is also the
 * state of a record that has not run yet, so every start is the same edge.
 */
export type ProcessState =
  | "starting" // spawned, waiting for its readiness signal
  | "ready" // serving; routable
  | "unresponsive" // alive but not answering (pings, health checks) or answering NOT_SERVING; out of routing
  | "draining" // out of routing, in-flight calls finishing
  | "stopping" // SIGTERM sent, waiting for exit (SIGKILL after grace)
  | "stopped" // not running, on purpose (stop, or a clean exit the policy keeps down)
  | "backoff" // exited unexpectedly, restart scheduled
  | "failed"; // exited and will not be restarted (crash loop, or a failure under policy never/on-failure)

const allowedNext: Record<ProcessState, readonly ProcessState[]> = {
  // `stopped` when a clean exit is not restarted; `stopping` when stopped before READY (nothing to drain).
  starting: ["ready", "backoff", "failed", "stopped", "stopping"],
  // `stopping` without `draining` is the forced path used by close().
  ready: ["unresponsive", "draining", "stopping", "backoff", "failed", "stopped"],
  // `ready` when it answers again; an exit (a crash, or our kill when it stays hung) as from ready.
  // Never `draining`: its calls in flight cannot finish while it does not answer.
  unresponsive: ["ready", "stopping", "backoff", "failed", "stopped"],
  // The process may exit on its own while draining; it is never restarted then.
  draining: ["stopping", "stopped"],
  stopping: ["stopped"],
  stopped: ["starting"],
  // `starting` when the timer fires or on restart(); `stopped` when stop() cancels the timer.
  backoff: ["starting", "stopped"],
  // A failed process stays down until someone asks: restart() or stop().
  failed: ["starting", "stopped"],
};

/** A state change the lifecycle does not allow; a bug in the caller, never a runtime condition. */
export class IllegalTransitionError extends MeshError {
  constructor(
    readonly from: ProcessState,
    readonly to: ProcessState,
  ) {
    super("failedPrecondition", `illegal process state transition ${from} -> ${to}`);
  }
}

export function canTransition(from: ProcessState, to: ProcessState): boolean {
  return allowedNext[from].includes(to);
}

/** The one place state changes are decided: returns `to`, or throws IllegalTransitionError. */
export function transition(from: ProcessState, to: ProcessState): ProcessState {
  if (!canTransition(from, to)) throw new IllegalTransitionError(from, to);
  return to;
}

/** States in which a child process exists (or may still exist) and must be killed on close. */
export function isRunning(state: ProcessState): boolean {
  return state === "starting" || state === "ready" || state === "unresponsive" || state === "draining" || state === "stopping";
}
