import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { cliPath, repoRoot, run } from "../helpers/processes.js";

// No Docker engine runs here: the container files are checked statically, and
// every CLI flag they use is checked against the real CLI's --help.

async function flagsOf(command: string): Promise<Set<string>> {
  const help = await run(process.execPath, [cliPath, ...command.split(" "), "--help"]);
  return new Set(help.stdout.match(/--[a-z][a-z0-9-]*/g) ?? []);
}

function flagsUsed(args: string[]): string[] {
  return args.flatMap((arg) => arg.match(/(?<![\w-])--[a-z][a-z0-9-]*/g) ?? []);
}

describe("docker/Dockerfile", () => {
  const dockerfile = readFileSync(join(repoRoot, "docker/Dockerfile"), "utf8");

  it("copies only paths that exist in the repository", () => {
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((match) => (match[1] ?? "").split(" "));
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) expect(existsSync(join(repoRoot, source)), source).toBe(true);
  });

  it("runs as a non-root user and starts the server on all interfaces with mTLS", () => {
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toContain('ENTRYPOINT ["node", "/app/bin/agentmesh.js"]');
    expect(dockerfile).not.toContain("--insecure-dev");
  });
});

describe("docker-compose.yml", () => {
  const compose = parseYaml(readFileSync(join(repoRoot, "docker-compose.yml"), "utf8")) as { services: Record<string, { command?: string[]; depends_on?: Record<string, unknown> }> };

  it("defines the server, the bootstrap job and two sidecars wired by dependencies", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["bootstrap", "server", "sidecar-a", "sidecar-b"]);
    expect(compose.services["sidecar-a"]?.depends_on).toHaveProperty("bootstrap");
    expect(compose.services.bootstrap?.depends_on).toHaveProperty("server");
  });

  it("uses only flags the CLI accepts", async () => {
    const server = await flagsOf("server");
    const sidecar = await flagsOf("sidecar");
    const serverArgs = compose.services.server?.command ?? [];
    for (const flag of flagsUsed(serverArgs)) expect(server.has(flag), `server ${flag}`).toBe(true);
    for (const name of ["sidecar-a", "sidecar-b"]) {
      for (const flag of flagsUsed(compose.services[name]?.command ?? [])) expect(sidecar.has(flag), `sidecar ${flag}`).toBe(true);
    }
  });

  it("applies a deployment file that exists", () => {
    const bootstrap = (compose.services.bootstrap?.command ?? []).join(" ");
    const file = /apply -f \/app\/(\S+)/.exec(bootstrap)?.[1];
    expect(file && existsSync(join(repoRoot, file))).toBe(true);
  });
});

describe("deploy/agentmesh-server.yaml", () => {
  it("is a Service and a StatefulSet whose probes and args match the server", async () => {
    const documents = parseAllDocuments(readFileSync(join(repoRoot, "deploy/agentmesh-server.yaml"), "utf8")).map((document) => document.toJS() as Record<string, unknown>);
    expect(documents.map((document) => document.kind)).toEqual(["Service", "StatefulSet"]);
    const container = (documents[1] as { spec: { template: { spec: { containers: Array<{ args: string[]; readinessProbe: { httpGet: { path: string } } }> } } } }).spec.template.spec.containers[0];
    expect(container?.readinessProbe.httpGet.path).toBe("/readyz");
    const server = await flagsOf("server");
    for (const flag of flagsUsed(container?.args ?? [])) expect(server.has(flag), flag).toBe(true);
  });
});
