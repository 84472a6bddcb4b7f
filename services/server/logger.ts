import { type Bindings, type ChildLoggerOptions, type DestinationStream, type Logger, pino } from "pino";

/**
 * The root logger of a server or sidecar process. Its children replace a field
 * their parent already binds instead of repeating it: pino appends each child's
 * bindings to the line as they are, so `log.child({ component: "server" })
 * .child({ component: "registry" })` would write `"component"` twice (JSON
 * readers keep one of them at random, by their own rule).
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const root = pino(
    {
      level,
      base: { service: "agentmesh" },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Defence in depth: these must never be logged, even by mistake.
      redact: { paths: ["*.token", "*.joinToken", "*.privateKey", "*.keyPem", "*.payload"], censor: "[redacted]" },
    },
    destination,
  );
  // pino's own child, taken before withReplacingChildren replaces it on the root.
  const pinoChild = root.child.bind(root);
  const rootChild = (bindings: Bindings, options?: ChildLoggerOptions): Logger => pinoChild(bindings, options);
  return withReplacingChildren(root, rootChild, {});
}

/**
 * `logger.child` that rebuilds the child from the root with the merged bindings
 * (later ones win), so every key appears once, however deep the chain. The child
 * keeps its parent's current level.
 */
function withReplacingChildren(logger: Logger, rootChild: (bindings: Bindings, options?: ChildLoggerOptions) => Logger, bound: Bindings): Logger {
  const child = (bindings: Bindings, options?: ChildLoggerOptions): Logger => {
    const merged = { ...bound, ...bindings };
    return withReplacingChildren(rootChild(merged, { level: logger.level, ...options }), rootChild, merged);
  };
  return Object.assign(logger, { child: child as unknown as Logger["child"] });
}
