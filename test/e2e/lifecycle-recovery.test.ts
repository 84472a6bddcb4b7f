import { readFileSync } from "node:fs";
import { type IncomingMessage, type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import {
  MeshCluster,
  echoDeploymentYaml,
  exampleDeploymentYaml,
  failures,
  startCallLoop,
  stopProcess,
  waitFor,
} from "../helpers/mesh-cluster.js";

let cluster: MeshCluster | undefined;
let receiver: Server | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
  await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
  receiver = undefined;
});

interface AlertmanagerAlert {
  status: string;
  labels: Record<string, string>;
}

/** A local Alertmanager-format webhook receiver on 127.0.0.1, port 0: records every alert it is sent. */
async function startAlertReceiver(): Promise<{ url: string; alerts: AlertmanagerAlert[]; posts: number }> {
  const state = { url: "", alerts: [] as AlertmanagerAlert[], posts: 0 };
  receiver = createServer((request: IncomingMessage, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => {
      body += chunk.toString();
    });
    request.on("end", () => {
      state.posts += 1;
      state.alerts.push(...(JSON.parse(body) as { alerts: AlertmanagerAlert[] }).alerts);
      response.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => receiver?.listen(0, "127.0.0.1", resolve));
  state.url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/alerts`;
  return state;
}

const agentKinds = [
  {
    kind: "SDK agent over Attach",
    agent: "word-stats" as const,
    capability: "text.word-stats",
    payload: () => "the quick brown fox jumps over the lazy dog the end",
    check: (payload: string) => expect(JSON.parse(payload).words).toBe(11),
  },
  {
    kind: "plain AgentService agent",
    agent: "json-validator" as const,
    capability: "json.validate",
    payload: () => JSON.stringify({ schema: { type: "object", required: ["a"] }, document: { a: 1 } }),
    check: (payload: string) => expect(JSON.parse(payload)).toEqual({ valid: true, errors: [] }),
  },
];

describe("recovery of agents and sidecars (real processes)", () => {
  it.each(agentKinds)("kill -9 of a $kind: restarted and READY again, idempotent callers see no failure", async ({ agent, capability, payload, check }) => {
    cluster = await MeshCluster.start();
    const sidecar = await cluster.startSidecar({ host: "host-a", capacity: 2 });
    const applied = await cluster.ctl("apply", "-f", cluster.writeFile(`${agent}.yaml`, exampleDeploymentYaml(agent, 2)));
    expect(applied.code).toBe(0);
    const [victim] = await cluster.waitForReady(agent, 2, { exclusive: true });
    const victimId = victim?.instanceId as string;
    const pid = sidecar.agentStates(victimId).findLast((line) => line.state === "ready")?.pid as number;
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).toContain(`${agent}.js`);

    const loop = startCallLoop(sidecar.caller, capability, payload, { concurrency: 2 });
    await loop.waitForCalls(20);
    const fromIndex = sidecar.process.lines.length;
    process.kill(pid, "SIGKILL");
    const exited = await sidecar.waitForAgentState(victimId, "backoff", fromIndex);
    expect(exited.reason).toMatch(/SIGKILL/);
    const readyAgain = await sidecar.waitForAgentState(victimId, "ready", fromIndex);
    expect(readyAgain.pid).not.toBe(pid);
    await cluster.waitForReady(agent, 2, { exclusive: true });
    const backInRoutingAtMs = Date.now();
    // The restarted instance takes calls again.
    await waitFor("a call answered by the restarted instance", () =>
      loop.records.some((record) => record.instanceId === victimId && record.startedAtMs >= backInRoutingAtMs) ? true : undefined,
    );
    await loop.waitForCalls(20);
    const records = await loop.stop();

    expect(failures(records)).toEqual([]);
    expect(records.length).toBeGreaterThan(40);
    for (const record of records.slice(-5)) check(record.payload as string);
  }, 90_000);

  it("a crash-looping agent ends FAILED and fires exactly one AgentCrashLoop alert at the webhook", async () => {
    const alerts = await startAlertReceiver();
    cluster = await MeshCluster.start({ serverArgs: ["--alert-webhook", alerts.url] });
    const manifest = cluster.writeFile(
      "crasher.yaml",
      echoDeploymentYaml({ name: "crasher", mode: "crash", restartPolicy: "{maxRestarts: 2, window: 30s, initialBackoff: 50ms, maxBackoff: 100ms}" }),
    );
    // Unmanaged (--manifest): nothing replaces the FAILED instance, so no second instance can loop and page.
    const sidecar = await cluster.startSidecar({ host: "host-a", manifests: [manifest] });
    const failed = await waitFor("the instance to be FAILED", async () =>
      (await cluster?.instances("crasher"))?.find((instance) => instance.state === HealthState.HEALTH_STATE_FAILED),
    );
    expect(failed.stateReason).toMatch(/crash loop/);
    expect(sidecar.agentStates(failed.instanceId).filter((line) => line.state === "starting")).toHaveLength(3);

    await waitFor("the alert at the receiver", () => (alerts.alerts.length > 0 ? true : undefined));
    // Several evaluation intervals (1 s) more: a repeat or a second rule would show up by now.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect(alerts.alerts).toEqual([
      {
        ...alerts.alerts[0],
        status: "firing",
        labels: expect.objectContaining({ alertname: "AgentCrashLoop", instance_id: failed.instanceId, agent: "crasher", severity: "critical" }),
      },
    ]);
    expect(alerts.posts).toBe(1);
  }, 60_000);

  it("a sidecar killed with SIGKILL: its managed instances are rescheduled on the other sidecar and READY there", async () => {
    cluster = await MeshCluster.start({ serverArgs: ["--reconnect-grace-ms", "300"] });
    const survivor = await cluster.startSidecar({ host: "host-a", capacity: 4 });
    const doomed = await cluster.startSidecar({ host: "host-b", capacity: 4 });
    await cluster.ctl("apply", "-f", cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 4 })));
    const placed = await cluster.waitForReady("echo", 4, { exclusive: true });
    const lost = placed.filter((instance) => instance.host === "host-b").map((instance) => instance.instanceId);
    expect(lost).toHaveLength(2);

    await stopProcess(doomed.process, "SIGKILL");
    const rescheduled = await waitFor("4 READY instances, all on host-a", async () => {
      const ready = await cluster?.waitForReady("echo", 4, { exclusive: true, timeoutMs: 200 }).catch(() => undefined);
      return ready?.every((instance) => instance.host === "host-a") ? ready : undefined;
    }, 20_000);
    for (const instance of rescheduled) expect(lost).not.toContain(instance.instanceId);
    // They serve: every answer comes from host-a's instances.
    const answered = new Set<string>();
    for (let index = 0; index < 12; index += 1) {
      const result = await survivor.caller.invoke("test.echo", "{}", { idempotent: true, timeoutMs: 3000 });
      answered.add(result.instanceId);
    }
    const hostA = new Set(rescheduled.map((instance) => instance.instanceId));
    for (const instanceId of answered) expect(hostA.has(instanceId)).toBe(true);
  }, 60_000);
});
