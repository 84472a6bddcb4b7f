import { formatDurationMs, parseDurationValue } from "../../sdk/ts/src/core/duration.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";

export { formatDurationMs };

/**
 * Reads a duration of the alerts configuration once, at configuration time, in the
 * mesh's one grammar (sdk/ts/src/core/duration.ts: "30s", "1h30m", "1.5s", "2d").
 * Throws MeshError("invalidArgument", "<path>: ...").
 */
export function parseDurationMs(value: unknown, path: string): number {
  const parsed = parseDurationValue(value);
  if (!parsed.ok) throw new MeshError("invalidArgument", `${path}: ${parsed.problem}`);
  return parsed.ms;
}
