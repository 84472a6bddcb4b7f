import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { composePath, healthcheckArgv, loadCompose, mountPoints, service, shellScript, unescapeDollars } from "../helpers/compose-file.js";
import { cliPath, repoRoot, run, tempDir, toolPath } from "../helpers/processes.js";

// No Docker engine or Kubernetes cluster runs here: the container files are checked
// statically (docker-compose config, kubeconform against the Kubernetes schemas), every
// CLI flag they use is checked against the real CLI's --help, and
// test/e2e/compose-topology.test.ts runs the compose commands as processes.

async function flagsOf(command: string): Promise<Set<string>> {
  const help = await run(process.execPath, [cliPath, ...command.split(" "), "--help"]);
  return new Set(help.stdout.match(/--[a-z][a-z0-9-]*/g) ?? []);
}

function flagsUsed(text: string): string[] {
  return text.match(/(?<![\w-])--[a-z][a-z0-9-]*/g) ?? [];
}

/** Flags of each `agentmesh <command>` in a shell line, by the command they follow. */
function agentmeshInvocations(script: string): Array<{ command: string; flags: string[] }> {
  return [...script.matchAll(/agentmesh\.js ((?:ctl(?: --\S+ \S+)* )?[a-z-]+)([^;&|]*)/g)].map((match) => {
    const words = (match[1] ?? "").split(" ");
    const command = words[0] === "ctl" ? `ctl ${words.at(-1)}` : (words[0] ?? "");
    return { command, flags: flagsUsed(`${match[1]}${match[2]}`).filter((flag) => !(words[0] === "ctl" && ctlGlobalFlags.has(flag))) };
  });
}
const ctlGlobalFlags = new Set(["--server", "--credentials-dir", "--output", "--ca-cert", "--cert", "--key", "--plaintext", "--log-level"]);

const dockerfile = readFileSync(join(repoRoot, "docker/Dockerfile"), "utf8");
const compose = loadCompose();
const agentmeshServices = Object.entries(compose.services).filter(([, entry]) => entry.image === "agentmesh:dev");

describe("docker/Dockerfile", () => {
  it("copies only paths that exist in the repository", () => {
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((match) => (match[1] ?? "").split(" "));
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) expect(existsSync(join(repoRoot, source)), source).toBe(true);
  });

  it("runs as a non-root user and starts the server on all interfaces with mTLS", () => {
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toContain('ENTRYPOINT ["node", "/app/bin/agentmesh.js"]');
    expect(dockerfile).not.toContain("--insecure-dev");
    expect(dockerfile.split("\n")[0]).toMatch(/^# syntax=/);
  });

  it("builds grpc-health-probe at the version scripts/install-tools.sh pins", () => {
    const pinned = /grpc-health-probe@(v[\d.]+)/.exec(readFileSync(join(repoRoot, "scripts/install-tools.sh"), "utf8"))?.[1];
    expect(dockerfile).toContain(`ARG GRPC_HEALTH_PROBE_VERSION=${pinned}`);
    expect(dockerfile).toContain("COPY --from=tools /out/grpc-health-probe /usr/local/bin/grpc-health-probe");
  });

  it("creates, owned by node, every directory a compose volume is mounted on", () => {
    const created = /^RUN mkdir -p ((?:\/\S+ )+)&& chown node:node ((?:\/\S+ ?)+)$/m.exec(dockerfile);
    const owned = new Set((created?.[2] ?? "").trim().split(" "));
    expect(owned).toEqual(new Set((created?.[1] ?? "").trim().split(" ")));
    const mounted = new Set(agentmeshServices.flatMap(([, entry]) => mountPoints(entry)));
    expect(mounted.size).toBeGreaterThan(3);
    for (const point of mounted) expect(owned.has(point), point).toBe(true);
  });
});

