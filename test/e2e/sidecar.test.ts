import { X509Certificate, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { PeerCertificate } from "node:tls";
import { type ClientDuplexStream, credentials as grpcCredentials, status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { systemClock } from "../../sdk/ts/src/core/clock.js";
import { spiffeIdsFromCertificate } from "../../sdk/ts/src/core/spiffe-id.js";
import {
  type CallFrame,
  CallFrame_Kind,
  Invocation,
  PeerServiceClient,
  type TunnelRequest,
  type TunnelResponse,
} from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { WatchResponse_EventType } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { openFrame } from "../../sdk/ts/src/core/dataplane/index.js";
import { invocationType, invokeMethod } from "../../sidecar/inbound.js";
import { EventLog } from "../helpers/events.js";
import { MeshCluster, type SidecarNode, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";
import { type MintedIdentity, foreignCa, mintIdentity, signerFor, spiffe } from "../helpers/mesh-pki.js";

let cluster: MeshCluster | undefined;
const cleanups: Array<() => void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  await cluster?.close();
  cluster = undefined;
});

const trustDomain = "agentmesh.local";

/** A tunnel to a sidecar's inbound port over mTLS, presenting `identity`, accepting only a mesh sidecar as the server. */
function openTunnel(sidecar: SidecarNode, caPem: string, identity: MintedIdentity): { send(frame: CallFrame): void; reply(callId: number): Promise<CallFrame> } {
  const tlsCredentials = grpcCredentials.createSsl(Buffer.from(caPem), Buffer.from(identity.privateKeyPem), Buffer.from(identity.chainPem.join("\n")), {
    checkServerIdentity: (_host: string, certificate: PeerCertificate) =>
      spiffeIdsFromCertificate(new X509Certificate(certificate.raw)).includes(sidecar.spiffeId) ? undefined : new Error("not the sidecar we dialled"),
  });
  const client = new PeerServiceClient(sidecar.inboundAddress, tlsCredentials, { "grpc.ssl_target_name_override": "agentmesh-sidecar", "grpc.use_local_subchannel_pool": 1 });
  const stream: ClientDuplexStream<TunnelRequest, TunnelResponse> = client.tunnel();
  const replies = new EventLog<CallFrame>();
  stream.on("data", (response: TunnelResponse) => {
    for (const frame of response.frames) replies.push(frame);
  });
  stream.on("error", () => undefined);
  cleanups.push(() => {
    stream.cancel();
    client.close();
  });
  return {
    send: (frame) => stream.write({ frames: [frame] }),
    // The first DATA (unary replies come whole, end=true) or END of this call.
    reply: (callId) => replies.next((frame) => frame.callId === callId && (frame.kind === CallFrame_Kind.KIND_END || frame.kind === CallFrame_Kind.KIND_DATA), 10_000),
  };
}

function invocationBytes(payload: string): Uint8Array {
  return Invocation.encode({
    callId: randomUUID(),
    capability: "test.echo",
    version: "1.0.0",
    payload: Buffer.from(payload),
    contentType: "",
    caller: "",
    deadlineMs: 0,
    metadata: {},
    traceparent: "",
  }).finish();
}

interface AuditLine {
  action: string;
  outcome: string;
  requestId: string;
  target: string;
  details: { reason?: string };
}

function auditLines(sidecar: SidecarNode): AuditLine[] {
  return readFileSync(join(sidecar.dataDir, "audit.log"), "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as AuditLine);
}

describe("sidecar data plane and shutdown (real processes)", () => {
  it("answers RESOURCE_EXHAUSTED to calls beyond the agent's invoke rate", async () => {
    cluster = await MeshCluster.start();
    const sidecar = await cluster.startSidecar({ host: "host-a", capacity: 1 });
    const yaml = echoDeploymentYaml({ replicas: 1, resources: "{invokeRatePerSecond: 1, invokeBurst: 2}" });
    await cluster.ctl("apply", "-f", cluster.writeFile("echo.yaml", yaml));
    await cluster.waitForReady("echo", 1);
    // Routing on the caller's side follows Watch: wait until the sidecar sees the instance, without spending tokens.
    await waitFor("the instance in the sidecar's routing cache", async () => ((await sidecar.caller.discover("test.echo")).length === 1 ? true : undefined));

    const outcomes = await Promise.all(
      Array.from({ length: 12 }, () =>
        sidecar.caller.invoke("test.echo", "{}", { timeoutMs: 5000 }).then(
          () => ({ code: status.OK, details: "" }),
          (error: { code: number; details: string }) => ({ code: error.code, details: error.details }),
        ),
      ),
    );
    const succeeded = outcomes.filter((outcome) => outcome.code === status.OK);
    const refused = outcomes.filter((outcome) => outcome.code === status.RESOURCE_EXHAUSTED);
    expect(succeeded.length + refused.length).toBe(outcomes.length);
    // The burst of 2, plus 1 per second refilled: at most 4 even if a loaded machine spreads the burst over 2 s.
    expect(succeeded.length).toBeGreaterThanOrEqual(2);
    expect(succeeded.length).toBeLessThanOrEqual(4);
    expect(refused[0]?.details).toBe("limit exceeded: invoke rate");
  }, 60_000);

  it("refuses forged, tampered and replayed envelopes at the inbound port with UNAUTHENTICATED, and audits each", async () => {
    cluster = await MeshCluster.start();
    const sidecar = await cluster.startSidecar({ host: "host-a", capacity: 1 });
    await cluster.ctl("apply", "-f", cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 })));
    const [instance] = await cluster.waitForReady("echo", 1);
    const instanceId = instance?.instanceId as string;

    // A sidecar identity issued by the mesh CA (read from the server's data dir, as init-admin does).
    const meshCa = await loadOrCreateCa({ dataDir: cluster.serverDataDir, trustDomain, clock: systemClock });
    const intruderId = spiffe(trustDomain, "sidecar", "intruder");
    const intruder = await mintIdentity(meshCa, intruderId);
    const impostor = await mintIdentity(await foreignCa(trustDomain), intruderId);
    const tunnel = openTunnel(sidecar, readFileSync(cluster.caCertFile, "utf8"), intruder);
    const sign = (identity: MintedIdentity, payload: Uint8Array): SignedEnvelope =>
      signerFor(identity).sign(payload, invokeMethod, invocationType, sidecar.spiffeId);

    // A genuine envelope goes through: the channel and the signing are right, so what follows is refused for its flaw alone.
    const genuine = sign(intruder, invocationBytes('{"tag":"genuine"}'));
    tunnel.send(openFrame(1, { instanceId, envelope: genuine }, false));
    const answered = await tunnel.reply(1);
    expect(answered.kind).toBe(CallFrame_Kind.KIND_DATA);
    expect(JSON.parse(Buffer.from(answered.payload).toString())).toMatchObject({ instanceId, tag: "genuine" });

    const cases: Array<{ callId: number; envelope: SignedEnvelope; what: string }> = [
      { callId: 2, envelope: genuine, what: "replayed" },
      { callId: 3, envelope: sign(impostor, invocationBytes('{"tag":"foreign"}')), what: "signed by a key of another CA" },
      { callId: 4, envelope: { ...sign(intruder, invocationBytes('{"tag":"original"}')), payload: Buffer.from(invocationBytes('{"tag":"tampered"}')) }, what: "tampered payload" },
    ];
    for (const { callId, envelope } of cases) tunnel.send(openFrame(callId, { instanceId, envelope }, false));
    for (const { callId, what } of cases) {
      const reply = await tunnel.reply(callId);
      expect({ what, kind: reply.kind, code: reply.statusCode }).toEqual({ what, kind: CallFrame_Kind.KIND_END, code: status.UNAUTHENTICATED });
    }

    const rejected = await waitFor("three invoke.rejected audit entries", () => {
      const lines = auditLines(sidecar).filter((line) => line.action === "invoke.rejected");
      return lines.length >= 3 ? lines : undefined;
    });
    expect(rejected.map((line) => ({ requestId: line.requestId, target: line.target, outcome: line.outcome }))).toEqual(
      ["2", "3", "4"].map((requestId) => ({ requestId, target: instanceId, outcome: "denied" })),
    );
    expect(rejected[0]?.details.reason).toMatch(/replay/i);
    // The refused calls never reached the agent.
    expect(sidecar.process.lines.filter((line) => line.stream === "stdout" && /call (foreign|tampered) received/.test(String(line.msg)))).toEqual([]);
  }, 60_000);

  it("SIGTERM to a sidecar with calls in flight: they complete, it exits 0 and its instance deregisters", async () => {
    cluster = await MeshCluster.start();
    const entry = await cluster.startSidecar({ host: "host-a" });
    const manifest = cluster.writeFile("echo.yaml", echoDeploymentYaml({ name: "echo", replicas: 1 }));
    const serving = await cluster.startSidecar({ host: "host-b", manifests: [manifest] });
    const [instance] = await cluster.waitForReady("echo", 1);
    await waitFor("the instance in host-a's routing cache", async () => ((await entry.caller.discover("test.echo")).length === 1 ? true : undefined));
    const watch = cluster.watch("test.echo");

    const tags = ["slow-1", "slow-2", "slow-3"];
    const calls = tags.map((tag) => entry.caller.invoke("test.echo", JSON.stringify({ delayMs: 1500, tag }), { timeoutMs: 10_000 }));
    for (const tag of tags) await serving.process.waitForLog((line) => line.msg === `call ${tag} received`);
    const exit = serving.process.stop("SIGTERM");

    const results = await Promise.all(calls);
    expect(results.map((result) => JSON.parse(result.payload.toString()).tag)).toEqual(tags);
    expect(results.every((result) => result.instanceId === instance?.instanceId)).toBe(true);
    expect(await exit).toBe(0);
    await watch.next((item) => item.event.type === WatchResponse_EventType.EVENT_TYPE_REMOVED && item.event.instance?.instanceId === instance?.instanceId);
    expect(await cluster.instances("echo")).toEqual([]);
  }, 60_000);

  it("SIGTERM to the server exits 0 after an in-flight Invoke completes; sidecars re-register with a new server on the same data dir and port", async () => {
    cluster = await MeshCluster.start();
    const manifest = cluster.writeFile("echo.yaml", echoDeploymentYaml({ name: "echo", replicas: 1 }));
    const sidecar = await cluster.startSidecar({ host: "host-a", manifests: [manifest] });
    const [instance] = await cluster.waitForReady("echo", 1);
    const instanceId = instance?.instanceId as string;

    // A call through the server itself (OrchestratorService.Invoke), in flight when SIGTERM arrives.
    const invoking = cluster.ctl("-o", "json", "invoke", "test.echo", "--data", JSON.stringify({ delayMs: 1500, tag: "via-server" }));
    await sidecar.process.waitForLog((line) => line.msg === "call via-server received");
    const fromIndex = sidecar.process.lines.length;
    expect(await cluster.stopServer()).toBe(0);
    const invoked = await invoking;
    expect(invoked.stderr).toBe("");
    expect(invoked.code).toBe(0);
    expect(JSON.parse(invoked.stdout)).toMatchObject({ instanceId, payload: expect.stringContaining('"tag":"via-server"') });

    // With the control plane gone, the data plane still routes from its cache.
    const offline = await sidecar.caller.invoke("test.echo", "{}", { timeoutMs: 3000 });
    expect(offline.instanceId).toBe(instanceId);

    await cluster.restartServer();
    await waitFor("the sidecar reconnected", () =>
      sidecar.process.lines.slice(fromIndex).some((line) => line.msg === "connected to control plane") ? true : undefined,
    );
    const [again] = await cluster.waitForReady("echo", 1);
    expect(again?.instanceId).toBe(instanceId);
    expect(again?.host).toBe("host-a");
    const online = await sidecar.caller.invoke("test.echo", "{}", { timeoutMs: 3000 });
    expect(online.instanceId).toBe(instanceId);
  }, 90_000);
});
