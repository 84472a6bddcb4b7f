import { InvalidArgumentError } from "commander";

const unitsMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `500ms`, `30s`, `10m`, `1h`, `7d` → milliseconds; friendly once, `…Ms` numbers after. */
export function parseDurationMs(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!match) throw new InvalidArgumentError(`"${text}" is not a duration like 500ms, 30s, 10m, 1h`);
  return Math.round(Number(match[1]) * (unitsMs[match[2] as string] as number));
}
