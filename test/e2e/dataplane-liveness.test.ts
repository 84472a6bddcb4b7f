// A frozen sidecar (SIGSTOP: its connections stay open, nothing answers): calls to
// its instances must fail fast or go elsewhere once its tunnels stop answering
// pings, instead of waiting out their deadlines, and it is used again as soon as
// it answers (SIGCONT).
import type { ServiceError } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import type { InvokeResponse } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type CallRecord, MeshCluster, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";
import { call } from "../helpers/mesh-pki.js";

let cluster: MeshCluster | undefined;
let frozenPid: number | undefined;

afterEach(async () => {
  if (frozenPid !== undefined) process.kill(frozenPid, "SIGCONT");
  frozenPid = undefined;
  await cluster?.close();
  cluster = undefined;
});

const callTimeoutMs = 20_000;

/** Back-to-back calls on a few lanes, recorded with their times and who answered. */
function loop(send: () => Promise<{ instanceId: string }>, lanes: number) {
  const records: CallRecord[] = [];
  let running = true;
  const done = Promise.all(
    Array.from({ length: lanes }, async () => {
      while (running) {
        const startedAtMs = Date.now();
        try {
          const { instanceId } = await send();
          records.push({ startedAtMs, endedAtMs: Date.now(), ok: true, instanceId });
        } catch (error) {
          const failure = error as Partial<ServiceError>;
          records.push({ startedAtMs, endedAtMs: Date.now(), ok: false, code: failure.code, details: failure.details ?? String(error) });
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }),
  );
  return {
    records,
    stop: async () => {
      running = false;
      await done;
      return records;
    },
  };
}

describe("tunnel liveness (real processes)", () => {
  it("a frozen sidecar: calls to it fail fast or go elsewhere; after SIGCONT it is used again", async () => {
    cluster = await MeshCluster.start();
    const mesh = cluster;
    const echo = mesh.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 }).replace("heartbeatInterval: 200ms", "heartbeatInterval: 1s"));
    const caller = await mesh.startSidecar({ host: "host-a", manifests: [echo] });
    const frozen = await mesh.startSidecar({ host: "host-b", manifests: [echo] });
    const ready = await mesh.waitForReady("echo", 2, { exclusive: true });
    const frozenInstance = ready.find((instance) => instance.host === "host-b")?.instanceId as string;
    const localInstance = ready.find((instance) => instance.host === "host-a")?.instanceId as string;

    const viaSidecar = loop(() => caller.caller.invoke("test.echo", "{}", { idempotent: false, timeoutMs: callTimeoutMs }), 3);
    const viaServer = loop(async () => {
      const response = await call<InvokeResponse>(
        (metadata, options, callback) =>
          mesh.admin.orchestrator.invoke(
            { capability: "test.echo", versionRange: "", labelSelector: undefined, payload: Buffer.from("{}"), contentType: "", idempotent: false, metadata: {} },
            metadata,
            options,
            callback,
          ),
        callTimeoutMs,
      );
      return { instanceId: response.instanceId };
    }, 3);
    const answeredBy = (records: CallRecord[], instanceId: string, afterMs: number) =>
      records.some((record) => record.ok && record.instanceId === instanceId && record.startedAtMs >= afterMs);
    await waitFor("both instances answering on both paths", () =>
      [viaSidecar, viaServer].every((path) => answeredBy(path.records, frozenInstance, 0) && answeredBy(path.records, localInstance, 0)) ? true : undefined,
    );

    frozenPid = frozen.process.child.pid as number;
    process.kill(frozenPid, "SIGSTOP");
    const frozenAtMs = Date.now();
    // Calls keep being answered, by the instance that still can, on both paths.
    await waitFor(
      "calls answered by host-a's instance after the freeze, on both paths",
      () => ([viaSidecar, viaServer].every((path) => path.records.filter((record) => answeredBy([record], localInstance, frozenAtMs + 3000)).length >= 5) ? true : undefined),
      30_000,
    );
    const frozenFor = Date.now();
    process.kill(frozenPid, "SIGCONT");
    frozenPid = undefined;
    await waitFor(
      "host-b's instance answering again on both paths",
      () => ([viaSidecar, viaServer].every((path) => answeredBy(path.records, frozenInstance, frozenFor)) ? true : undefined),
      30_000,
    );
    const records = [...(await viaSidecar.stop()), ...(await viaServer.stop())];

    // Whatever failed while host-b was frozen failed fast: none waited out its deadline.
    const failed = records.filter((record) => !record.ok);
    for (const record of failed) {
      expect({ code: record.code, tookMs: record.endedAtMs - record.startedAtMs < callTimeoutMs / 2 }).toEqual({ code: 14, tookMs: true });
    }
    // And only calls that were in flight to host-b at the freeze could fail at all.
    expect(failed.filter((record) => record.startedAtMs > frozenAtMs + 5000)).toEqual([]);
  }, 120_000);
});
