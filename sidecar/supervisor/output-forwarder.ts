import type { Readable } from "node:stream";
import type { Logger } from "pino";

/**
 * A child that prints without newlines must not grow our buffer without bound:
 * past this length the pending text is logged as its own (partial) line.
 */
export const maxLineChars = 16 * 1024;

/**
 * Logs each line of a child's stdout or stderr as one pino record whose message is the line.
 * A trailing partial line is flushed when the stream ends.
 */
export function forwardLines(stream: Readable, logger: Logger): void {
  let pending = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    pending += chunk;
    let newlineAt = pending.indexOf("\n");
    while (newlineAt !== -1) {
      emit(pending.slice(0, newlineAt));
      pending = pending.slice(newlineAt + 1);
      newlineAt = pending.indexOf("\n");
    }
    while (pending.length > maxLineChars) {
      logger.info({ partial: true }, pending.slice(0, maxLineChars));
      pending = pending.slice(maxLineChars);
    }
  });
  stream.on("end", () => {
    if (pending.length > 0) emit(pending);
    pending = "";
  });
  // A pipe error (EPIPE after a group kill) must not become an uncaught exception in the sidecar.
  stream.on("error", () => undefined);

  function emit(line: string): void {
    logger.info(line.endsWith("\r") ? line.slice(0, -1) : line);
  }
}
