// A data plane that refuses calls must be seen: a sidecar refusing calls at
// admission logs it at warn (not once per call), reports it on Connect, and the
// server counts it as agentmesh_dataplane_refusals_total{sidecar,reason} and fires
// DataPlaneRefusing — while the registry still shows every instance READY.
import { X509Certificate, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { credentials as grpcCredentials } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { systemClock } from "../../sdk/ts/src/core/clock.js";
import { openFrame } from "../../sdk/ts/src/core/dataplane/index.js";
import { spiffeIdsFromCertificate } from "../../sdk/ts/src/core/spiffe-id.js";
import { CallFrame_Kind, Invocation, PeerServiceClient, type TunnelResponse } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { invocationType, invokeMethod } from "../../sidecar/inbound.js";
import { MeshCluster, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";
import { mintIdentity, signerFor, spiffe } from "../helpers/mesh-pki.js";

let cluster: MeshCluster | undefined;
const cleanups: Array<() => void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  await cluster?.close();
  cluster = undefined;
});

const trustDomain = "agentmesh.local";

async function metricsText(httpPort: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
  return response.text();
}

describe("data plane refusals are visible (real processes)", () => {
  it("counts, logs at warn once per interval, and alerts on a sidecar refusing calls", async () => {
    cluster = await MeshCluster.start();
    const mesh = cluster;
    const sidecar = await mesh.startSidecar({ host: "host-a", manifests: [mesh.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 }))] });
    const [instance] = await mesh.waitForReady("echo", 1);
    const httpPort = Number(mesh.server.lines.find((line) => line.msg === "listening")?.httpPort);

    // Another sidecar of the mesh whose envelopes do not verify (their payload changed after signing).
    const meshCa = await loadOrCreateCa({ dataDir: mesh.serverDataDir, trustDomain, clock: systemClock });
    const peer = await mintIdentity(meshCa, spiffe(trustDomain, "sidecar", "host-z"));
    const tlsCredentials = grpcCredentials.createSsl(Buffer.from(readFileSync(mesh.caCertFile, "utf8")), Buffer.from(peer.privateKeyPem), Buffer.from(peer.chainPem.join("\n")), {
      checkServerIdentity: (_host: string, certificate: PeerCertificate) =>
        spiffeIdsFromCertificate(new X509Certificate(certificate.raw)).includes(sidecar.spiffeId) ? undefined : new Error("not the sidecar we dialled"),
    });
    const client = new PeerServiceClient(sidecar.inboundAddress, tlsCredentials, { "grpc.ssl_target_name_override": "agentmesh-sidecar", "grpc.use_local_subchannel_pool": 1 });
    const stream = client.tunnel();
    const ends: number[] = [];
    stream.on("data", (response: TunnelResponse) => {
      for (const frame of response.frames) if (frame.kind === CallFrame_Kind.KIND_END) ends.push(frame.statusCode);
    });
    stream.on("error", () => undefined);
    cleanups.push(() => {
      stream.cancel();
      client.close();
    });
    const refusedCalls = 12;
    for (let callId = 1; callId <= refusedCalls; callId += 1) {
      const invocation = Invocation.encode(Invocation.fromPartial({ callId: randomUUID(), capability: "test.echo", version: "1.0.0", payload: Buffer.from("{}") })).finish();
      const envelope = { ...signerFor(peer).sign(invocation, invokeMethod, invocationType, sidecar.spiffeId), payload: Buffer.from([...invocation, 0]) };
      stream.write({ frames: [openFrame(callId, { instanceId: instance?.instanceId as string, envelope }, false)] });
    }
    await waitFor("every call refused", () => (ends.length === refusedCalls ? true : undefined));
    expect(new Set(ends)).toEqual(new Set([16]));

    // The server counts them by sidecar and reason...
    await waitFor("the refusals in the server's metrics", async () =>
      (await metricsText(httpPort)).includes(`agentmesh_dataplane_refusals_total{sidecar="host-a",reason="signature_invalid"} ${refusedCalls}`) ? true : undefined,
    );
    // ...fires the alert once...
    const fired = await waitFor("the DataPlaneRefusing alert", () =>
      mesh.server.lines.find((line) => line.msg === "alert firing" && line.alertname === "DataPlaneRefusing"),
    );
    expect(fired).toMatchObject({ severity: "critical", labels: { alertname: "DataPlaneRefusing", sidecar: "host-a", severity: "critical" } });
    // ...and the sidecar said so at warn, not once per call.
    const warned = sidecar.process.lines.filter((line) => line.msg === "data plane refusing calls");
    expect(warned.length).toBeGreaterThanOrEqual(1);
    expect(warned.length).toBeLessThanOrEqual(2);
    expect(warned.every((line) => line.level === 40)).toBe(true);
    const logged = warned.reduce((sum, line) => sum + Number((line.refusals as Record<string, number>).signature_invalid ?? 0), 0);
    expect(logged).toBeLessThanOrEqual(refusedCalls);
    expect(logged).toBeGreaterThanOrEqual(1);
  }, 60_000);
});