describe("docker-compose.yml", () => {
  it("has the databases, the CA job, two servers, the bootstrap job and two sidecars, in dependency order", () => {
    expect(Object.keys(compose.services).sort()).toEqual(["bootstrap", "init-ca", "postgres", "redis", "server-1", "server-2", "sidecar-a", "sidecar-b"]);
    expect(service(compose, "postgres").image).toBe("postgres:16-alpine");
    expect(service(compose, "redis").image).toBe("redis:7-alpine");
    expect(service(compose, "redis").command?.join(" ")).toContain("--maxmemory-policy noeviction");
    for (const name of ["server-1", "server-2"]) {
      expect(service(compose, name).depends_on).toEqual({
        "init-ca": { condition: "service_completed_successfully" },
        postgres: { condition: "service_healthy" },
        redis: { condition: "service_healthy" },
      });
    }
    expect(service(compose, "bootstrap").depends_on).toEqual({ "server-1": { condition: "service_healthy" }, "server-2": { condition: "service_healthy" } });
    for (const name of ["sidecar-a", "sidecar-b"]) expect(service(compose, name).depends_on).toEqual({ bootstrap: { condition: "service_completed_successfully" } });
  });

  it("runs both servers on PostgreSQL and Redis with the CA from init-ca", () => {
    for (const name of ["server-1", "server-2"]) {
      const command = service(compose, name).command?.join(" ") ?? "";
      expect(command).toContain("--store postgres --postgres-url postgres://agentmesh:agentmesh@postgres:5432/agentmesh --redis-url redis://redis:6379");
      expect(command).toContain(`--server-id ${name} --server-name ${name}`);
      expect(command).toContain("--ca-cert /ca/ca-cert.pem --ca-key /ca/ca-key.pem");
    }
    expect(service(compose, "init-ca").command?.join(" ")).toBe("ctl init-admin --create-ca --data-dir /ca --out /admin");
  });

  it("uses only flags the CLI accepts", async () => {
    const helpOf = new Map<string, Set<string>>();
    const flags = async (command: string) => helpOf.get(command) ?? helpOf.set(command, await flagsOf(command)).get(command) ?? new Set<string>();
    const checked: string[] = [];
    for (const [name, entry] of agentmeshServices) {
      const scripts = entry.entrypoint ? [shellScript(entry)] : [`agentmesh.js ${(entry.command ?? []).join(" ")}`];
      if (entry.healthcheck) scripts.push(healthcheckArgv(entry).join(" "));
      for (const { command, flags: used } of scripts.flatMap(agentmeshInvocations)) {
        const known = await flags(command);
        for (const flag of used) expect(known.has(flag), `${name}: ${command} ${flag}`).toBe(true);
        checked.push(`${name}: ${command}`);
      }
    }
    expect(checked).toEqual(
      expect.arrayContaining(["init-ca: ctl init-admin", "server-1: server", "server-1: ctl init-admin", "bootstrap: ctl join-token", "bootstrap: ctl apply", "sidecar-b: sidecar"]),
    );
  });

  it("keeps each sidecar's data dir (its certificate) on a named volume of its own", () => {
    const volumes = ["sidecar-a", "sidecar-b"].map((name) => {
      const entry = service(compose, name);
      const dataDir = /--data-dir (\S+)/.exec(shellScript(entry))?.[1];
      return (entry.volumes ?? []).find((volume) => volume.split(":")[1] === dataDir)?.split(":")[0];
    });
    expect(volumes).toEqual(["sidecar-a-data", "sidecar-b-data"]);
    for (const volume of volumes) expect(compose.volumes).toHaveProperty(volume ?? "");
  });

  it("applies a deployment file the image contains", () => {
    const file = /apply -f \/app\/(\S+)/.exec(shellScript(service(compose, "bootstrap")))?.[1] ?? "";
    expect(existsSync(join(repoRoot, file)), file).toBe(true);
    expect(dockerfile).toContain(`COPY ${file.split("/").slice(0, -1).join("/")} ./`);
  });

  it("checks every long-running service with grpc-health-probe", () => {
    for (const name of ["server-1", "server-2"]) {
      const check = healthcheckArgv(service(compose, name)).join(" ");
      expect(check).toContain("grpc-health-probe -addr 127.0.0.1:7420 -tls -tls-ca-cert /data/probe/ca.pem -tls-client-cert /data/probe/admin-cert.pem -tls-client-key /data/probe/admin-key.pem");
      expect(check).toContain(`-tls-server-name ${name}`);
    }
    for (const name of ["sidecar-a", "sidecar-b"]) expect(healthcheckArgv(service(compose, name))).toEqual(["grpc-health-probe", "-addr", "127.0.0.1:7431"]);
  });

  it("is valid for Debian's docker-compose 1.29 and for docker compose v2's loader", async () => {
    const legacy = await run("docker-compose", ["-f", composePath, "config", "-q"], 30_000);
    expect({ code: legacy.code, stderr: legacy.stderr }, "docker-compose missing? apt-get install docker-compose").toEqual({ code: 0, stderr: "" });
    // compose-spec/compose-go, which docker compose v2 loads and validates files with (tools/compose-config).
    const current = await run(toolPath("compose-config"), [composePath], 30_000);
    expect({ code: current.code, stderr: withoutVersionWarning(current.stderr) }, "run: bash scripts/install-tools.sh --deploy-checks").toEqual({ code: 0, stderr: "" });
    // The docker compose plugin itself, where it is installed.
    if ((await run("docker", ["compose", "version"], 10_000)).code === 0) {
      const plugin = await run("docker", ["compose", "-f", composePath, "config", "-q"], 30_000);
      expect({ code: plugin.code, stderr: withoutVersionWarning(plugin.stderr) }).toEqual({ code: 0, stderr: "" });
    }
  });

  it.each([
    // 1.29 rejects the top-level `name:` v2 accepts; v2 rejects an unknown key 1.29 would too.
    ["a top-level name", (text: string) => `name: agentmesh\n${text}`, "docker-compose", "'name' does not match any of the regexes"],
    ["an unknown condition", (text: string) => text.replace("service_completed_successfully", "service_done"), "compose-config", "condition value must be one of"],
    ["a misspelt key", (text: string) => text.replace("    healthcheck:", "    healthchek:"), "compose-config", "additional properties 'healthchek' not allowed"],
  ])("the checks refuse %s", async (_what, mangle, checker, message) => {
    const file = join(tempDir("agentmesh-compose-"), "docker-compose.yml");
    writeFileSync(file, mangle(readFileSync(composePath, "utf8")));
    const result = checker === "docker-compose" ? await run("docker-compose", ["-f", file, "config", "-q"], 30_000) : await run(toolPath("compose-config"), [file], 30_000);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(message);
  });
});

