import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type CallRecord, MeshCluster, type SidecarNode, echoDeploymentYaml, failures, startCallLoop } from "../helpers/mesh-cluster.js";

let cluster: MeshCluster | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

/** Two sidecars with room for 4 replicas plus the surge; calls go in through host-a. */
async function startMesh(): Promise<{ mesh: MeshCluster; entry: SidecarNode; sidecars: SidecarNode[] }> {
  const mesh = await MeshCluster.start();
  cluster = mesh;
  const entry = await mesh.startSidecar({ host: "host-a", capacity: 3 });
  const other = await mesh.startSidecar({ host: "host-b", capacity: 3 });
  const applied = await mesh.ctl("apply", "-f", mesh.writeFile("echo-1.0.0.yaml", echoDeploymentYaml({ version: "1.0.0", replicas: 4 })));
  expect(applied.code).toBe(0);
  await mesh.waitForReady("echo", 4, { exclusive: true });
  return { mesh, entry, sidecars: [entry, other] };
}

/** When each instance's drain began: the sidecar's own audit entry or the DRAINING event, whichever is earlier. */
function drainStarts(sidecars: readonly SidecarNode[], drainingSeenAtMs: ReadonlyMap<string, number>): Map<string, number> {
  const starts = new Map(drainingSeenAtMs);
  for (const sidecar of sidecars) {
    for (const line of readFileSync(join(sidecar.dataDir, "audit.log"), "utf8").split("\n")) {
      if (line.trim() === "") continue;
      const entry = JSON.parse(line) as { action: string; target: string; time: string };
      if (entry.action !== "agent.drain") continue;
      const atMs = Date.parse(entry.time);
      starts.set(entry.target, Math.min(starts.get(entry.target) ?? atMs, atMs));
    }
  }
  return starts;
}

const versionOf = (record: CallRecord) => (JSON.parse(record.payload as string) as { version: string }).version;

describe("rolling updates under load (real processes)", () => {
  it("1.0.0 → 1.1.0 over 4 replicas: no failed call, and no call reaches an instance after its drain began", async () => {
    const { mesh, entry, sidecars } = await startMesh();
    const oldIds = new Set((await mesh.instances("echo")).map((instance) => instance.instanceId));
    const watch = mesh.watch("test.echo");
    const loop = startCallLoop(entry.caller, "test.echo", () => JSON.stringify({ delayMs: 20 }), { concurrency: 3 });
    await loop.waitForCalls(30);

    const applied = await mesh.ctl("apply", "-f", mesh.writeFile("echo-1.1.0.yaml", echoDeploymentYaml({ version: "1.1.0", replicas: 4 })));
    expect(applied.stdout.trim()).toBe("deployment/echo configured");
    const status = await mesh.ctl("rollout", "status", "echo", "--timeout", "60s");
    expect(status.stderr).toBe("");
    expect(status.code).toBe(0);
    expect(status.stdout.trim().split("\n").at(-1)).toMatch(/4\/4 updated, 4 ready\s+1\.0\.0 → 1\.1\.0\s+complete/);
    const updated = await mesh.waitForReady("echo", 4, { exclusive: true });
    expect(updated.map((instance) => instance.manifest?.version)).toEqual(["1.1.0", "1.1.0", "1.1.0", "1.1.0"]);
    await loop.waitForCalls(30);
    const records = await loop.stop();

    expect(failures(records)).toEqual([]);
    const versions = new Set(records.map(versionOf));
    expect(versions).toEqual(new Set(["1.0.0", "1.1.0"]));

    const drainingSeenAtMs = new Map<string, number>();
    for (const { event, receivedAtMs } of watch.items) {
      const instance = event.instance;
      if (event.type !== WatchResponse_EventType.EVENT_TYPE_UPDATED || instance?.state !== HealthState.HEALTH_STATE_DRAINING) continue;
      if (!drainingSeenAtMs.has(instance.instanceId)) drainingSeenAtMs.set(instance.instanceId, receivedAtMs);
    }
    // Every old instance left through DRAINING, and only the old ones did.
    expect(new Set(drainingSeenAtMs.keys())).toEqual(oldIds);
    const drainBegan = drainStarts(sidecars, drainingSeenAtMs);
    const lateCalls = records.filter((record) => {
      const began = drainBegan.get(record.instanceId as string);
      return began !== undefined && record.startedAtMs >= began;
    });
    expect(lateCalls).toEqual([]);
    // The check had something to look at: old instances served calls right up to their drains.
    for (const instanceId of oldIds) expect(records.some((record) => record.instanceId === instanceId)).toBe(true);
  }, 120_000);

  it("1.1.0 that never becomes ready: automatic rollback, 1.0.0 keeps serving 4 replicas, calls keep succeeding", async () => {
    const { mesh, entry } = await startMesh();
    const oldIds = (await mesh.instances("echo")).map((instance) => instance.instanceId).sort();
    const loop = startCallLoop(entry.caller, "test.echo", () => JSON.stringify({ delayMs: 20 }), { concurrency: 2 });
    await loop.waitForCalls(20);

    const broken = echoDeploymentYaml({ version: "1.1.0", replicas: 4, mode: "never-ready", readyTimeout: "2s" });
    expect((await mesh.ctl("apply", "-f", mesh.writeFile("echo-1.1.0.yaml", broken))).code).toBe(0);
    const status = await mesh.ctl("rollout", "status", "echo", "--timeout", "60s");
    expect(status.code).toBe(1);
    expect(status.stdout.trim().split("\n").at(-1)).toMatch(/1\.0\.0 → 1\.1\.0\s+rolled_back: .+/);
    const json = await mesh.ctl("rollout", "status", "echo", "--once", "-o", "json");
    expect(JSON.parse(json.stdout)).toMatchObject({ phase: "rolled_back", fromVersion: "1.0.0", toVersion: "1.1.0" });

    const serving = await mesh.waitForReady("echo", 4, { exclusive: true });
    expect(serving.map((instance) => instance.manifest?.version)).toEqual(["1.0.0", "1.0.0", "1.0.0", "1.0.0"]);
    expect(serving.map((instance) => instance.instanceId).sort()).toEqual(oldIds);
    await loop.waitForCalls(20);
    const records = await loop.stop();
    expect(failures(records)).toEqual([]);
    expect(new Set(records.map(versionOf))).toEqual(new Set(["1.0.0"]));
  }, 120_000);
});
