// `--store postgres`: the same durability as the embedded store, with the state in
// PostgreSQL (and Redis for wake-ups), so a server can come back with an empty
// --data-dir apart from its CA. While PostgreSQL is down the server says so (NOT_SERVING,
// /readyz 503) and refuses writes with UNAVAILABLE rather than accept and lose them; when
// it returns, the server serves again with nothing lost.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MeshCluster, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";
import { type ThrowawayPostgres, startPostgres } from "../helpers/postgres.js";
import { type ThrowawayRedis, startRedis } from "../helpers/redis.js";
import { run, toolPath } from "../helpers/processes.js";

let postgres: ThrowawayPostgres;
let redis: ThrowawayRedis;
let cluster: MeshCluster | undefined;

beforeAll(async () => {
  [postgres, redis] = await Promise.all([startPostgres(), startRedis()]);
}, 60_000);

afterAll(async () => {
  await Promise.all([postgres?.destroy(), redis?.destroy()]);
});

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

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
});
