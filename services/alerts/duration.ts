import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";

const unitMs: ReadonlyArray<readonly [string, number]> = [
  ["y", 365 * 24 * 3_600_000],
  ["w", 7 * 24 * 3_600_000],
  ["d", 24 * 3_600_000],
  ["h", 3_600_000],
  ["m", 60_000],
  ["s", 1_000],
  ["ms", 1],
];

// Prometheus' duration syntax, so rule files read like the Alertmanager and Prometheus files
// operators already write: units largest first, each at most once ("1h30m", "90s", "500ms").
const durationPattern = /^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$/;

/**
 * Reads a friendly duration once, at configuration time: a string such as "30s" or "1h30m",
 * or a number of milliseconds. Throws MeshError("invalidArgument", "<path>: ...").
 */
export function parseDurationMs(value: unknown, path: string): number {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value) || value < 0) throw new MeshError("invalidArgument", `${path}: must be a non-negative integer of milliseconds`);
    return value;
  }
  if (typeof value !== "string") throw new MeshError("invalidArgument", `${path}: must be a duration such as "30s" or a number of milliseconds`);
  if (value === "0") return 0;
  const match = durationPattern.exec(value);
  if (value === "" || match === null) throw new MeshError("invalidArgument", `${path}: "${value.slice(0, 32)}" is not a duration such as "30s", "5m" or "1h30m"`);
  let totalMs = 0;
  unitMs.forEach(([, ms], index) => {
    const amount = match[index + 1];
    if (amount !== undefined) totalMs += Number(amount) * ms;
  });
  if (!Number.isSafeInteger(totalMs)) throw new MeshError("invalidArgument", `${path}: duration is too long`);
  return totalMs;
}

/** The inverse, for messages: 90_000 → "1m30s", 0 → "0s". */
export function formatDurationMs(durationMs: number): string {
  let restMs = Math.max(0, Math.round(durationMs));
  if (restMs === 0) return "0s";
  let text = "";
  for (const [unit, ms] of unitMs) {
    if (unit === "y" || unit === "w") continue; // days read better than weeks in alert text
    const amount = Math.floor(restMs / ms);
    if (amount > 0) {
      text += `${amount}${unit}`;
      restMs -= amount * ms;
    }
  }
  return text;
}
