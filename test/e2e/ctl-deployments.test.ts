// ctl commands that must do what they say, against a real server, sidecar and agents:
// apply answers created / configured / unchanged, drain finishes (drain → stop →
// replacement) even on a full sidecar, rollout status says why it waits and gives up
// with the reason, and delete drains and stops what runs before the deployment goes.
import { afterEach, describe, expect, it } from "vitest";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { MeshCluster, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";

let cluster: MeshCluster | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

const lines = (text: string) => text.trim().split("\n");
const capacityReason = (waiting: number) =>
  `${waiting} instance(s) wait for sidecar capacity: no connected sidecar has room (start a sidecar, or raise a sidecar's --capacity)`;

describe("ctl deployments (real processes)", () => {
  it("apply says created, then configured for a change, then unchanged", async () => {
    cluster = await MeshCluster.start();
    await cluster.startSidecar({ host: "host-a", capacity: 2 });
    const first = await cluster.ctl("apply", "-f", cluster.writeFile("one.yaml", echoDeploymentYaml({ replicas: 1 })));
    expect({ code: first.code, stdout: first.stdout, stderr: first.stderr }).toEqual({ code: 0, stdout: "deployment/echo created\n", stderr: "" });
    const scaled = cluster.writeFile("two.yaml", echoDeploymentYaml({ replicas: 2 }));
    expect((await cluster.ctl("apply", "-f", scaled)).stdout).toBe("deployment/echo configured\n");
    expect((await cluster.ctl("apply", "-f", scaled)).stdout).toBe("deployment/echo unchanged\n");
    const json = JSON.parse((await cluster.ctl("apply", "-f", scaled, "-o", "json")).stdout) as Array<{ name: string; outcome: string }>;
    expect(json).toMatchObject([{ name: "echo", outcome: "unchanged" }]);
    const missing = await cluster.ctl("apply", "-f", "/nonexistent/echo.yaml");
    expect({ code: missing.code, stderr: missing.stderr }).toEqual({ code: 1, stderr: "error: cannot read -f /nonexistent/echo.yaml: no such file or directory\n" });
  }, 60_000);

  it("drain on a full sidecar: drained, stopped, replaced, with each step printed; the slot is not held for ever", async () => {
    cluster = await MeshCluster.start();
    // Room for exactly the two replicas: the replacement can only use the drained one's slot.
    await cluster.startSidecar({ host: "host-a", capacity: 2 });
    expect((await cluster.ctl("apply", "-f", cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 2 })))).code).toBe(0);
    const [target, kept] = (await cluster.waitForReady("echo", 2, { exclusive: true })).map((instance) => instance.instanceId).sort();
    await waitFor("the deployment at 2/2", async () => ((await cluster?.deployment("echo"))?.deployment?.status?.readyReplicas === 2 ? true : undefined));

    const drained = await cluster.ctl("drain", target as string, "--timeout", "40s");
    expect({ code: drained.code, stderr: drained.stderr }).toEqual({ code: 0, stderr: "" });
    const printed = lines(drained.stdout);
    const replacement = (await cluster.waitForReady("echo", 2, { exclusive: true })).map((instance) => instance.instanceId).find((id) => id !== kept) as string;
    expect(replacement).not.toBe(target);
    expect(printed.slice(0, 4)).toEqual([
      `${target} draining: out of routing, in-flight calls finish`,
      `${target} drained`,
      `${target} stopping; deployment/echo places a replacement`,
      `${target} stopped`,
    ]);
    expect(printed).toContain(`replacement ${replacement} READY on host-a`);
    expect(printed.at(-1)).toBe("deployment/echo 2/2 READY");
    // Each step once: progress, not a poll log.
    expect(new Set(printed).size).toBe(printed.length);
    const instances = await cluster.instances("echo");
    expect(instances.map((instance) => instance.instanceId).sort()).toEqual([kept, replacement].sort());
    expect(instances.every((instance) => instance.state === HealthState.HEALTH_STATE_READY)).toBe(true);
  }, 90_000);

  it("rollout status with too little capacity says why, prints changes only, and exits 1 with the reason on timeout", async () => {
    cluster = await MeshCluster.start();
    await cluster.startSidecar({ host: "host-a", capacity: 1 });
    expect((await cluster.ctl("apply", "-f", cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 2 })))).code).toBe(0);
    await cluster.waitForReady("echo", 1, { exclusive: true });
    await waitFor("the rollout to count the one it cannot place", async () => {
      const status = await cluster?.ctl("rollout", "status", "echo", "--once", "-o", "json");
      return status && (JSON.parse(status.stdout) as { waitingForCapacity?: number }).waitingForCapacity === 1 ? true : undefined;
    });

    const status = await cluster.ctl("rollout", "status", "echo", "--timeout", "3s");
    expect(status.code).toBe(1);
    expect(status.stderr).toBe(`error: rollout of echo not complete after 3s: ${capacityReason(1)}\n`);
    // Polled every 500 ms for 3 s, but nothing changed: one line.
    expect(lines(status.stdout)).toHaveLength(1);
    expect(status.stdout).toContain(`; ${capacityReason(1)}`);

    // ctl deployments shows the reason in the table, not only in -o json.
    const table = await cluster.ctl("deployments");
    expect(lines(table.stdout)[0]).toMatch(/^NAME\s+VERSION\s+READY\s+UPDATED\s+PHASE\s+AGE\s+MESSAGE$/);
    expect(lines(table.stdout)[1]).toMatch(/^echo\s+1\.0\.0\s+1\/2\s.*1 instance\(s\) wait for sidecar capacity$/);
  }, 60_000);

  it("delete drains and stops the instances, then the deployment is gone; deleting it again is NOT_FOUND", async () => {
    cluster = await MeshCluster.start();
    await cluster.startSidecar({ host: "host-a", capacity: 2 });
    expect((await cluster.ctl("apply", "-f", cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 2 })))).code).toBe(0);
    await cluster.waitForReady("echo", 2, { exclusive: true });

    const deleted = await cluster.ctl("delete", "echo", "--timeout", "40s");
    expect({ code: deleted.code, stderr: deleted.stderr }).toEqual({ code: 0, stderr: "" });
    const printed = lines(deleted.stdout);
    expect(printed[0]).toBe("deployment/echo deleting: its 2 instance(s) are drained, then stopped");
    expect(printed.at(-1)).toBe("deployment/echo deleted");
    expect(await cluster.instances("echo")).toEqual([]);
    expect((await cluster.ctl("deployments")).stdout).not.toMatch(/^echo\s/m);

    const again = await cluster.ctl("delete", "echo");
    expect({ code: again.code, stderr: again.stderr }).toEqual({ code: 1, stderr: "error: deployment not found (NOT_FOUND)\n" });
    const nothing = await cluster.ctl("delete");
    expect({ code: nothing.code, stderr: nothing.stderr }).toEqual({ code: 2, stderr: "error: delete: name a deployment, or -f a file\n" });
  }, 90_000);
});
