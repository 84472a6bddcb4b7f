import pino, { type Logger } from "pino";

/** Default for components built without a logger (tests, benches): pino's API, no output. */
export const silentLogger: Logger = pino({ level: "silent" });
