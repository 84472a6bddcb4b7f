import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";

export const adminFiles = { cert: "admin-cert.pem", key: "admin-key.pem", ca: "ca.pem" } as const;

export const credentialsDirEnv = "AGENTMESH_CREDENTIALS_DIR";

/** Where a credentials dir came from, in the order ctl looks (kubectl's: flag, env, per-user file). */
export type CredentialsSource = "flag" | "env" | "default";

export interface CredentialsDir {
  dir: string;
  source: CredentialsSource;
}

/**
 * The per-user default: `$XDG_CONFIG_HOME/agentmesh/admin`, else
 * `~/.config/agentmesh/admin` (the XDG base directory rule: a relative
 * XDG_CONFIG_HOME is ignored).
 */
export function defaultCredentialsDir(env: NodeJS.ProcessEnv = process.env): string {
  const configHome = env.XDG_CONFIG_HOME;
  const base = configHome && isAbsolute(configHome) ? configHome : join(env.HOME || homedir(), ".config");
  return join(base, "agentmesh", "admin");
}

/** `--credentials-dir` as commander saw it: value and source ("cli", "env" or undefined). */
export function resolveCredentialsDir(value: string | undefined, commanderSource: string | undefined, env: NodeJS.ProcessEnv = process.env): CredentialsDir {
  if (value !== undefined && commanderSource === "cli") return { dir: resolve(value), source: "flag" };
  if (value !== undefined && commanderSource === "env") return { dir: resolve(value), source: "env" };
  return { dir: defaultCredentialsDir(env), source: "default" };
}

export function describeCredentialsDir(location: CredentialsDir): string {
  const why = { flag: "--credentials-dir", env: credentialsDirEnv, default: "the per-user default" }[location.source];
  return `${location.dir} (${why})`;
}

/**
 * Before this lookup existed, init-admin wrote `.agentmesh/admin` under the
 * directory it ran in. When that is where the credentials are, say so instead of
 * leaving the operator to guess.
 */
export function legacyCredentialsHint(cwd = process.cwd()): string {
  const legacy = join(cwd, ".agentmesh", "admin");
  return existsSync(join(legacy, adminFiles.cert)) ? `; credentials exist in ${legacy}: pass --credentials-dir ${join(".agentmesh", "admin")}` : "";
}
