// The orchestrator converges whatever happens to hosts: ghosts after a quick
// sidecar restart, a sidecar lost after a server restart, hosts that come back.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { RegisterResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { MeshCluster, echoDeploymentYaml, exampleDeploymentYaml, failures, startCallLoop, waitFor } from "../helpers/mesh-cluster.js";
import { manifest } from "../helpers/manifests.js";
import { call, signedRegister, signerFor } from "../helpers/mesh-pki.js";

let cluster: MeshCluster | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

function byHost(instances: readonly AgentInstance[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const instance of instances) counts[instance.host] = (counts[instance.host] ?? 0) + 1;
  return counts;
}

/**
 * Waits until the deployment has exactly `replicas` instances registered, all READY and
 * passing `accept`, and its status says so.
 */
async function waitForConverged(
  mesh: MeshCluster,
  name: string,
  replicas: number,
  accept: (instance: AgentInstance) => boolean,
  timeoutMs = 30_000,
): Promise<AgentInstance[]> {
  return waitFor(
    `${name} back at ${replicas}/${replicas} READY with nothing else registered`,
    async () => {
      const all = await mesh.instances(name);
      if (all.length !== replicas || all.some((instance) => instance.state !== HealthState.HEALTH_STATE_READY || !accept(instance))) return undefined;
      const { deployment } = await mesh.deployment(name);
      return deployment?.status?.readyReplicas === replicas && deployment.status.replicas === replicas ? all : undefined;
    },
    timeoutMs,
  );
}

// Slow heartbeats and a long reconnect grace: a restarted sidecar is back long before its old
// instances could be given up on by silence, so only its Hello (which does not list them) can tell.
const slowDetection = { serverArgs: ["--reconnect-grace-ms", "10000"] };
const slowHeartbeats = { heartbeatInterval: "5s" };