const withoutVersionWarning = (stderr: string) => stderr.replace(/.*the attribute `version` is obsolete.*\n/, "");

const deployFiles = ["deploy/agentmesh-secrets.yaml", "deploy/agentmesh-server.yaml", "deploy/agentmesh-agent.yaml"];
type Manifest = { kind: string; metadata: { name: string }; spec?: Record<string, unknown>; data?: Record<string, string>; stringData?: Record<string, string> };
const manifests = deployFiles.flatMap((file) => parseAllDocuments(readFileSync(join(repoRoot, file), "utf8")).map((document) => document.toJS() as Manifest));
const kubernetesSchemas = join(repoRoot, ".tools", "kubernetes-schemas", "v1.27.0");

function kubeconform(files: string[]) {
  return run(toolPath("kubeconform"), ["-strict", "-summary", "-schema-location", `${kubernetesSchemas}/{{.ResourceKind}}{{.KindSuffix}}.json`, ...files], 30_000);
}

interface PodSpec {
  containers: Array<{ name: string; args?: string[]; readinessProbe: { exec: { command: string[] } }; livenessProbe: { httpGet?: { path: string; port: string } } }>;
  volumes?: Array<{ secret?: { secretName: string }; configMap?: { name: string } }>;
}
const podSpecOf = (name: string) => (manifests.find((manifest) => manifest.kind === "StatefulSet" && manifest.metadata.name === name)?.spec as { template: { spec: PodSpec } }).template.spec;

