// Sidecars and ctl given several control-plane replicas (real processes on one
// PostgreSQL + Redis): when the replica a sidecar is connected to dies (SIGKILL), the
// sidecar moves to the next address, says Hello there and re-registers its agent
// (same instance, not restarted); ctl given both addresses works while the first is
// dead. The failover time (kill → the sidecar's Connect stream welcomed by the other
// replica) is printed. Replicas are active/active (docs/adr/0008): the sidecar is on the
// replica that does not lead, so its agent is placed by commands routed across replicas
// (docs/adr/0009), and its failover waits for no election.
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { echoDeploymentYaml, stopProcess, waitFor, waitForLogAfter } from "../helpers/mesh-cluster.js";
import { type ThrowawayPostgres, startPostgres } from "../helpers/postgres.js";
import { type ThrowawayRedis, startRedis } from "../helpers/redis.js";
import { type ManagedProcess, cliPath, run, startProcess, tempDir } from "../helpers/processes.js";
import { freePort } from "../helpers/server-binaries.js";
import { writeFileSync } from "node:fs";

let postgres: ThrowawayPostgres;
let redis: ThrowawayRedis;
const processes: ManagedProcess[] = [];

beforeAll(async () => {
  [postgres, redis] = await Promise.all([startPostgres(), startRedis()]);
}, 60_000);
afterAll(async () => {
  await Promise.all([postgres?.destroy(), redis?.destroy()]);
});
afterEach(async () => {
  // Sidecars first (their agents stop with them), then the servers.
  for (const managed of processes.splice(0).reverse()) await stopProcess(managed, "SIGTERM");
});

const logTimeMs = (line: Record<string, unknown>) => Date.parse(String(line.time));

describe("several --server addresses (real processes, two replicas)", () => {
  it("a sidecar fails over to the other replica and re-registers its agent; ctl with both addresses works while the first is dead", async () => {
    const url = await postgres.createDatabase();
    const [firstDir, secondDir, credentials, sidecarDir] = [tempDir(), tempDir(), tempDir(), tempDir()];
    const [firstPort, secondPort] = [await freePort(), await freePort()];
    const [first, second] = [`127.0.0.1:${firstPort}`, `127.0.0.1:${secondPort}`];
    const replica = (dataDir: string, port: number, id: string, caArgs: string[] = []) => {
      const server = startProcess(process.execPath, [cliPath, "server", "--port", String(port), "--http-port", "0", "--data-dir", dataDir, "--server-id", id, "--store", "postgres", "--postgres-url", url, "--redis-url", redis.url, ...caArgs]);
      processes.push(server);
      return server;
    };
    const leader = replica(firstDir, firstPort, "server-1");
    await leader.waitForLog((line) => line.msg === "elected leader: reconciling deployments", 20_000);
    await leader.waitForLog((line) => line.msg === "listening", 20_000);
    const follower = replica(secondDir, secondPort, "server-2", ["--ca-cert", join(firstDir, "ca-cert.pem"), "--ca-key", join(firstDir, "ca-key.pem")]);
    await follower.waitForLog((line) => line.msg === "listening", 20_000);
    expect((await run(process.execPath, [cliPath, "ctl", "init-admin", "--data-dir", firstDir, "--out", credentials])).code).toBe(0);
    // The comma form for ctl, the repeated flag for the sidecar: both are documented.
    const ctl = (...args: string[]) => run(process.execPath, [cliPath, "ctl", "--server", `${second},${first}`, "--credentials-dir", credentials, ...args]);
    const file = join(credentials, "echo.yaml");
    writeFileSync(file, echoDeploymentYaml({ replicas: 1 }));
    expect((await ctl("apply", "-f", file)).stdout).toBe("deployment/echo created\n");
    const token = (await ctl("join-token", "--host", "host-a", "--agents", "*")).stdout.split("\n")[0] ?? "";

    const sidecar = startProcess(process.execPath, [
      cliPath, "sidecar", "--server", second, "--server", first, "--host", "host-a", "--join-token", token, "--ca-cert", join(credentials, "ca.pem"),
      "--inbound-port", "0", "--local-port", "0", "--http-port", "0", "--data-dir", sidecarDir, "--capacity", "1",
    ]);
    processes.push(sidecar);
    await sidecar.waitForLog((line) => line.msg === "sidecar listening", 20_000);
    const readyEcho = async () => {
      const listed = await ctl("-o", "json", "agents", "--name", "echo", "--state", "ready");
      if (listed.code !== 0) return undefined;
      const instances = JSON.parse(listed.stdout) as Array<{ instanceId: string }>;
      return instances.length === 1 ? instances[0]?.instanceId : undefined;
    };
    // Placed by the leader on a sidecar held by the other replica: the start went through the change log.
    const instanceId = await waitFor("echo READY", readyEcho, 20_000);

    const fromIndex = sidecar.lines.length;
    const killedAtMs = Date.now();
    await follower.stop("SIGKILL");
    const reconnected = await waitForLogAfter(sidecar, fromIndex, (line) => line.msg === "connected to control plane" && line.server === first, 15_000);
    const failoverMs = logTimeMs(reconnected) - killedAtMs;
    console.log(`sidecar failover: kill -9 of its replica → Connect welcomed by the other ${failoverMs} ms`);

    // ctl tries the dead address, then the other; the agent is the same instance, re-registered, not restarted.
    expect(await waitFor("echo READY through the surviving replica", readyEcho, 15_000)).toBe(instanceId);
    expect(sidecar.lines.slice(fromIndex).filter((line) => line.msg === "agent process state changed" && line.state === "STARTING")).toEqual([]);
    expect((await ctl("deployments")).stdout).toContain("echo");
  }, 120_000);
});