describe("orchestrator convergence (real processes)", () => {
  it("kill -9 of a sidecar restarted at once: its old instances are replaced and removed, 3/3 READY again", async () => {
    cluster = await MeshCluster.start(slowDetection);
    // Each sidecar also runs one unmanaged agent of its own (--manifest): nothing replaces those, but a ghost must still go.
    const loner = cluster.writeFile("loner.yaml", echoDeploymentYaml({ name: "loner" }));
    await cluster.startSidecar({ host: "host-a", capacity: 4, manifests: [loner] });
    await cluster.startSidecar({ host: "host-b", capacity: 4, manifests: [loner] });
    expect((await cluster.ctl("apply", "-f", cluster.writeFile("word-stats.yaml", exampleDeploymentYaml("word-stats", 3, slowHeartbeats)))).code).toBe(0);
    const placed = await cluster.waitForReady("word-stats", 3, { exclusive: true });
    const loners = (await cluster.waitForReady("loner", 2, { exclusive: true })).map((instance) => instance.instanceId);
    const counts = byHost(placed);
    const busiest = (counts["host-a"] ?? 0) >= (counts["host-b"] ?? 0) ? "host-a" : "host-b";
    const ghosts = placed.filter((instance) => instance.host === busiest).map((instance) => instance.instanceId);
    expect(ghosts.length).toBeGreaterThanOrEqual(2);

    const node = cluster.sidecars.find((sidecar) => sidecar.host === busiest);
    if (!node) throw new Error("no sidecar node");
    await cluster.restartSidecar(node);

    const converged = await waitForConverged(cluster, "word-stats", 3, (instance) => !ghosts.includes(instance.instanceId));
    expect(converged).toHaveLength(3);
    // The restarted sidecar registered a new unmanaged instance; the one it ran before is gone from ListAgents.
    const lonersAfter = await waitFor("the old unmanaged instance gone, a new one READY", async () => {
      const all = await cluster?.instances("loner");
      return all?.length === 2 && all.every((instance) => instance.state === HealthState.HEALTH_STATE_READY) ? all : undefined;
    });
    expect(lonersAfter.filter((instance) => loners.includes(instance.instanceId))).toHaveLength(1);
    const registered = await cluster.instances();
    expect(registered.filter((instance) => instance.state === HealthState.HEALTH_STATE_UNHEALTHY)).toEqual([]);
  }, 90_000);

  it("after a server restart, a sidecar killed and restarted at once: its old instances are replaced, not counted", async () => {
    cluster = await MeshCluster.start(slowDetection);
    await cluster.startSidecar({ host: "host-a", capacity: 4 });
    await cluster.startSidecar({ host: "host-b", capacity: 4 });
    const file = cluster.writeFile("word-stats.yaml", exampleDeploymentYaml("word-stats", 3, slowHeartbeats));
    expect((await cluster.ctl("apply", "-f", file)).code).toBe(0);
    await cluster.waitForReady("word-stats", 3, { exclusive: true });

    await cluster.restartServer();
    // The deployment survived the restart (the embedded store): nothing to apply again.
    expect((await cluster.ctl("apply", "-f", file)).stdout).toBe("deployment/word-stats unchanged\n");
    const reRegistered = await waitForConverged(cluster, "word-stats", 3, () => true);
    const counts = byHost(reRegistered);
    const busiest = (counts["host-a"] ?? 0) >= (counts["host-b"] ?? 0) ? "host-a" : "host-b";
    const ghosts = reRegistered.filter((instance) => instance.host === busiest).map((instance) => instance.instanceId);
    const node = cluster.sidecars.find((sidecar) => sidecar.host === busiest);
    if (!node) throw new Error("no sidecar node");
    await cluster.restartSidecar(node);

    const converged = await waitForConverged(cluster, "word-stats", 3, (instance) => !ghosts.includes(instance.instanceId));
    expect(converged).toHaveLength(3);
    const { deployment } = await cluster.deployment("word-stats");
    expect(deployment?.status?.phase).toBe("complete");
    expect((await cluster.instances()).filter((instance) => instance.state === HealthState.HEALTH_STATE_UNHEALTHY)).toEqual([]);
  }, 90_000);

  it("a host that comes back gets its share: replicas spread over both hosts, zero failed calls under steady load during the move", async () => {
    cluster = await MeshCluster.start();
    const stays = await cluster.startSidecar({ host: "host-a", capacity: 4 });
    const returning = await cluster.startSidecar({ host: "host-b", capacity: 4 });
    expect((await cluster.ctl("apply", "-f", cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 3 })))).code).toBe(0);
    const spread = await cluster.waitForReady("echo", 3, { exclusive: true });
    // Anti-affinity by default: both hosts got replicas from the start.
    expect(Object.keys(byHost(spread)).sort()).toEqual(["host-a", "host-b"]);

    await cluster.killSidecar(returning);
    await waitForConverged(cluster, "echo", 3, (instance) => instance.host === "host-a");

    const loop = startCallLoop(stays.caller, "test.echo", () => "{}", { concurrency: 2 });
    await loop.waitForCalls(20);
    await cluster.startSidecar(returning.options);
    const balanced = await waitFor(
      "replicas spread 2 + 1 over the hosts again, the move finished",
      async () => {
        const all = await waitForConverged(cluster as MeshCluster, "echo", 3, () => true, 1000).catch(() => undefined);
        if (!all) return undefined;
        const counts = byHost(all);
        const { deployment } = await (cluster as MeshCluster).deployment("echo");
        return counts["host-a"] === 2 && counts["host-b"] === 1 && !deployment?.status?.message.includes("moving") ? all : undefined;
      },
      30_000,
    );
    const moved = balanced.find((instance) => instance.host === "host-b")?.instanceId;
    await waitFor("a call answered by the instance on the returned host", () => (loop.records.some((record) => record.instanceId === moved) ? true : undefined));
    await loop.waitForCalls(20);
    const records = await loop.stop();
    expect(failures(records)).toEqual([]);
  }, 120_000);

  it("an env change with the same version is rolled out: every instance replaced, the new env answers; an identical apply changes nothing", async () => {
    cluster = await MeshCluster.start();
    const sidecar = await cluster.startSidecar({ host: "host-a", capacity: 4 });
    const before = cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 2, env: { ECHO_AGENT_FLAVOR: "plain" } }));
    expect((await cluster.ctl("apply", "-f", before)).code).toBe(0);
    const original = (await cluster.waitForReady("echo", 2, { exclusive: true })).map((instance) => instance.instanceId);
    const flavorOf = (payload: string | undefined) => (JSON.parse(payload ?? "{}") as { flavor?: string }).flavor;
    expect(flavorOf((await sidecar.caller.invoke("test.echo", "{}", { idempotent: true, timeoutMs: 3000 })).payload.toString("utf8"))).toBe("plain");

    const unchanged = await cluster.ctl("apply", "-f", before);
    expect(unchanged.stdout.trim()).toBe("deployment/echo unchanged");
    const { deployment: same } = await cluster.deployment("echo");
    expect(same?.generation).toBe(1);
    expect((await cluster.instances("echo")).map((instance) => instance.instanceId).sort()).toEqual([...original].sort());

    const loop = startCallLoop(sidecar.caller, "test.echo", () => "{}", { concurrency: 2 });
    await loop.waitForCalls(20);
    const changed = await cluster.ctl("apply", "-f", cluster.writeFile("echo-spicy.yaml", echoDeploymentYaml({ replicas: 2, env: { ECHO_AGENT_FLAVOR: "spicy" } })));
    expect(changed.stdout.trim()).toBe("deployment/echo configured");
    const status = await cluster.ctl("rollout", "status", "echo", "--timeout", "60s");
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/2\/2 updated, 2 ready .*1\.0\.0 \(revision [0-9a-f]{10}\) → 1\.0\.0 \(revision [0-9a-f]{10}\)\s+complete/);
    const replaced = await waitForConverged(cluster, "echo", 2, (instance) => !original.includes(instance.instanceId));
    const replacedIds = new Set(replaced.map((instance) => instance.instanceId));
    await waitFor("calls answered by the new instances", () => (loop.records.filter((record) => replacedIds.has(record.instanceId ?? "")).length >= 10 ? true : undefined));
    const records = await loop.stop();
    expect(failures(records)).toEqual([]);
    for (const record of records.filter((entry) => replacedIds.has(entry.instanceId ?? ""))) expect(flavorOf(record.payload)).toBe("spicy");
  }, 120_000);

  it("ctl stop and restart of an instance its sidecar refuses: non-zero exit and the sidecar's message", async () => {
    // No session ever reports the stray instance: keep it from being collected as lost while ctl runs.
    cluster = await MeshCluster.start({ serverArgs: ["--lost-instance-timeout-ms", "600000"] });
    await cluster.startSidecar({ host: "host-a", capacity: 1 });
    // Registered in host-a's name but not run by it: the registry points at a sidecar that does not know it.
    const certificatePem = readFileSync(join(cluster.credentialsDir, "admin-cert.pem"), "utf8");
    const spiffeId = (new X509Certificate(certificatePem).subjectAltName ?? "").replace(/^URI:/, "");
    const privateKey = createPrivateKey(readFileSync(join(cluster.credentialsDir, "admin-key.pem"), "utf8"));
    const { request } = signedRegister(signerFor({ spiffeId, privateKey }), "agentmesh.local", manifest({ name: "stray" }), { instanceId: "stray-1" });
    const registered = await call<RegisterResponse>((metadata, options, callback) => cluster?.admin.registry.register(request, metadata, options, callback));
    expect(registered.instance?.host).toBe("host-a");

    const stopped = await cluster.ctl("stop", "stray-1");
    expect(stopped.code).not.toBe(0);
    expect(stopped.stdout).toBe("");
    expect(stopped.stderr.trim()).toBe("error: sidecar host-a refused stop: instance not on this sidecar (FAILED_PRECONDITION)");
    const restarted = await cluster.ctl("restart", "stray-1");
    expect(restarted.code).not.toBe(0);
    expect(restarted.stderr.trim()).toBe("error: sidecar host-a refused restart: no supervised instance with this id (FAILED_PRECONDITION)");
  }, 60_000);
});
