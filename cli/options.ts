import { isIP } from "node:net";
import { InvalidArgumentError, Option } from "commander";
import { parseDuration } from "../sdk/ts/src/core/duration.js";
import { parseLabelSelector } from "../sdk/ts/src/core/label-selector.js";
import type { LabelSelector } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";

/** A flag with its AGENTMESH_* environment twin, shown in --help. */
export function envOption(flags: string, env: string, description: string, defaultValue?: string | boolean): Option {
  const option = new Option(flags, description).env(env);
  if (defaultValue !== undefined) option.default(defaultValue);
  return option;
}

export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

/** `--log-level`, refused at parse time (a usage error) unless it is a pino level; `debug` and `trace` also print stack traces of failures. */
export function logLevelOption(defaultLevel = "info"): Option {
  return envOption("--log-level <level>", "AGENTMESH_LOG_LEVEL", "trace | debug | info | warn | error | fatal | silent (debug also prints stack traces of failures)", defaultLevel).choices(logLevels);
}

/** Levels at which a failure's stack trace is printed too. */
export function isDebugLevel(level: unknown): boolean {
  return level === "debug" || level === "trace";
}

export function parseInteger(name: string, min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < min || parsed > max) throw new InvalidArgumentError(`${name} must be an integer ${min}-${max}`);
    return parsed;
  };
}

export function parseNumber(name: string, min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || parsed < min || parsed > max) throw new InvalidArgumentError(`${name} must be a number ${min}-${max}`);
    return parsed;
  };
}

/** A duration flag value (sdk/ts/src/core/duration.ts) → milliseconds; a bad one is a usage error. */
export function parseDurationFlag(text: string): number {
  const parsed = parseDuration(text);
  if (!parsed.ok) throw new InvalidArgumentError(parsed.problem);
  return parsed.ms;
}

/** A duration flag: parsed to milliseconds, its default shown as written (`5s`). */
export function durationOption(flags: string, description: string, defaultText: string): Option {
  return new Option(flags, description).argParser(parseDurationFlag).default(parseDurationFlag(defaultText), defaultText);
}

export const defaultServerPort = 7420;

/**
 * `host[:port]` of the control plane, with the port defaulted to 7420
 * (`--server 127.0.0.1` would otherwise dial 443, grpc-js' default for an
 * address without a port). IPv6 literals are bracketed. grpc-js targets with a
 * scheme (`dns:…`, `unix:…`) are passed through.
 */
export function normalizeServerAddress(text: string): string {
  const address = text.trim();
  if (address === "") throw new InvalidArgumentError("--server: empty; give host:port, e.g. 127.0.0.1:7420");
  if (/^(?:dns|unix|unix-abstract|ipv4|ipv6):/.test(address)) return address;
  if (isIP(address) === 6) return `[${address}]:${defaultServerPort}`;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(address);
  if (bracketed) return `[${bracketed[1]}]:${checkPort(bracketed[2] ?? String(defaultServerPort), address)}`;
  const colon = address.lastIndexOf(":");
  if (colon === -1) return `${address}:${defaultServerPort}`;
  return `${address.slice(0, colon)}:${checkPort(address.slice(colon + 1), address)}`;
}

function checkPort(text: string, address: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port < 1 || port > 65535) throw new InvalidArgumentError(`--server ${address}: the port must be 1-65535`);
  return port;
}

/** durationOption with an AGENTMESH_* environment twin (its value is parsed the same way). */
export function envDurationOption(flags: string, env: string, description: string, defaultText: string): Option {
  return durationOption(flags, description, defaultText).env(env);
}

/** `-l, --selector`: parsed at parse time, so a bad selector is a usage error. */
export function parseSelectorFlag(text: string): LabelSelector {
  try {
    return parseLabelSelector(text);
  } catch (error) {
    throw new InvalidArgumentError(error instanceof Error ? error.message : String(error));
  }
}
