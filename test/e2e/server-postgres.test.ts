// `--store postgres`: the same durability as the embedded store, with the state in
// PostgreSQL (and Redis for wake-ups), so a server can come back with an empty
// --data-dir apart from its CA. While PostgreSQL is down the server says so (NOT_SERVING,
// /readyz 503) and refuses writes with UNAVAILABLE rather than accept and lose them; when
// it returns, the server serves again with nothing lost.
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MeshCluster, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";
import { type ThrowawayPostgres, startPostgres } from "../helpers/postgres.js";
import { type ThrowawayRedis, startRedis } from "../helpers/redis.js";
import { type ManagedProcess, cliPath, run, startProcess, tempDir, toolPath } from "../helpers/processes.js";
import { freePort } from "../helpers/server-binaries.js";
import { Metadata, type ServiceError } from "@grpc/grpc-js";
import { MeshIdentity } from "../../sdk/ts/src/client/mesh-identity.js";
import { RegisterRequest, RegistryServiceClient } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { manifest } from "../helpers/manifests.js";

let postgres: ThrowawayPostgres;
let redis: ThrowawayRedis;
let cluster: MeshCluster | undefined;
const servers: ManagedProcess[] = [];

beforeAll(async () => {
  [postgres, redis] = await Promise.all([startPostgres(), startRedis()]);
}, 60_000);

afterAll(async () => {
  await Promise.all([postgres?.destroy(), redis?.destroy()]);
});

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
  for (const server of servers.splice(0)) await server.stop("SIGKILL");
});

/** A Register signed once by the admin identity in `credentials`, to send as it is to any replica. */
async function signedRegister(credentials: string): Promise<{ identity: MeshIdentity; envelope: SignedEnvelope }> {
  const identity = await MeshIdentity.fromFiles({ certFile: join(credentials, "admin-cert.pem"), keyFile: join(credentials, "admin-key.pem"), caFile: join(credentials, "ca.pem") });
  const inner = RegisterRequest.fromPartial({ manifest: manifest({ name: "replayed" }), host: "outside" });
  const envelope = identity.sign(RegisterRequest.encode(inner).finish(), "/agentmesh.v1.RegistryService/Register", "agentmesh.v1.RegisterRequest", `spiffe://${identity.trustDomain}/server`);
  return { identity, envelope };
}

function sendRegister(port: number, identity: MeshIdentity, envelope: SignedEnvelope): Promise<{ code: number; details: string }> {
  const client = new RegistryServiceClient(`127.0.0.1:${port}`, identity.channelCredentials(), { "grpc.ssl_target_name_override": "agentmesh-server" });
  return new Promise<{ code: number; details: string }>((resolve) =>
    client.register(RegisterRequest.fromPartial({ envelope }), new Metadata(), { deadline: Date.now() + 10_000 }, (error: ServiceError | null) =>
      resolve(error ? { code: error.code, details: error.details } : { code: 0, details: "" }),
    ),
  ).finally(() => client.close());
}

const readyz = async (port: number) => (await fetch(`http://127.0.0.1:${port}/readyz`)).status;

