import { Writable } from "node:stream";
import type { Logger } from "pino";
import { createLogger } from "../../services/server/logger.js";

export interface LogSink {
  log: Logger;
  lines: Array<Record<string, unknown>>;
  /** The lines as written, before parsing (JSON.parse hides a repeated key). */
  raw: string[];
}

/** A pino logger writing parsed JSON lines into memory, so tests can assert on logs. */
export function logSink(level = "info"): LogSink {
  const lines: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split("\n")) {
        if (line.trim() === "") continue;
        raw.push(line);
        lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      callback();
    },
  });
  return { log: createLogger(level, stream), lines, raw };
}
