import { cpSync, mkdirSync, readFileSync, symlinkSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { parse as parseYaml } from "yaml";
import { repoRoot } from "./processes.js";

// docker-compose.yml as data, for the static checks and for the end-to-end test that
// runs its commands as processes (test/e2e/compose-topology.test.ts).

export interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  working_dir?: string;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

export interface ComposeFile {
  version?: string;
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

export const composePath = join(repoRoot, "docker-compose.yml");

export function loadCompose(): ComposeFile {
  return parseYaml(readFileSync(composePath, "utf8")) as ComposeFile;
}

export function service(compose: ComposeFile, name: string): ComposeService {
  const found = compose.services[name];
  if (!found) throw new Error(`docker-compose.yml has no service ${name}`);
  return found;
}

/** Compose writes a literal `$` as `$$` in commands; this is what the container's shell gets. */
export function unescapeDollars(text: string): string {
  return text.replaceAll("$$", "$");
}

/** The script of a service whose entrypoint is `/bin/sh -c`. */
export function shellScript(entry: ComposeService): string {
  if (entry.entrypoint?.join(" ") !== "/bin/sh -c" || entry.command?.length !== 1) throw new Error("not a /bin/sh -c service");
  return unescapeDollars(entry.command[0] ?? "");
}

/** A healthcheck's command line without the leading CMD, `$$` unescaped. */
export function healthcheckArgv(entry: ComposeService): string[] {
  const [form, ...argv] = entry.healthcheck?.test ?? [];
  if (form !== "CMD") throw new Error("healthcheck is not in CMD form");
  return argv.map(unescapeDollars);
}

/** Mount points of a service's named volumes: `name:/path[:ro]` -> `/path`. */
export function mountPoints(entry: ComposeService): string[] {
  return (entry.volumes ?? []).map((volume) => volume.split(":")[1] ?? "");
}

/**
 * Rewrites container paths and service addresses for a run on this machine, in one
 * pass: a key matches only as a whole path or address (`/ca` in `/ca/ca-cert.pem`,
 * not in `/data/probe/ca.pem` or `/ca-key.pem`), and a replacement is never rewritten.
 */
export function localize(text: string, replacements: Record<string, string>): string {
  const keys = Object.keys(replacements).sort((a, b) => b.length - a.length);
  const escaped = keys.map((key) => key.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`(?<![\\w./-])(${escaped.join("|")})(?=[/\\s"';]|$)`, "g");
  return text.replace(pattern, (match) => replacements[match] ?? match);
}

/**
 * The image's /app as docker/Dockerfile's last stage assembles it, from this checkout
 * (built: dist/ is the build stage's output): each `COPY` into the working dir is copied,
 * except node_modules, which is linked (test/e2e/sdk-package.test.ts covers a
 * production-only install). What the image lacks, a command run from here lacks too.
 */
export function assembleImageApp(target: string): string[] {
  const dockerfile = readFileSync(join(repoRoot, "docker/Dockerfile"), "utf8");
  const lastStage = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
  const copied: string[] = [];
  for (const match of lastStage.matchAll(/^COPY (?:--from=(\w+) )?(\S+) (\S+)$/gm)) {
    const [, stage, source = "", destination = ""] = match;
    if (!destination.startsWith("./")) continue; // outside /app (grpc-health-probe: .tools/bin here)
    const inRepository = stage === undefined ? source : source.replace(/^\/src\//, "");
    if (stage !== undefined && stage !== "build") throw new Error(`unexpected stage ${stage} in docker/Dockerfile`);
    const to = destination.endsWith("/") ? join(target, destination, basename(inRepository)) : join(target, destination);
    mkdirSync(dirname(to), { recursive: true });
    if (inRepository === "node_modules") symlinkSync(join(repoRoot, "node_modules"), to);
    else cpSync(join(repoRoot, inRepository), to, { recursive: true });
    copied.push(inRepository);
  }
  return copied;
}