describe("server on PostgreSQL + Redis (real processes)", () => {
  it("keeps deployments and join tokens in PostgreSQL; a PostgreSQL outage is NOT_SERVING and refused writes, then recovers with nothing lost", async () => {
    const url = await postgres.createDatabase();
    cluster = await MeshCluster.start({ serverArgs: ["--store", "postgres", "--postgres-url", url, "--redis-url", redis.url] });
    const active = cluster;
    const file = active.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 }));
    expect((await active.ctl("apply", "-f", file)).stdout).toBe("deployment/echo created\n");
    const token = (await active.ctl("join-token", "--host", "host-a", "--agents", "*")).stdout.split("\n")[0] ?? "";
    expect(existsSync(join(active.serverDataDir, "state.db"))).toBe(false);

    await active.restartServer("SIGKILL");
    expect((await active.ctl("apply", "-f", file)).stdout).toBe("deployment/echo unchanged\n");

    await postgres.stop();
    await waitFor("/readyz 503", async () => ((await readyz(active.httpPort)) === 503 ? true : undefined));
    const probeArgs = ["-addr", active.address, "-tls", "-tls-ca-cert", active.caCertFile, "-tls-client-cert", join(active.credentialsDir, "admin-cert.pem"), "-tls-client-key", join(active.credentialsDir, "admin-key.pem")];
    const probe = await run(toolPath("grpc-health-probe"), probeArgs);
    expect(probe.stdout + probe.stderr).toContain("NOT_SERVING");
    const refused = await active.ctl("apply", "-f", active.writeFile("other.yaml", echoDeploymentYaml({ replicas: 1, name: "other" })));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("UNAVAILABLE");

    await postgres.start();
    await waitFor("/readyz 200", async () => ((await readyz(active.httpPort)) === 200 ? true : undefined));
    const healthy = await run(toolPath("grpc-health-probe"), probeArgs);
    expect({ code: healthy.code, output: (healthy.stdout + healthy.stderr).trim() }).toEqual({ code: 0, output: "status: SERVING" });
    const listed = await active.ctl("deployments");
    expect(listed.stdout).toContain("echo");
    expect(listed.stdout).not.toContain("other");
    // The join token made before the restart and the outage still works, once.
    const sidecar = await active.startSidecar({ host: "host-a", capacity: 1, joinToken: token });
    expect(sidecar.host).toBe("host-a");
    await active.waitForReady("echo", 1);
  }, 120_000);

  it("three replicas serve at once: an apply through any replica is reconciled by the leader, every replica discovers the agent, and a new leader takes over when the leader is killed", async () => {
    const url = await postgres.createDatabase();
    const dataDirs = [tempDir(), tempDir(), tempDir()];
    const [firstDir, credentials] = [dataDirs[0] as string, tempDir()];
    const ports = [await freePort(), await freePort(), await freePort()];
    const replica = (index: number, caArgs: string[] = []) => {
      const dataDir = dataDirs[index] as string;
      const server = startProcess(process.execPath, [cliPath, "server", "--port", String(ports[index]), "--http-port", "0", "--data-dir", dataDir, "--server-id", `server-${index + 1}`, "--store", "postgres", "--postgres-url", url, "--redis-url", redis.url, ...caArgs]);
      servers.push(server);
      return server;
    };
    const first = replica(0);
    await first.waitForLog((line) => line.msg === "elected leader: reconciling deployments", 20_000);
    // The replicas share one CA: the others are given the first's.
    const caArgs = ["--ca-cert", join(firstDir, "ca-cert.pem"), "--ca-key", join(firstDir, "ca-key.pem")];
    const others = [replica(1, caArgs), replica(2, caArgs)];
    const started = await Promise.all([first, ...others].map((server) => server.waitForLog((line) => line.msg === "agentmesh server started", 20_000)));
    // Every replica listens and is ready: a Service or a shared DNS name may send anything anywhere.
    for (const line of started) expect(await readyz(Number(line.httpPort))).toBe(200);
    expect((await run(process.execPath, [cliPath, "ctl", "init-admin", "--data-dir", firstDir, "--out", credentials])).code).toBe(0);
    const ctl = (index: number, ...args: string[]) => run(process.execPath, [cliPath, "ctl", "--server", `127.0.0.1:${ports[index]}`, "--credentials-dir", credentials, ...args]);

    // A sidecar on the leader; the deployment applied through the third replica.
    const token = (await ctl(1, "join-token", "--host", "host-a", "--agents", "*")).stdout.split("\n")[0] ?? "";
    const sidecar = startProcess(process.execPath, [cliPath, "sidecar", "--server", `127.0.0.1:${ports[0]}`, "--host", "host-a", "--join-token", token, "--ca-cert", join(credentials, "ca.pem"), "--inbound-port", "0", "--local-port", "0", "--http-port", "0", "--data-dir", tempDir(), "--capacity", "1"]);
    servers.push(sidecar);
    await sidecar.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    const file = join(credentials, "echo.yaml");
    writeFileSync(file, echoDeploymentYaml({ replicas: 1 }));
    expect((await ctl(2, "apply", "-f", file)).stdout).toBe("deployment/echo created\n");
    // Registered through the leader, READY on every replica's Discover.
    for (const index of [2, 1, 0]) {
      await waitFor(`echo READY on replica ${index + 1}`, async () => {
        const found = await ctl(index, "discover", "test.echo", "-o", "json");
        return found.code === 0 && (JSON.parse(found.stdout) as unknown[]).length === 1 ? true : undefined;
      });
    }
    // Rollout progress written by the leader is served by the others.
    await waitFor("rollout status through replica 2", async () => ((await ctl(1, "rollout", "status", "echo", "--timeout", "5s")).code === 0 ? true : undefined));
    // The replay cache is shared (Redis): what one replica accepted, another refuses.
    const { identity, envelope } = await signedRegister(credentials);
    expect(await sendRegister(ports[0] as number, identity, envelope)).toEqual({ code: 0, details: "" });
    expect(await sendRegister(ports[1] as number, identity, envelope)).toEqual({ code: 16, details: "nonce replayed" });

    await first.stop("SIGKILL");
    const elected = await Promise.race(others.map((server) => server.waitForLog((line) => line.msg === "elected leader: reconciling deployments", 15_000)));
    expect(elected).toBeDefined();
    // The survivors still serve every RPC, and an apply through either is reconciled.
    expect((await ctl(2, "apply", "-f", file)).stdout).toBe("deployment/echo unchanged\n");
    expect((await ctl(1, "deployments")).stdout).toContain("echo");
    // One audit chain in PostgreSQL for every replica: what the old leader recorded, the others continue.
    writeFileSync(join(credentials, "other.yaml"), echoDeploymentYaml({ replicas: 1, name: "other" }));
    expect((await ctl(1, "apply", "-f", join(credentials, "other.yaml"))).stdout).toBe("deployment/other created\n");
    const tail = JSON.parse((await ctl(1, "-o", "json", "audit", "tail", "-n", "100")).stdout) as Array<{ seq: number; action: string; target: string }>;
    const applied = tail.filter((entry) => entry.action === "deployment.apply").map((entry) => entry.target);
    expect(applied).toEqual(["echo", "other"]);
    expect(tail.map((entry) => entry.seq)).toEqual(tail.map((_, index) => index + 1));
    expect(dataDirs.map((dir) => existsSync(join(dir, "audit.log")))).toEqual([false, false, false]);
    const verified = await run(process.execPath, [cliPath, "ctl", "audit", "verify", "--postgres-url", url]);
    expect({ code: verified.code, stdout: verified.stdout }).toEqual({ code: 0, stdout: `ok: ${tail.length} entries, chain intact, ends at the head row (seq ${tail.length})\n` });
    const probe = await run(toolPath("grpc-health-probe"), ["-addr", `127.0.0.1:${ports[1]}`, "-tls", "-tls-ca-cert", join(credentials, "ca.pem"), "-tls-client-cert", join(credentials, "admin-cert.pem"), "-tls-client-key", join(credentials, "admin-key.pem")]);
    expect((probe.stdout + probe.stderr).trim()).toBe("status: SERVING");
  }, 120_000);
});
