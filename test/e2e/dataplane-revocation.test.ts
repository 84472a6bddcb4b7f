// A revoked certificate reaches the data plane (docs/signing.md §8.6): sidecars get
// the mesh's revocations on their Connect stream, so after `ctl certs revoke` of
// sidecar B, sidecar A closes B's open tunnel, refuses B's key share and B's signed
// frames on new tunnels, and B's calls into A fail at once instead of hanging; a
// sidecar joining later is told of the revocation right after its Welcome.
// Real server, sidecar and ctl processes.
import { createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Metadata, type ServiceError, credentials as grpcCredentials, status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { systemClock } from "../../sdk/ts/src/core/clock.js";
import { openFrame } from "../../sdk/ts/src/core/dataplane/index.js";
import { frameFailure, keyShareMetadataKey, startKeyAgreement } from "../../sdk/ts/src/core/frame-auth.js";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignerKeys } from "../../sdk/ts/src/core/tls/signer-keys.js";
import { CallFrame_Kind, Invocation, PeerServiceClient, type TunnelResponse } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { invocationType, invokeMethod } from "../../sidecar/inbound.js";
import { storedIdentityFiles } from "../../sidecar/stored-identity.js";
import { MeshCluster, echoDeploymentYaml, waitForLogAfter } from "../helpers/mesh-cluster.js";
import { signerFor } from "../helpers/mesh-pki.js";

let cluster: MeshCluster | undefined;
const cleanups: Array<() => void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  await cluster?.close();
  cluster = undefined;
});

const trustDomain = "agentmesh.local";
const callTimeoutMs = 5_000;

async function metricsText(httpAddress: string): Promise<string> {
  return (await fetch(`http://${httpAddress}/metrics`)).text();
}

describe("revoked certificates reach the data plane (real processes)", () => {
  it("after `ctl certs revoke` of sidecar B: A closes B's tunnel, refuses its handshake and frames; B's calls fail fast", async () => {
    cluster = await MeshCluster.start();
    const mesh = cluster;
    const a = await mesh.startSidecar({ host: "host-a", manifests: [mesh.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 }))] });
    const b = await mesh.startSidecar({ host: "host-b" });
    const [instance] = await mesh.waitForReady("echo", 1);
    const instanceId = instance?.instanceId as string;
    // B reaches A's agent over a tunnel (key agreed, frames MACed both ways).
    expect((await b.caller.invoke("test.echo", "{}", { timeoutMs: 10_000 })).instanceId).toBe(instanceId);

    // B's certificate, as an attacker holding B's key would use it after the revocation.
    const certificatePem = readFileSync(join(b.dataDir, storedIdentityFiles.cert));
    const keyPem = readFileSync(join(b.dataDir, storedIdentityFiles.key));
    const caPem = readFileSync(mesh.caCertFile);

    const fromLine = a.process.lines.length;
    const revoke = await mesh.ctl("certs", "revoke", b.spiffeId, "--reason", "host compromised");
    expect({ code: revoke.code, stdout: revoke.stdout }).toEqual({ code: 0, stdout: "revoked 1 certificate(s)\n" });
    const closed = await waitForLogAfter(a.process, fromLine, (line) => line.msg === "certificates revoked: their tunnels closed");
    expect(closed).toMatchObject({ inboundClosed: 1, revokedTotal: 1 });

    // B's calls into A are refused, each at once: none waits out its deadline.
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const failure = await b.caller.invoke("test.echo", "{}", { timeoutMs: callTimeoutMs }).then(
        () => undefined,
        (error: ServiceError) => error,
      );
      expect(failure, `attempt ${attempt}`).toBeDefined();
      expect([status.UNAVAILABLE, status.UNAUTHENTICATED]).toContain(failure?.code);
    }

    const channelCredentials = grpcCredentials.createSsl(caPem, keyPem, certificatePem, { checkServerIdentity: () => undefined });
    const client = new PeerServiceClient(a.inboundAddress, channelCredentials, { "grpc.ssl_target_name_override": "agentmesh-sidecar", "grpc.use_local_subchannel_pool": 1 });
    cleanups.push(() => client.close());
    const bIdentity = { spiffeId: b.spiffeId, privateKey: createPrivateKey(keyPem) };

    // A new tunnel with B's key share: refused before any frame is read.
    const verifier = new PeerVerifier(trustDomain, [caPem.toString()]);
    const keyShare = startKeyAgreement(
      { selfId: b.spiffeId, signer: signerFor(bIdentity), verifier, signerKeys: new SignerKeys({ verifier }), clock: systemClock, nonceCache: new MemoryNonceCache({ clock: systemClock }) },
      a.spiffeId,
    );
    const headers = new Metadata();
    headers.set(keyShareMetadataKey, keyShare.bytes);
    const keyed = client.tunnel(headers);
    cleanups.push(() => keyed.cancel());
    const handshake = await new Promise<ServiceError>((resolve) => keyed.on("error", resolve));
    expect({ code: handshake.code, details: handshake.details }).toEqual({ code: status.UNAUTHENTICATED, details: frameFailure.peerCertificateRevoked });

    // A tunnel without a key share, with a call signed by B's key: refused at admission.
    const plain = client.tunnel();
    cleanups.push(() => plain.cancel());
    plain.on("error", () => undefined);
    const end = new Promise<{ code: number; message: string }>((resolve) =>
      plain.on("data", (response: TunnelResponse) => {
        for (const frame of response.frames) if (frame.kind === CallFrame_Kind.KIND_END) resolve({ code: frame.statusCode, message: frame.statusMessage });
      }),
    );
    const invocation = Invocation.encode(Invocation.fromPartial({ callId: "after-revoke", capability: "test.echo", version: "1.0.0", payload: Buffer.from("{}") })).finish();
    const envelope = signerFor(bIdentity).sign(invocation, invokeMethod, invocationType, a.spiffeId);
    plain.write({ frames: [openFrame(1, { instanceId, envelope }, false)] });
    expect(await end).toEqual({ code: status.UNAUTHENTICATED, message: frameFailure.peerCertificateRevoked });

    // Both refusals counted on A, and A still serves its own callers.
    expect(await metricsText(a.httpAddress)).toMatch(/agentmesh_sidecar_frame_auth_failures_total\{reason="certificate"\} [2-9]/);
    expect((await a.caller.invoke("test.echo", "{}", { timeoutMs: 10_000 })).instanceId).toBe(instanceId);

    // A sidecar that joins later gets the whole list right after its Welcome.
    const c = await mesh.startSidecar({ host: "host-c" });
    expect(await c.process.waitForLog((line) => line.msg === "certificates revoked: their tunnels closed")).toMatchObject({ revokedTotal: 1, inboundClosed: 0, outboundDropped: 0 });
  }, 90_000);
});
