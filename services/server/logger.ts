import { type DestinationStream, type Logger, pino } from "pino";

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "agentmesh" },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Defence in depth: these must never be logged, even by mistake.
      redact: { paths: ["*.token", "*.joinToken", "*.privateKey", "*.keyPem", "*.payload"], censor: "[redacted]" },
    },
    destination,
  );
}
