import type { Logger } from "pino";

/**
 * SIGTERM/SIGINT → `close()`, then exit 0; exit 1 if closing fails or takes
 * longer than `deadlineMs` (the process must not outlive its orchestrator's grace).
 */
export function exitOnSignal(log: Logger, close: () => Promise<void>, deadlineMs: number): void {
  const stop = (signal: string) => {
    log.info({ signal }, "signal received, shutting down");
    setTimeout(() => process.exit(1), deadlineMs).unref();
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}
