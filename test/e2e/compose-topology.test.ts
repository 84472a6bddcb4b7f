// docker-compose.yml's topology as processes (no Docker engine runs here): every
// command is taken from the compose file and only rewritten for this machine (container
// paths to temp dirs, service names to 127.0.0.1 and the ports given out here, the
// postgres and redis services to a throwaway PostgreSQL and Redis from test/helpers), so what runs is
// what the containers run, from the image's /app as docker/Dockerfile assembles it: init-ca, two servers on one CA, the bootstrap script (join
// tokens, ctl apply of the example deployment), two sidecars joining with those tokens,
// the healthchecks with the real grpc-health-probe, then calls through both sidecars and
// the server. The replicas are active/active: both answer to `control-plane` in compose and
// both serve; one leads and reconciles. Here `control-plane:7420` is the leader's address.
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MeshCaller } from "../../sdk/ts/src/agent/invoke.js";
import { type ComposeService, assembleImageApp, healthcheckArgv, loadCompose, localize, service, shellScript } from "../helpers/compose-file.js";
import { stopProcess, waitFor } from "../helpers/mesh-cluster.js";
import { type ThrowawayPostgres, startPostgres } from "../helpers/postgres.js";
import { type ManagedProcess, cliPath, repoRoot, run, startProcess, tempDir } from "../helpers/processes.js";
import { freePort } from "../helpers/server-binaries.js";
import { type ThrowawayRedis, startRedis } from "../helpers/redis.js";

const compose = loadCompose();
const servers = ["server-1", "server-2"] as const;
const sidecars = [
  { name: "sidecar-a", host: "host-a" },
  { name: "sidecar-b", host: "host-b" },
] as const;

let root: string;
/** The image's /app, assembled from the Dockerfile's COPY lines. */
let app: string;
let entrypoint: string;
let postgres: ThrowawayPostgres | undefined;
let redis: ThrowawayRedis | undefined;
const processes: ManagedProcess[] = [];
const callers: MeshCaller[] = [];
/** Container paths and service addresses -> this machine's; per-process entries are added where they differ. */
const shared: Record<string, string> = {};
const serverAddress = new Map<string, string>();
const serverHttpPort = new Map<string, number>();
let leader = "";
const sidecarLocal = new Map<string, string>();
const sidecarScripts = new Map<string, string>();
const sidecarProcesses = new Map<string, ManagedProcess>();
// The servers' shell and the healthchecks find node, agentmesh's tools and grpc-health-probe as the image does.
const pathEnv = { PATH: [join(repoRoot, ".tools", "bin"), dirname(process.execPath), process.env.PATH].join(":") };

const envOf = (entry: ComposeService) => ({ ...entry.environment, ...pathEnv });
const serverPaths = (name: string) => ({ ...shared, "/data": join(root, name) });
const sh = (script: string, env: NodeJS.ProcessEnv, timeoutMs = 30_000) => run("/bin/sh", ["-c", script], timeoutMs, { env, cwd: app });
const ctlOn = (server: string, ...args: string[]) => run(process.execPath, [cliPath, "ctl", "--server", serverAddress.get(server) ?? "", "--credentials-dir", join(root, "admin"), "-o", "json", ...args], 20_000);
const ctl = (...args: string[]) => ctlOn(leader, ...args);

beforeAll(async () => {
  root = tempDir("agentmesh-compose-");
  app = join(root, "app");
  expect(assembleImageApp(app)).toEqual(expect.arrayContaining(["dist", "bin"]));
  entrypoint = join(app, "bin", "agentmesh.js");
  Object.assign(shared, { "/app": app, "/ca": join(root, "ca"), "/admin": join(root, "admin"), "/bootstrap": join(root, "bootstrap") });
  // The volumes' mount points, which the image creates (docker/Dockerfile, mkdir -p).
  for (const directory of ["ca", "admin", "bootstrap", ...servers]) mkdirSync(join(root, directory));
  [postgres, redis] = await Promise.all([startPostgres(), startRedis()]);
  const serverCommand = service(compose, "server-1").command?.join(" ") ?? "";
  const [postgresUrl, redisUrl] = [/--postgres-url (\S+)/.exec(serverCommand)?.[1] ?? "", /--redis-url (\S+)/.exec(serverCommand)?.[1] ?? ""];
  Object.assign(shared, { [postgresUrl]: await postgres.createDatabase(), [redisUrl]: redis.url });
}, 60_000);

