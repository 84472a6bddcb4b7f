import { afterEach, describe, expect, it } from "vitest";
import {
  type ApplyDeploymentResponse,
  type ScaleDeploymentResponse,
} from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { parseDeploymentYaml } from "../../services/orchestrator/deployment-yaml.js";
import { MeshCluster, echoDeploymentYaml, exampleDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";
import { call } from "../helpers/mesh-pki.js";

let cluster: MeshCluster | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

const ids = (instances: { instanceId: string }[]) => instances.map((instance) => instance.instanceId).sort();

describe("agent lifecycle through ctl and the API (real processes)", () => {
  it("ctl: apply starts READY instances, stop replaces one, restart brings the same one back, scale 2→1", async () => {
    cluster = await MeshCluster.start();
    const sidecar = await cluster.startSidecar({ host: "host-a", capacity: 4 });
    const file = cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 2 }));

    const applied = await cluster.ctl("apply", "-f", file);
    expect(applied.stderr).toBe("");
    expect(applied.stdout.trim()).toBe("deployment/echo created");
    const [first, second] = ids(await cluster.waitForReady("echo", 2, { exclusive: true }));
    const listed = await cluster.ctl("deployments");
    expect(listed.stdout).toMatch(/^echo\s+1\.0\.0\s+2\/2\s+2\s+complete\s/m);

    // Stop: drained, stopped and deregistered; the reconciler starts a replacement.
    const stopped = await cluster.ctl("stop", first as string);
    expect(stopped.code).toBe(0);
    expect(stopped.stdout.trim()).toBe(`${first} stopped`);
    await sidecar.waitForAgentState(first as string, "stopped");
    const afterStop = await waitFor("a replacement READY and the stopped instance gone", async () => {
      const ready = await cluster?.waitForReady("echo", 2, { exclusive: true, timeoutMs: 200 }).catch(() => undefined);
      return ready && !ids(ready).includes(first as string) ? ready : undefined;
    });
    expect(ids(afterStop)).toContain(second);

    // Restart: the same instance id, a new process, READY again.
    const before = sidecar.agentStates(second).at(-1);
    const fromIndex = sidecar.process.lines.length;
    const restarted = await cluster.ctl("restart", second as string);
    expect(restarted.code).toBe(0);
    const readyAgain = await sidecar.waitForAgentState(second as string, "ready", fromIndex);
    expect(readyAgain.pid).toBeGreaterThan(0);
    expect(readyAgain.pid).not.toBe(before?.pid);
    const afterRestart = await cluster.waitForReady("echo", 2, { exclusive: true });
    expect(ids(afterRestart)).toEqual(ids(afterStop));

    const scaled = await cluster.ctl("scale", "echo", "1");
    expect(scaled.stdout.trim()).toBe("deployment/echo scaled to 1");
    const [left] = await cluster.waitForReady("echo", 1, { exclusive: true });
    expect(ids(afterStop)).toContain(left?.instanceId);
    await waitFor("ctl deployments to show 1/1", async () => {
      const shown = await cluster?.ctl("deployments");
      return /^echo\s+1\.0\.0\s+1\/1\s/m.test(shown?.stdout ?? "") ? true : undefined;
    });
  }, 90_000);

  it("API: ApplyDeployment, StopAgent, RestartAgent and ScaleDeployment on a plain AgentService agent", async () => {
    cluster = await MeshCluster.start();
    const sidecar = await cluster.startSidecar({ host: "host-a", capacity: 4 });
    const admin = cluster.admin;
    const [deployment] = parseDeploymentYaml(exampleDeploymentYaml("json-validator", 2));

    const applied = await call<ApplyDeploymentResponse>((metadata, options, callback) => admin.orchestrator.applyDeployment({ deployment }, metadata, options, callback));
    expect(applied.changed).toBe(true);
    const again = await call<ApplyDeploymentResponse>((metadata, options, callback) => admin.orchestrator.applyDeployment({ deployment }, metadata, options, callback));
    expect(again.changed).toBe(false);
    const [first, second] = ids(await cluster.waitForReady("json-validator", 2, { exclusive: true }));
    const described = await cluster.deployment("json-validator");
    expect(ids(described.instances)).toEqual([first, second]);
    await waitFor("status 2 ready", async () => ((await cluster?.deployment("json-validator"))?.deployment?.status?.readyReplicas === 2 ? true : undefined));

    await call((metadata, options, callback) => admin.orchestrator.stopAgent({ instanceId: first as string, graceMs: 2000 }, metadata, options, callback));
    await sidecar.waitForAgentState(first as string, "stopped");
    const afterStop = await waitFor("a replacement READY and the stopped instance gone", async () => {
      const ready = await cluster?.waitForReady("json-validator", 2, { exclusive: true, timeoutMs: 200 }).catch(() => undefined);
      return ready && !ids(ready).includes(first as string) ? ready : undefined;
    });

    const before = sidecar.agentStates(second).at(-1);
    const fromIndex = sidecar.process.lines.length;
    await call((metadata, options, callback) => admin.orchestrator.restartAgent({ instanceId: second as string }, metadata, options, callback));
    const readyAgain = await sidecar.waitForAgentState(second as string, "ready", fromIndex);
    expect(readyAgain.pid).not.toBe(before?.pid);
    // The restarted instance answers calls again (plain unary AgentService.Invoke through the sidecar).
    const answer = await waitFor("the restarted instance to answer", async () => {
      const result = await sidecar.caller.invoke("json.validate", JSON.stringify({ schema: { type: "integer" }, document: 3 }), { timeoutMs: 2000 });
      return result.instanceId === second ? result : undefined;
    });
    expect(JSON.parse(answer.payload.toString())).toEqual({ valid: true, errors: [] });

    const scaled = await call<ScaleDeploymentResponse>((metadata, options, callback) =>
      admin.orchestrator.scaleDeployment({ name: "json-validator", replicas: 1 }, metadata, options, callback),
    );
    expect(scaled.deployment?.replicas).toBe(1);
    const [left] = await cluster.waitForReady("json-validator", 1, { exclusive: true });
    expect(ids(afterStop)).toContain(left?.instanceId);
    expect(left?.state).toBe(HealthState.HEALTH_STATE_READY);
  }, 90_000);
});
