// Real outside clients against a real mesh (server, sidecars, agents as processes):
// every shell command of docs/grpcurl.md is run exactly as written, block by block,
// with the doc's own variables pointed at this mesh, and its answer checked. A
// command in the doc that this test does not run fails the test, so the page and
// the test cannot drift. Also the machine-readable `listening` lines of docs/protocol.md.
import { execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MeshCluster, type SidecarNode, echoDeploymentYaml, exampleDeploymentYaml } from "../helpers/mesh-cluster.js";
import { codeBlocks, readDoc, section } from "../helpers/markdown.js";
import { repoRoot } from "../helpers/processes.js";

const doc = readDoc("docs/grpcurl.md");
const shellBlocks = (heading: string) => codeBlocks(section(doc, heading)).filter((block) => block.lang === "sh").map((block) => block.body);
const setup = shellBlocks("Credentials").join("\n");

/** The commands of a block, one per line (`\` continuations joined), comments dropped. */
function commandsOf(block: string): string[] {
  return block
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

let cluster: MeshCluster;
let sidecar: SidecarNode;
const executed = new Set<string>();

function variablesFor(node: SidecarNode): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PATH: `${join(repoRoot, ".tools", "bin")}:${process.env.PATH ?? ""}`,
    A: cluster.credentialsDir,
    SERVER: cluster.address,
    SIDECAR: node.localAddress,
    SIDECAR_INBOUND: node.inboundAddress,
  };
}

/** Runs one command of the doc after the doc's setup block, in the repository (for `-import-path proto`). */
function runDoc(command: string, node: SidecarNode = sidecar, timeoutMs = 20_000): Promise<Result> {
  executed.add(command);
  return new Promise((resolve) => {
    execFile("bash", ["-c", `${setup}\n${command}`], { cwd: repoRoot, env: variablesFor(node), timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() });
    });
  });
}

/** Runs a streaming command of the doc until its output contains `until`, then stops it. */
function runDocUntil(command: string, until: string, timeoutMs = 20_000): Promise<string> {
  executed.add(command);
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", `${setup}\nexec ${command}`], { cwd: repoRoot, env: variablesFor(sidecar), stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    let errors = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`"${until}" not seen within ${timeoutMs} ms; stdout: ${output.slice(-2000)} stderr: ${errors.slice(-2000)}`));
    }, timeoutMs);
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      if (!output.includes(until)) return;
      clearTimeout(timer);
      child.kill("SIGTERM");
      resolve(output);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      errors += chunk.toString();
    });
  });
}

function expectOk(result: Result): Result {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: "" });
  return result;
}

const wordStatsOf = (base64: string) => JSON.parse(Buffer.from(base64, "base64").toString("utf8")) as { words: number; top: Array<[string, number]> };

beforeAll(async () => {
  cluster = await MeshCluster.start();
  sidecar = await cluster.startSidecar({ host: "host-a", capacity: 2 });
  const applied = await cluster.ctl("apply", "-f", cluster.writeFile("word-stats.yaml", exampleDeploymentYaml("word-stats", 1)));
  expect(applied.code).toBe(0);
  await cluster.waitForReady("word-stats", 1);
}, 90_000);

afterAll(async () => {
  await cluster?.close();
});

