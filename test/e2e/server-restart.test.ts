// A server killed with SIGKILL and started again on the same --data-dir (the embedded
// SQLite store, no flags) must have lost nothing it acknowledged: deployments and their
// rollout state, join tokens (with their remaining uses), revocations, and the records
// of certificates it issued (so an identity issued before the restart can still be
// revoked by SPIFFE ID). The agents keep running and are adopted, not duplicated.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { MeshIdentity } from "../../sdk/ts/src/client/mesh-identity.js";
import { MeshCluster, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";
import { tempDir } from "../helpers/processes.js";

let cluster: MeshCluster | undefined;
const identities: MeshIdentity[] = [];

afterEach(async () => {
  for (const identity of identities.splice(0)) identity.close();
  await cluster?.close();
  cluster = undefined;
});

/** ctl credentials made of a non-admin identity, to see how the server treats its certificate. */
function credentialsOf(identity: MeshIdentity, caPem: string): string {
  const dir = tempDir("agentmesh-creds-");
  mkdirSync(dir, { recursive: true });
  const current = identity.source.current;
  if (!current) throw new Error("identity has no certificate");
  writeFileSync(join(dir, "admin-cert.pem"), current.chainPem.join(""));
  writeFileSync(join(dir, "admin-key.pem"), current.privateKeyPem, { mode: 0o600 });
  writeFileSync(join(dir, "ca.pem"), caPem);
  return dir;
}

describe("server restart on the embedded store (real processes)", () => {
  it("SIGKILL loses no deployment, rollout, join token use, revocation or certificate record; running agents are adopted", async () => {
    cluster = await MeshCluster.start({ serverArgs: ["--lost-instance-timeout-ms", "60000"] });
    const active = cluster;
    await active.startSidecar({ host: "host-a", capacity: 3 });
    const file = active.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 2 }));
    expect((await active.ctl("apply", "-f", file)).stdout).toBe("deployment/echo created\n");
    const before = (await active.waitForReady("echo", 2, { exclusive: true })).map((instance) => instance.instanceId).sort();
    await waitFor("rollout complete", async () => ((await active.ctl("rollout", "status", "echo")).stdout.includes("complete") ? true : undefined));
    const rolloutBefore = (await active.ctl("rollout", "status", "echo")).stdout;

    const caPem = readFileSync(active.caCertFile, "utf8");
    const tokenB = (await active.ctl("join-token", "--host", "host-b", "--agents", "*", "--uses", "2")).stdout.split("\n")[0] ?? "";
    const joinAs = async (host: string, joinToken: string) => {
      const identity = await MeshIdentity.join({ address: active.address, trustBundlePem: caPem, spiffeId: `spiffe://agentmesh.local/sidecar/${host}`, joinToken });
      identities.push(identity);
      return identity;
    };
    const revokedBefore = await joinAs("host-b", tokenB);
    const tokenC = (await active.ctl("join-token", "--host", "host-c", "--agents", "*")).stdout.split("\n")[0] ?? "";
    const issuedBefore = await joinAs("host-c", tokenC);
    const serial = revokedBefore.source.current?.serial ?? "";
    expect((await active.ctl("certs", "revoke", serial, "--reason", "lost laptop")).stdout.trim()).toBe("revoked 1 certificate(s)");
    const revokedCredentials = credentialsOf(revokedBefore, caPem);
    expect((await active.ctl("--credentials-dir", revokedCredentials, "agents")).stderr).toContain("revoked");

    await active.restartServer("SIGKILL");

    // The deployment and its rollout are still there: applying the same file changes nothing.
    expect((await active.ctl("apply", "-f", file)).stdout).toBe("deployment/echo unchanged\n");
    expect((await active.ctl("rollout", "status", "echo")).stdout).toBe(rolloutBefore);
    // The running agents re-register through their sidecar and are adopted, not replaced or doubled.
    const after = (await active.waitForReady("echo", 2, { exclusive: true })).map((instance) => instance.instanceId).sort();
    expect(after).toEqual(before);
    await waitFor("status 2/2 after the restart", async () => ((await active.deployment("echo")).deployment?.status?.readyReplicas === 2 ? true : undefined));
    expect((await active.instances("echo")).map((instance) => instance.instanceId).sort()).toEqual(before);

    // The revocation holds across the restart.
    expect((await active.ctl("--credentials-dir", revokedCredentials, "agents")).stderr).toContain("revoked");
    // The join token kept its one remaining use, and no more.
    await joinAs("host-b", tokenB);
    await expect(joinAs("host-b", tokenB)).rejects.toThrow(/join token invalid or expired/);
    // A certificate issued before the restart can still be revoked by SPIFFE ID.
    expect((await active.ctl("certs", "revoke", "spiffe://agentmesh.local/sidecar/host-c")).stdout.trim()).toBe("revoked 1 certificate(s)");
    expect((await active.ctl("--credentials-dir", credentialsOf(issuedBefore, caPem), "agents")).stderr).toContain("revoked");
  }, 90_000);
});
