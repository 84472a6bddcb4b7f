/**
 * The one duration grammar of agentmesh: ctl and server flags, alert rules and
 * deployment YAML all read durations here, so `1.5s` or `7d` means the same
 * everywhere. Friendly text is read once, at the edge, and becomes a `…Ms`
 * number (Temporal's worker options do the same).
 *
 *   duration  := "0" | component+        (no spaces, no sign)
 *   component := digits ["." digits] unit
 *   unit      := "w" | "d" | "h" | "m" | "s" | "ms"   (largest first, each at most once)
 *
 * `1h30m`, `90s`, `1.5h`, `500ms`, `7d`, `2w`. A day is 24 h and a week 7 d;
 * years and months are refused because their length varies. The total must be
 * a whole number of milliseconds (`0.5ms` is refused) and at most
 * Number.MAX_SAFE_INTEGER. A bare number (other than 0) is refused: its unit
 * would be a guess.
 */

/** Units, largest first: the order components must follow. */
const units: ReadonlyArray<readonly [unit: string, ms: bigint]> = [
  ["w", 604_800_000n],
  ["d", 86_400_000n],
  ["h", 3_600_000n],
  ["m", 60_000n],
  ["s", 1_000n],
  ["ms", 1n],
];

const unitRank = new Map(units.map(([unit], index) => [unit, index]));
const unitMs = new Map(units);
const componentPattern = /(\d+)(?:\.(\d+))?(ms|[wdhms])/y;

export const durationExamples = "500ms, 30s, 1m30s, 1.5h, 7d";

export type DurationParse = { ok: true; ms: number } | { ok: false; problem: string };

/** Reads a duration; on failure, `problem` says what is wrong and how to write it (no field name: callers add theirs). */
export function parseDuration(text: string): DurationParse {
  const trimmed = text.trim();
  if (trimmed === "") return { ok: false, problem: `empty; write a duration such as ${durationExamples}` };
  if (trimmed === "0") return { ok: true, ms: 0 };
  if (/^\d+(\.\d+)?$/.test(trimmed)) return { ok: false, problem: `"${clip(trimmed)}" needs a unit, like ${trimmed}s or ${trimmed}ms` };
  const notADuration = { ok: false as const, problem: `"${clip(trimmed)}" is not a duration: write a number and a unit (ms, s, m, h, d, w), such as ${durationExamples}` };
  let totalMs = 0n;
  let previousRank = -1;
  let position = 0;
  componentPattern.lastIndex = 0;
  while (position < trimmed.length) {
    componentPattern.lastIndex = position;
    const match = componentPattern.exec(trimmed);
    if (!match) return notADuration;
    const [whole, integerDigits = "", fractionDigits = "", unit = ""] = match;
    const rank = unitRank.get(unit) ?? 0;
    if (rank <= previousRank) return { ok: false, problem: `"${clip(trimmed)}": units go largest first, each at most once (like 1h30m)` };
    previousRank = rank;
    // Exact decimal arithmetic: 1.1s is 1100 ms, not 1100.0000000000002.
    const scale = 10n ** BigInt(fractionDigits.length);
    const scaledMs = BigInt(`${integerDigits}${fractionDigits}`) * (unitMs.get(unit) ?? 0n);
    if (scaledMs % scale !== 0n) return { ok: false, problem: `"${clip(trimmed)}" is not a whole number of milliseconds` };
    totalMs += scaledMs / scale;
    position += whole.length;
  }
  if (totalMs > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, problem: `"${clip(trimmed)}" is too long` };
  return { ok: true, ms: Number(totalMs) };
}

/** A duration read from a YAML or JSON value: a string in the grammar, or the number 0 (nothing else has a known unit). */
export function parseDurationValue(value: unknown): DurationParse {
  if (typeof value === "string") return parseDuration(value);
  if (value === 0) return { ok: true, ms: 0 };
  if (typeof value === "number" && Number.isFinite(value) && value > 0) return { ok: false, problem: `needs a unit, like ${value}s or ${value}ms` };
  return { ok: false, problem: `must be a duration such as ${durationExamples}` };
}

/** Thrown by parseDurationMs; the message is the problem alone. */
export class DurationError extends Error {
  override readonly name = "DurationError";
}

/** parseDuration for callers that prefer an exception (throws DurationError). */
export function parseDurationMs(text: string): number {
  const parsed = parseDuration(text);
  if (!parsed.ok) throw new DurationError(parsed.problem);
  return parsed.ms;
}

/** The inverse, for messages: 90_000 → "1m30s", 0 → "0s"; days are the largest unit (weeks read worse in text). Reads back to the same value. */
export function formatDurationMs(durationMs: number): string {
  let restMs = BigInt(Math.max(0, Math.round(durationMs)));
  if (restMs === 0n) return "0s";
  let text = "";
  for (const [unit, ms] of units) {
    if (unit === "w") continue;
    const amount = restMs / ms;
    if (amount > 0n) {
      text += `${amount}${unit}`;
      restMs -= amount * ms;
    }
  }
  return text;
}

function clip(text: string): string {
  return text.length > 32 ? `${text.slice(0, 32)}…` : text;
}
