// Session affinity through real sidecars: calls with the same session key (the SDK's
// sessionKey option, or the agentmesh-session-key metadata entry of a plain client) land
// on one instance, while different keys spread over the replicas.
import { afterEach, describe, expect, it } from "vitest";
import { MeshCluster, echoDeploymentYaml } from "../helpers/mesh-cluster.js";

let cluster: MeshCluster | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

describe("session affinity (real processes)", () => {
  it("keeps each session on one instance and spreads sessions over the replicas", async () => {
    cluster = await MeshCluster.start();
    await cluster.startSidecar({ host: "host-a", manifests: [cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 3 }))] });
    const calling = await cluster.startSidecar({ host: "host-b" });
    await cluster.waitForReady("echo", 3);
    const servedBy = async (options: { sessionKey?: string; metadata?: Record<string, string> }) =>
      (await calling.caller.invoke("test.echo", "{}", { timeoutMs: 5000, ...options })).instanceId;

    const homes = new Set<string>();
    for (let session = 0; session < 12; session += 1) {
      const sessionKey = `conversation-${session}`;
      const home = await servedBy({ sessionKey });
      homes.add(home);
      for (let call = 0; call < 4; call += 1) expect(await servedBy({ sessionKey })).toBe(home);
      // A plain client says the same with the metadata key.
      expect(await servedBy({ metadata: { "agentmesh-session-key": sessionKey } })).toBe(home);
    }
    expect(homes.size).toBeGreaterThan(1);
  }, 60_000);
});
