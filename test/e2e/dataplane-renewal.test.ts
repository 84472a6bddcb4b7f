// Certificate renewal and connection ageing on a real mesh: a server with 6-second
// certificates that retires connections every 1.5 s, two sidecars each running an
// echo agent, and steady non-idempotent calls through a sidecar's local port and
// through the server's Invoke, to the caller's own host and to the other one. No
// call may fail, no instance may change state, and the long-lived streams (Connect,
// Watch, tunnels) must carry on without a break a user could see.
import type { ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import type { MeshCaller } from "../../sdk/ts/src/agent/invoke.js";
import type { InvokeResponse } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { WatchResponse_EventType, type WatchResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type CallRecord, MeshCluster, type SidecarNode, echoDeploymentYaml, failures, waitFor } from "../helpers/mesh-cluster.js";
import { call } from "../helpers/mesh-pki.js";

let cluster: MeshCluster | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

/** Calls sent one after another on each lane, paced, until stopped. */
class PacedLoop {
  readonly records: CallRecord[] = [];
  private running = true;
  private readonly lanes: Promise<void>[];

  constructor(send: () => Promise<{ instanceId: string }>, lanes: number, pauseMs: number) {
    this.lanes = Array.from({ length: lanes }, async () => {
      while (this.running) {
        const startedAtMs = Date.now();
        try {
          const { instanceId } = await send();
          this.records.push({ startedAtMs, endedAtMs: Date.now(), ok: true, instanceId });
        } catch (error) {
          const serviceError = error as Partial<ServiceError>;
          this.records.push({ startedAtMs, endedAtMs: Date.now(), ok: false, code: serviceError.code, details: serviceError.details ?? String(error) });
        }
        await new Promise((resolve) => setTimeout(resolve, pauseMs));
      }
    });
  }

  async stop(): Promise<CallRecord[]> {
    this.running = false;
    await Promise.all(this.lanes);
    return this.records;
  }
}

function renewals(node: { process: SidecarNode["process"] }, message: string): number {
  return node.process.lines.filter((line) => line.msg === message).length;
}

const streamBreaks = new Set(["control plane stream lost", "registry watch lost; resuming", "tunnel stream broke"]);

describe("data plane across certificate renewals and connection ageing (real processes)", () => {
  it("fails no call and flaps no instance through 3+ renewals of every certificate and many connection ages", async () => {
    cluster = await MeshCluster.start({ serverArgs: ["--cert-ttl", "6s", "--max-connection-age", "1500ms", "--reconnect-grace-ms", "300"] });
    const mesh = cluster;
    // Heartbeats at the default 1 s: this test is about renewals and ageing, not detection
    // speed, and on a loaded 2-core machine a sidecar can stall longer than 2 × 200 ms.
    const echo = mesh.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 }).replace("heartbeatInterval: 200ms", "heartbeatInterval: 1s"));
    const hostA = await mesh.startSidecar({ host: "host-a", manifests: [echo] });
    const hostB = await mesh.startSidecar({ host: "host-b", manifests: [echo], capacity: 1 });
    const ready = await mesh.waitForReady("echo", 2, { exclusive: true });
    const instanceOn = (host: string) => ready.find((instance) => instance.host === host)?.instanceId as string;

    // The test's own registry Watch, on a connection the server ages like any other.
    const watchEvents: WatchResponse[] = [];
    const watchErrors: unknown[] = [];
    const watch = mesh.admin.registry.watch({ sinceRevision: 0, capability: "", epoch: "" });
    watch.on("data", (event: WatchResponse) => watchEvents.push(event));
    watch.on("error", (error: ServiceError) => {
      if (error.code !== 1) watchErrors.push(error);
    });
    await waitFor("the watch snapshot", () => (watchEvents.some((event) => event.type === WatchResponse_EventType.EVENT_TYPE_SYNCED) ? true : undefined));
    const syncedAt = watchEvents.length;

    const viaSidecar = (caller: MeshCaller) => () => caller.invoke("test.echo", "{}", { idempotent: false, timeoutMs: 5000 });
    const viaServer = async () => {
      const response = await call<InvokeResponse>((metadata, options, callback) =>
        mesh.admin.orchestrator.invoke({ capability: "test.echo", versionRange: "", labelSelector: undefined, payload: Buffer.from("{}"), contentType: "application/json", idempotent: false, metadata: {} }, metadata, options, callback),
      );
      return { instanceId: response.instanceId };
    };
    const sidecarLoop = new PacedLoop(viaSidecar(hostA.caller), 2, 20);
    const serverLoop = new PacedLoop(viaServer, 2, 20);

    const serverRenewalsBefore = renewals({ process: mesh.server }, "server certificate renewed");
    const sidecarRenewalsBefore = [hostA, hostB].map((node) => renewals(node, "certificate renewed"));
    await waitFor(
      "three renewals of the server's and both sidecars' certificates",
      () =>
        renewals({ process: mesh.server }, "server certificate renewed") - serverRenewalsBefore >= 3 &&
        [hostA, hostB].every((node, index) => renewals(node, "certificate renewed") - (sidecarRenewalsBefore[index] as number) >= 3)
          ? true
          : undefined,
      40_000,
    );

    // A sidecar's Watch-fed routing still learns of new instances after many ageings.
    const applied = await mesh.ctl("apply", "-f", mesh.writeFile("late.yaml", echoDeploymentYaml({ name: "late", replicas: 1 })));
    expect(applied.code).toBe(0);
    const [late] = await mesh.waitForReady("late", 1);
    const lateId = late?.instanceId as string;
    await waitFor("host-a's routing to list the late instance", async () =>
      (await hostA.caller.discover("test.echo")).some((instance) => instance.instanceId === lateId) ? true : undefined,
    );
    await waitFor("the test's watch to see the late instance READY", () =>
      watchEvents.some((event) => event.instance?.instanceId === lateId && event.instance.state === HealthState.HEALTH_STATE_READY) ? true : undefined,
    );

    const sidecarCalls = await sidecarLoop.stop();
    const serverCalls = await serverLoop.stop();
    watch.cancel();

    expect(failures(sidecarCalls)).toEqual([]);
    expect(failures(serverCalls)).toEqual([]);
    // Both paths reached both hosts: the caller's own and the other one.
    for (const records of [sidecarCalls, serverCalls]) {
      for (const host of ["host-a", "host-b"]) expect(records.filter((record) => record.instanceId === instanceOn(host)).length).toBeGreaterThan(5);
    }
    expect(watchErrors).toEqual([]);
    // The two echo instances never changed state: no event about them after the snapshot.
    const echoIds = new Set(ready.map((instance) => instance.instanceId));
    const changes = watchEvents
      .slice(syncedAt)
      .filter((event) => echoIds.has(event.instance?.instanceId ?? ""))
      .map((event) => ({ instanceId: event.instance?.instanceId, from: HealthState[event.previousState], to: HealthState[event.instance?.state ?? 0], reason: event.instance?.stateReason }));
    expect(changes).toEqual([]);
    // No long-lived stream broke on the way (each would log this at warn).
    for (const node of [hostA, hostB]) {
      expect(node.process.lines.filter((line) => streamBreaks.has(String(line.msg)))).toEqual([]);
    }
    expect(mesh.server.lines.filter((line) => streamBreaks.has(String(line.msg)))).toEqual([]);
  }, 90_000);
});
