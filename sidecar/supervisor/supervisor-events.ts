import type { ProcessState } from "./process-state.js";

export interface StateEvent {
  instanceId: string;
  agentName: string;
  state: ProcessState;
  previous: ProcessState;
  /**
   * Why: "start requested", "healthy", "attached", "exited with code 1", "killed by SIGKILL",
   * "crash loop", "memory limit exceeded", "readiness timeout", "spawn failed: ENOENT", ...
   */
  reason: string;
  /** The child's pid, when the change concerns a spawned child. */
  pid?: number;
  /** Present when the change was caused by the child exiting. */
  exitCode?: number | null;
  signal?: string | null;
  /** In state backoff: when the restart is due. */
  restartInMs?: number;
  /** Restarts after unexpected exits so far (operator restarts are not counted). */
  restarts: number;
}

/** Emitted as soon as a child's exit is seen (the 'exit' event of the child, never a poll). */
export interface ExitEvent {
  instanceId: string;
  agentName: string;
  pid?: number;
  exitCode: number | null;
  signal: string | null;
  reason: string;
  uptimeMs: number;
  /** False when the exit was asked for (stop, restart, close). */
  unexpected: boolean;
}

/** The process is down for good until someone restarts it; the alerting hook. */
export interface FailedEvent {
  instanceId: string;
  agentName: string;
  reason: string;
  restarts: number;
}

export interface SupervisorEventMap {
  state: StateEvent;
  exit: ExitEvent;
  failed: FailedEvent;
}

export type SupervisorListener<E extends keyof SupervisorEventMap> = (event: SupervisorEventMap[E]) => void;
