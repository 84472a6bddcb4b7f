// One duration grammar (sdk/ts/src/core/duration.ts) for the three places that read
// durations: ctl and server flags, alert rules, deployment YAML. Each row runs through
// all of them, so they cannot drift apart again (alerts used to refuse 1.5s and accept
// 2d while deployment YAML accepted 1.5s and refused 30d).
import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { parseDurationFlag } from "../../cli/options.js";
import { formatDurationMs, parseDuration, parseDurationValue } from "../../sdk/ts/src/core/duration.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { parseDurationMs as parseAlertDurationMs } from "../../services/alerts/duration.js";
import { parseDeploymentYaml } from "../../services/orchestrator/deployment-yaml.js";

type Outcome = { ms: number } | { problem: string };

const examples = "500ms, 30s, 1m30s, 1.5h, 7d";
const notADuration = (text: string) => `"${text}" is not a duration: write a number and a unit (ms, s, m, h, d, w), such as ${examples}`;

const table: Array<[text: string, expected: number | string]> = [
  ["0", 0],
  ["500ms", 500],
  ["30s", 30_000],
  ["1.5s", 1_500],
  ["1.1s", 1_100],
  ["0.5s", 500],
  ["1m30s", 90_000],
  ["10m", 600_000],
  ["1h30m", 5_400_000],
  ["1.5h", 5_400_000],
  ["2d", 172_800_000],
  ["30d", 2_592_000_000],
  ["1w", 604_800_000],
  ["1w2d3h4m5s6ms", 788_645_006],
  ["007s", 7_000],
  [" 30s ", 30_000],
  ["", `empty; write a duration such as ${examples}`],
  ["30", '"30" needs a unit, like 30s or 30ms'],
  ["1.5", '"1.5" needs a unit, like 1.5s or 1.5ms'],
  ["-5s", notADuration("-5s")],
  ["30 s", notADuration("30 s")],
  ["1h 30m", notADuration("1h 30m")],
  ["1y", notADuration("1y")],
  ["30S", notADuration("30S")],
  ["1e3s", notADuration("1e3s")],
  ["s", notADuration("s")],
  ["1.s", notADuration("1.s")],
  ["1m1h", '"1m1h": units go largest first, each at most once (like 1h30m)'],
  ["1s1s", '"1s1s": units go largest first, each at most once (like 1h30m)'],
  ["0.5ms", '"0.5ms" is not a whole number of milliseconds'],
  ["1.0001s", '"1.0001s" is not a whole number of milliseconds'],
  ["99999999999999w", '"99999999999999w" is too long'],
];

function outcome(run: () => number): Outcome {
  try {
    return { ms: run() };
  } catch (error) {
    if (error instanceof InvalidArgumentError || error instanceof MeshError) return { problem: error.message };
    throw error;
  }
}

function expected(value: number | string): Outcome {
  return typeof value === "number" ? { ms: value } : { problem: value };
}

/** A deployment whose health.readinessTimeout is `text` (no range rule of its own), as ctl apply reads it. */
function yamlReadinessTimeout(text: string): Outcome {
  const yaml = `name: d\nversion: 1.0.0\ncapabilities: [a.b@1.0.0]\nprocess: {command: node}\nhealth:\n  readinessTimeout: ${JSON.stringify(text)}\n`;
  const read = outcome(() => parseDeploymentYaml(yaml)[0]?.manifest?.healthPolicy?.readinessTimeoutMs ?? -1);
  return "problem" in read ? { problem: read.problem.replace(/^health\.readinessTimeout: /, "").replace(/ \(line \d+\)$/, "") } : read;
}

describe("the one duration grammar", () => {
  it.each(table)("%j", (text, value) => {
    const want = expected(value);
    const core = parseDuration(text);
    expect(core.ok ? { ms: core.ms } : { problem: core.problem }).toEqual(want);
    // ctl and server flags (commander parsers): a bad value is a usage error with the same words.
    expect(outcome(() => parseDurationFlag(text))).toEqual(want);
    // Alert rules: the path in front, the same words after it.
    const alert = outcome(() => parseAlertDurationMs(text, "rules[0].for"));
    expect("problem" in alert ? { problem: alert.problem.replace(/^rules\[0\]\.for: /, "") } : alert).toEqual(want);
    // Deployment YAML.
    expect(yamlReadinessTimeout(text)).toEqual(want);
  });

  it.each<[unknown, number | string]>([
    [0, 0],
    [1_500, "needs a unit, like 1500s or 1500ms"],
    [1.5, "needs a unit, like 1.5s or 1.5ms"],
    [true, `must be a duration such as ${examples}`],
    [null, `must be a duration such as ${examples}`],
    [["30s"], `must be a duration such as ${examples}`],
  ])("a YAML or JSON value %j", (value, want) => {
    const parsed = parseDurationValue(value);
    expect(parsed.ok ? { ms: parsed.ms } : { problem: parsed.problem }).toEqual(expected(want));
    const alert = outcome(() => parseAlertDurationMs(value, "cooldown"));
    expect("problem" in alert ? { problem: alert.problem.replace(/^cooldown: /, "") } : alert).toEqual(expected(want));
  });

  it.each<[number, string]>([
    [0, "0s"],
    [500, "500ms"],
    [90_000, "1m30s"],
    [5_400_000, "1h30m"],
    [788_645_006, "9d3h4m5s6ms"],
    [-5, "0s"],
  ])("formats %i ms as %s, which reads back", (durationMs, text) => {
    expect(formatDurationMs(durationMs)).toBe(text);
    expect(parseDuration(text)).toEqual({ ok: true, ms: Math.max(0, durationMs) });
  });
});