describe("deploy/ (Kubernetes)", () => {
  it("is valid against the Kubernetes v1.27 schemas (kubeconform, strict)", async () => {
    expect(existsSync(join(kubernetesSchemas, ".complete")), "run: bash scripts/install-tools.sh --deploy-checks").toBe(true);
    const result = await kubeconform(deployFiles.map((file) => join(repoRoot, file)));
    expect({ code: result.code, stdout: result.stdout.trim() }).toEqual({ code: 0, stdout: `Summary: ${manifests.length} resources found in ${deployFiles.length} files - Valid: ${manifests.length}, Invalid: 0, Errors: 0, Skipped: 0` });
    // And it can fail: a misspelt probe field is refused.
    const broken = join(tempDir("agentmesh-deploy-"), "server.yaml");
    writeFileSync(broken, readFileSync(join(repoRoot, "deploy/agentmesh-server.yaml"), "utf8").replace("periodSeconds: 5", "periodSecond: 5"));
    const refused = await kubeconform([broken]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toContain("additional properties 'periodSecond' not allowed");
  });

  it("has the server's Services, StatefulSet and PodDisruptionBudget, the CA Secret and trust ConfigMap, and an agent pod with its sidecar", () => {
    expect(manifests.map((manifest) => `${manifest.kind}/${manifest.metadata.name}`)).toEqual([
      "Secret/agentmesh-ca",
      "ConfigMap/agentmesh-trust-bundle",
      "Secret/agentmesh-store",
      "Secret/agentmesh-join-tokens",
      "Service/agentmesh",
      "Service/agentmesh-peers",
      "StatefulSet/agentmesh",
      "PodDisruptionBudget/agentmesh",
      "StatefulSet/agentmesh-word-stats",
    ]);
    expect(podSpecOf("agentmesh-word-stats").containers.map((container) => container.name)).toEqual(["sidecar"]);
  });

  it("probes the server over mTLS with the compose healthcheck's line, and the sidecar on its local port", () => {
    const [server] = podSpecOf("agentmesh").containers;
    // Readiness is the compose check's mTLS probe without its /healthz fallback (for a
    // replica still starting). Liveness is /healthz (a replica without its store is alive).
    const composeCheck = healthcheckArgv(service(compose, "server-1")).join(" ").replace("-tls-server-name server-1", "-tls-server-name agentmesh");
    const probeOnly = composeCheck.replace(/ grpc-health-probe (.*?); rc=.*$/, " exec grpc-health-probe $1");
    expect(probeOnly).not.toBe(composeCheck);
    expect(server?.readinessProbe.exec.command.join(" ")).toBe(probeOnly);
    expect(server?.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
    expect(server?.args?.join(" ")).toContain("--server-name agentmesh ");
    const [sidecar] = podSpecOf("agentmesh-word-stats").containers;
    expect(sidecar?.readinessProbe.exec.command).toEqual(healthcheckArgv(service(compose, "sidecar-a")));
  });

  it("uses only CLI flags the CLI accepts and files the image contains", async () => {
    const server = await flagsOf("server");
    for (const flag of flagsUsed(podSpecOf("agentmesh").containers[0]?.args?.join(" ") ?? "")) expect(server.has(flag), flag).toBe(true);
    const sidecarScript = unescapeDollars(podSpecOf("agentmesh-word-stats").containers[0]?.args?.join(" ") ?? "");
    const sidecar = await flagsOf("sidecar");
    for (const flag of flagsUsed(sidecarScript)) expect(sidecar.has(flag), flag).toBe(true);
    const manifest = /--manifest \/app\/(\S+)/.exec(sidecarScript)?.[1] ?? "";
    expect(existsSync(join(repoRoot, manifest)), manifest).toBe(true);
  });

  it("refers only to Secrets and ConfigMaps deploy/agentmesh-secrets.yaml defines, by keys it has", () => {
    const defined = new Map(manifests.filter((manifest) => manifest.kind === "Secret" || manifest.kind === "ConfigMap").map((manifest) => [manifest.metadata.name, Object.keys({ ...manifest.data, ...manifest.stringData })]));
    const text = deployFiles.slice(1).map((file) => readFileSync(join(repoRoot, file), "utf8")).join("\n");
    const keyRefs = [...text.matchAll(/secretKeyRef: \{ name: ([\w-]+), key: ([\w.-]+) \}/g)].map((match) => [match[1], match[2]]);
    expect(keyRefs.length).toBe(2);
    for (const [name, key] of keyRefs) expect(defined.get(name ?? ""), `${name}/${key}`).toContain(key);
    const mounted = ["agentmesh", "agentmesh-word-stats"].flatMap((name) => podSpecOf(name).volumes ?? []).map((volume) => volume.secret?.secretName ?? volume.configMap?.name);
    expect(mounted).toEqual(["agentmesh-ca", "agentmesh-trust-bundle", "agentmesh-join-tokens"]);
    for (const name of mounted) expect(defined.has(name ?? ""), name).toBe(true);
    expect(defined.get("agentmesh-ca")).toEqual(["ca-cert.pem", "ca-key.pem"]);
    expect(defined.get("agentmesh-join-tokens")).toEqual(["agentmesh-word-stats-0"]);
  });
});