describe("docs/grpcurl.md, run as written", () => {
  it("lists every service by reflection", async () => {
    const [services, methods] = commandsOf(shellBlocks("List the services").join("\n"));
    const listed = expectOk(await runDoc(services as string)).stdout.split("\n");
    expect(listed).toEqual(
      expect.arrayContaining([
        "agentmesh.v1.IdentityService",
        "agentmesh.v1.OrchestratorService",
        "agentmesh.v1.RegistryService",
        "grpc.health.v1.Health",
      ]),
    );
    const registryMethods = expectOk(await runDoc(methods as string)).stdout.split("\n");
    expect(registryMethods).toEqual(expect.arrayContaining(["agentmesh.v1.RegistryService.Discover", "agentmesh.v1.RegistryService.Register", "agentmesh.v1.RegistryService.Watch"]));
  });

  it("describes RegistryService and a message", async () => {
    const [service, message] = commandsOf(shellBlocks("Describe a service or a message").join("\n"));
    const described = expectOk(await runDoc(service as string)).stdout;
    expect(described).toContain("service RegistryService {");
    expect(described).toMatch(/rpc Discover \( \.agentmesh\.v1\.DiscoverRequest \) returns \( \.agentmesh\.v1\.DiscoverResponse \)/);
    expect(described).toMatch(/rpc Watch \( \.agentmesh\.v1\.WatchRequest \) returns \( stream \.agentmesh\.v1\.WatchResponse \)/);
    const request = expectOk(await runDoc(message as string)).stdout;
    expect(request).toContain("message DiscoverRequest {");
    expect(request).toContain("string version_range = 2;");
  });

  it("discovers and lists the running agent", async () => {
    const [discover, list] = commandsOf(shellBlocks("Discover instances").join("\n"));
    const [instance] = await cluster.instances("word-stats");
    // proto3 JSON, as from any gRPC server: lowerCamelCase names, int64 as strings, enums by name.
    const discovered = JSON.parse(expectOk(await runDoc(discover as string)).stdout) as { instances: Array<{ instanceId: string; manifest: { name: string } }>; revision: string };
    expect(discovered.instances.map((found) => [found.instanceId, found.manifest.name])).toEqual([[instance?.instanceId, "word-stats"]]);
    expect(Number(discovered.revision)).toBeGreaterThan(0);
    const listed = JSON.parse(expectOk(await runDoc(list as string)).stdout) as { instances: Array<{ instanceId: string; state: string }> };
    expect(listed.instances.map((found) => [found.instanceId, found.state])).toEqual([[instance?.instanceId, "HEALTH_STATE_READY"]]);
  });

  it("invokes the agent through the server and through the sidecar", async () => {
    const [throughServer, throughSidecar] = commandsOf(shellBlocks("Invoke an agent").join("\n"));
    const [instance] = await cluster.instances("word-stats");
    expect(instance?.instanceId).toMatch(/^word-stats-/);
    const answered = JSON.parse(expectOk(await runDoc(throughServer as string)).stdout) as { payload: string; instanceId: string; version: string };
    expect({ instanceId: answered.instanceId, version: answered.version }).toEqual({ instanceId: instance?.instanceId, version: "1.0.0" });
    expect(wordStatsOf(answered.payload)).toMatchObject({ words: 6, top: [["be", 2], ["to", 2], ["not", 1], ["or", 1]] });
    const local = JSON.parse(expectOk(await runDoc(throughSidecar as string)).stdout) as { payload: string; instanceId: string };
    expect(local.instanceId).toBe(instance?.instanceId);
    expect(wordStatsOf(local.payload).words).toBe(6);
  });

  it("watches the registry: a snapshot, then SYNCED", async () => {
    const [watch] = commandsOf(shellBlocks("Watch the registry").join("\n"));
    const output = await runDocUntil(watch as string, "EVENT_TYPE_SYNCED");
    expect(output.indexOf("EVENT_TYPE_ADDED")).toBeGreaterThanOrEqual(0);
    expect(output.indexOf("EVENT_TYPE_ADDED")).toBeLessThan(output.indexOf("EVENT_TYPE_SYNCED"));
    expect(output).toContain('"name": "word-stats"');
  });

  it("grpc-health-probe and grpcurl see the server and the sidecar SERVING", async () => {
    const [serverBlock, sidecarBlock] = shellBlocks("Health");
    const [probeServer, probeService, checkService] = commandsOf(serverBlock ?? "");
    for (const command of [probeServer, probeService]) {
      const probed = await runDoc(command as string);
      expect({ code: probed.code, output: (probed.stdout + probed.stderr).trim() }).toEqual({ code: 0, output: "status: SERVING" });
    }
    expect(JSON.parse(expectOk(await runDoc(checkService as string)).stdout)).toEqual({ status: "SERVING" });
    for (const command of commandsOf(sidecarBlock ?? "")) {
      const probed = await runDoc(command);
      expect({ command, code: probed.code, output: (probed.stdout + probed.stderr).trim() }).toEqual({ command, code: 0, output: "status: SERVING" });
    }
  });

  it("a draining sidecar reports NOT_SERVING on both ports until it is gone", { timeout: 60_000 }, async () => {
    const echoYaml = cluster.writeFile("echo.yaml", echoDeploymentYaml({ name: "echo-drain" }));
    const draining = await cluster.startSidecar({ host: "host-drain", manifests: [echoYaml] });
    const [echo] = await cluster.waitForReady("echo-drain", 1);
    // A call its agent never answers keeps the sidecar draining while the probes look.
    const abort = new AbortController();
    const inFlight = sidecar.caller
      .invoke("test.echo", JSON.stringify({ hangOn: echo?.instanceId, tag: "drain-hold" }), { timeoutMs: 30_000, signal: abort.signal })
      .catch((error: unknown) => error);
    await draining.process.waitForLog((line) => line.msg === "call drain-hold received");
    draining.process.child.kill("SIGTERM");
    await draining.process.waitForLog((line) => line.msg === "sidecar shutting down");
    for (const command of commandsOf(shellBlocks("Health")[1] ?? "")) {
      const probed = await runDoc(command, draining);
      expect({ command, code: probed.code, output: (probed.stdout + probed.stderr).trim() }).toEqual({
        command,
        code: 4,
        output: 'service unhealthy (responded with "NOT_SERVING")',
      });
    }
    expect(draining.process.child.exitCode).toBeNull();
    abort.abort();
    await inFlight;
    // Already told to stop: it finishes draining and exits 0 on its own (a second SIGTERM would kill it).
    expect(await draining.process.exited).toBe(0);
  });

  it("runs every command the page shows", () => {
    const documented = codeBlocks(doc)
      .filter((block) => block.lang === "sh")
      .slice(1)
      .flatMap((block) => commandsOf(block.body));
    expect(documented.filter((command) => !executed.has(command))).toEqual([]);
  });
});

describe("docs/protocol.md, the machine-readable lines", () => {
  it("the server's `listening` line and the sidecar's `sidecar listening` line have the documented fields", () => {
    const example = codeBlocks(section(readDoc("docs/protocol.md"), "Finding the server")).find((block) => block.lang === "json")?.body ?? "{}";
    const documented = JSON.parse(example) as Record<string, unknown>;
    const line = cluster.server.lines.find((candidate) => candidate.msg === "listening");
    expect(Object.keys(line ?? {}).sort()).toEqual(Object.keys(documented).sort());
    expect(line?.grpcAddress).toBe(cluster.address);
    expect(line?.httpPort).toEqual(expect.any(Number));
    const sidecarLine = sidecar.process.lines.find((candidate) => candidate.msg === "sidecar listening");
    expect(sidecarLine).toMatchObject({ inboundAddress: sidecar.inboundAddress, localAddress: sidecar.localAddress, spiffeId: "spiffe://agentmesh.local/sidecar/host-a" });
  });
});