afterAll(async () => {
  for (const caller of callers) caller.close();
  for (const managed of processes.splice(0).reverse()) await stopProcess(managed);
  await Promise.all([postgres?.destroy(), redis?.destroy()]);
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("the docker-compose.yml topology, as processes", () => {
  it("init-ca creates the CA and the admin credentials", async () => {
    const entry = service(compose, "init-ca");
    const args = (entry.command ?? []).map((arg) => localize(arg, shared));
    const created = await run(process.execPath, [entrypoint, ...args], 20_000, { env: envOf(entry), cwd: app });
    expect({ code: created.code, stderr: created.stderr }).toEqual({ code: 0, stderr: "" });
    for (const file of ["ca/ca-cert.pem", "ca/ca-key.pem", "admin/admin-cert.pem", "admin/admin-key.pem", "admin/ca.pem"]) expect(existsSync(join(root, file)), file).toBe(true);
  });

  it("starts both servers on the CA: both serve and pass their grpc-health-probe healthcheck over mTLS, one leads", { timeout: 60_000 }, async () => {
    const roles = new Map<string, "leader" | "follower">();
    await Promise.all(
      servers.map(async (name) => {
        const entry = service(compose, name);
        const args = (entry.command ?? []).map((arg) => localize(arg, serverPaths(name)));
        // Loopback and free ports instead of 0.0.0.0:7420/7421 (the last value of a flag wins).
        const port = await freePort();
        serverAddress.set(name, `127.0.0.1:${port}`);
        const server = startProcess(process.execPath, [entrypoint, ...args, "--host", "127.0.0.1", "--http-host", "127.0.0.1", "--port", String(port), "--http-port", "0"], envOf(entry));
        processes.push(server);
        const started = await server.waitForLog((line) => line.msg === "listening", 20_000);
        serverHttpPort.set(name, Number(started.httpPort));
        const leads = server.lines.some((line) => line.msg === "elected leader: reconciling deployments");
        roles.set(name, leads ? "leader" : "follower");
      }),
    );
    expect([...roles.values()].sort()).toEqual(["follower", "leader"]);
    leader = [...roles].find(([, role]) => role === "leader")?.[0] ?? "";
    shared["control-plane:7420"] = serverAddress.get(leader) ?? "";
    for (const name of servers) {
      const check = healthcheckArgv(service(compose, name));
      const paths = { ...serverPaths(name), "127.0.0.1:7420": serverAddress.get(name) ?? "", "127.0.0.1:7421": `127.0.0.1:${serverHttpPort.get(name)}` };
      const first = await run(check[0] ?? "", check.slice(1).map((arg) => localize(arg, paths)), 20_000, { env: pathEnv });
      const output = `${first.stdout}${first.stderr}`.trim();
      expect({ code: first.code, output }, name).toEqual({ code: 0, output: "status: SERVING" });
      // The check issued its client certificate into the data dir; the next one reuses it.
      const probeCert = join(root, name, "probe", "admin-cert.pem");
      const issued = readFileSync(probeCert, "utf8");
      const second = await run(check[0] ?? "", check.slice(1).map((arg) => localize(arg, paths)), 20_000, { env: pathEnv });
      expect(second.code).toBe(0);
      expect(readFileSync(probeCert, "utf8")).toBe(issued);
    }
  });

  it("bootstrap writes a join token per sidecar host and the CA certificate, and applies the example deployment", { timeout: 45_000 }, async () => {
    const entry = service(compose, "bootstrap");
    const done = await sh(localize(shellScript(entry), shared), envOf(entry));
    expect({ code: done.code, stderr: done.stderr }).toEqual({ code: 0, stderr: "" });
    expect(done.stdout).toContain("word-stats");
    for (const { host } of sidecars) expect(readFileSync(join(root, "bootstrap", `${host}.token`), "utf8").split("\n")[0]).toMatch(/^\S{20,}$/);
    expect(readFileSync(join(root, "bootstrap", "ca.pem"), "utf8")).toBe(readFileSync(join(root, "admin", "ca.pem"), "utf8"));
  });

  it("the sidecars join with their tokens, run the deployment's agents and pass their healthchecks", { timeout: 60_000 }, async () => {
    // Started together, as compose starts them once bootstrap has completed.
    await Promise.all(
      sidecars.map(async ({ name }) => {
        const entry = service(compose, name);
        const paths: Record<string, string> = { ...shared, "/data": join(root, name) };
        mkdirSync(join(root, name));
        expect(entry.working_dir).toBe("/app");
        // Loopback and any free ports; the advertised address then defaults to the bound one
        // (the container's `<service>:7430` names nothing here).
        const advertised = / --advertise-address \S+/;
        expect(shellScript(entry)).toMatch(advertised);
        const script = `cd ${app} && ${localize(shellScript(entry), paths).replace(advertised, "")} --inbound-host 127.0.0.1 --inbound-port 0 --local-port 0 --http-port 0`;
        sidecarScripts.set(name, script);
        const sidecar = startProcess("/bin/sh", ["-c", script], envOf(entry));
        processes.push(sidecar);
        sidecarProcesses.set(name, sidecar);
        const listening = await sidecar.waitForLog((line) => line.msg === "sidecar listening", 20_000);
        sidecarLocal.set(name, String(listening.localAddress));
        const check = healthcheckArgv(entry).map((arg) => localize(arg, { "127.0.0.1:7431": String(listening.localAddress) }));
        const healthy = await run(check[0] ?? "", check.slice(1), 10_000, { env: pathEnv });
        expect({ code: healthy.code, output: `${healthy.stdout}${healthy.stderr}`.trim() }, name).toEqual({ code: 0, output: "status: SERVING" });
      }),
    );
    const deployment = readFileSync(join(app, "examples/deployments/word-stats.yaml"), "utf8");
    const replicas = Number(/^replicas: (\d+)$/m.exec(deployment)?.[1]);
    const ready = await waitFor(
      "the deployment's instances READY",
      async () => {
        const listed = await ctl("agents", "--name", "word-stats");
        const instances = listed.code === 0 ? (JSON.parse(listed.stdout) as Array<{ host: string; state: string }>) : [];
        const readyInstances = instances.filter((instance) => instance.state === "HEALTH_STATE_READY");
        return readyInstances.length === replicas ? readyInstances : undefined;
      },
      30_000,
    );
    // One leader places them, spread over both hosts (anti-affinity).
    expect(new Set(ready.map((instance) => instance.host))).toEqual(new Set(sidecars.map((sidecar) => sidecar.host)));
  });

  it("calls flow through each sidecar's local port and through the leading server", { timeout: 40_000 }, async () => {
    for (const { name } of sidecars) {
      const caller = new MeshCaller(sidecarLocal.get(name) ?? "");
      callers.push(caller);
      const reply = await caller.invoke("text.word-stats", "to be or not to be", { timeoutMs: 10_000 });
      expect({ version: reply.version, words: (JSON.parse(reply.payload.toString()) as { words: number }).words }, name).toEqual({ version: "1.0.0", words: 6 });
    }
    // Either replica's Invoke reaches an instance, and either lists the deployment.
    for (const name of servers) {
      const throughServer = await ctlOn(name, "invoke", "text.word-stats", "^1", "--data", "one two");
      expect({ code: throughServer.code, stderr: throughServer.stderr }, name).toEqual({ code: 0, stderr: "" });
      expect(throughServer.stdout).toContain("1.0.0");
      expect((await ctlOn(name, "deployments")).stdout, name).toContain("word-stats");
    }
  });

  it("a restarted sidecar rejoins with the certificate in its data volume, its join token spent", { timeout: 40_000 }, async () => {
    const [{ name }] = sidecars;
    const entry = service(compose, name);
    const before = sidecarProcesses.get(name);
    if (before) await stopProcess(before);
    const again = startProcess("/bin/sh", ["-c", sidecarScripts.get(name) ?? ""], envOf(entry));
    processes.push(again);
    const listening = await again.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    expect(listening.spiffeId).toBe(`spiffe://agentmesh.local/sidecar/${sidecars[0].host}`);
    const check = healthcheckArgv(entry).map((arg) => localize(arg, { "127.0.0.1:7431": String(listening.localAddress) }));
    const healthy = await run(check[0] ?? "", check.slice(1), 10_000, { env: pathEnv });
    expect({ code: healthy.code, output: `${healthy.stdout}${healthy.stderr}`.trim() }).toEqual({ code: 0, output: "status: SERVING" });
  });
});
