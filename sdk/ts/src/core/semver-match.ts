import semver from "semver";
import { invalidArgument } from "./mesh-error.js";

const MAX_RANGE_LENGTH = 256;

/** A parsed npm-semver range; parse once, test many versions. */
export interface VersionRange {
  readonly raw: string;
  satisfiedBy(version: string): boolean;
}

const anyVersion: VersionRange = { raw: "*", satisfiedBy: () => true };
const rangeCache = new Map<string, VersionRange>();
const RANGE_CACHE_LIMIT = 1024;

/**
 * Parses an npm `semver` range (`^2.1.0`, `>=1.4 <3`, `2.x`). Empty means any.
 * Throws INVALID_ARGUMENT naming `field` when the range does not parse.
 */
export function parseVersionRange(raw: string, field = "version_range"): VersionRange {
  const trimmed = raw.trim();
  if (trimmed === "" || trimmed === "*") return anyVersion;
  const cached = rangeCache.get(trimmed);
  if (cached) return cached;
  if (trimmed.length > MAX_RANGE_LENGTH) throw invalidArgument(`${field}: longer than ${MAX_RANGE_LENGTH} characters`);
  let range: semver.Range;
  try {
    range = new semver.Range(trimmed);
  } catch {
    throw invalidArgument(`${field}: not a valid semver range`);
  }
  const parsed: VersionRange = { raw: trimmed, satisfiedBy: (version) => range.test(version) };
  if (rangeCache.size >= RANGE_CACHE_LIMIT) rangeCache.clear();
  rangeCache.set(trimmed, parsed);
  return parsed;
}

// The regular expression semver.org publishes for SemVer 2.0.0, build metadata included.
const strictSemver =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;

/** True when `version` is a strict semver 2.0.0 version (no `v` prefix, no loose forms). */
export function isValidVersion(version: string): boolean {
  return version.length <= 128 && strictSemver.test(version);
}

/** Orders versions newest first (semver precedence). */
export function compareVersionsDescending(left: string, right: string): number {
  return semver.rcompare(left, right);
}
