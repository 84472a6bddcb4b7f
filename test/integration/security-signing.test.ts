// Signed messages over a real mTLS server: Register and the Connect Hello must be
// signed by the peer's own key, for this server, this method and this type, fresh
// and never replayed; heartbeats rely on a per-stream sequence. Each refusal is
// UNAUTHENTICATED (or a stream error), changes nothing, and is audited once.
import { type ClientDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ManualClock, systemClock } from "../../sdk/ts/src/core/clock.js";
import { signEnvelope } from "../../sdk/ts/src/core/signing.js";
import { type ConnectRequest, type ConnectResponse, Hello } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegisterRequest, type RegisterResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState, type SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { EventLog } from "../helpers/events.js";
import { manifest } from "../helpers/manifests.js";
import {
  type MintedIdentity,
  type RawClients,
  type SecureMesh,
  call,
  connectMethod,
  expectCode,
  expectOnlyDenialAudited,
  foreignCa,
  joinOverRpc,
  mintIdentity,
  readCaFiles,
  signedRegister,
  signerFor,
  snapshot,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";

let mesh: SecureMesh;
let agent: MintedIdentity;
let other: MintedIdentity;
let clients: RawClients;
const streams: Array<ClientDuplexStream<ConnectRequest, ConnectResponse>> = [];

beforeEach(async () => {
  mesh = await startSecureMesh();
  agent = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "agent", "sql-agent"));
  other = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "agent", "summarizer"));
  clients = mesh.clientsFor(agent);
});

afterEach(async () => {
  for (const stream of streams.splice(0)) stream.cancel();
  await mesh.close();
});

const sendRegister = (request: RegisterRequest) =>
  call<RegisterResponse>((metadata, options, callback) => clients.registry.register(request, metadata, options, callback));

const wrap = (envelope: SignedEnvelope): RegisterRequest => ({ ...RegisterRequest.fromPartial({}), envelope });

function flipBit(bytes: Uint8Array, index: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] = (copy[index] ?? 0) ^ 0x01;
  return copy;
}

const valid = () => signedRegister(signerFor(agent), mesh.trustDomain, manifest()).envelope;

describe("signed Register", () => {
  it("a correctly signed Register is accepted and names the signer as owner", async () => {
    const response = await sendRegister(wrap(valid()));
    expect(response.instance?.spiffeId).toBe(agent.spiffeId);
  });

  const refusals: Array<[string, () => RegisterRequest, string]> = [
    ["unsigned", () => RegisterRequest.fromPartial({ manifest: manifest(), host: "host-a" }), "signed envelope required"],
    ["tampered payload", () => { const envelope = valid(); return wrap({ ...envelope, payload: flipBit(envelope.payload, 5) }); }, "signature invalid"],
    ["tampered signature", () => { const envelope = valid(); return wrap({ ...envelope, signature: flipBit(envelope.signature, 10) }); }, "signature invalid"],
    ["tampered timestamp", () => { const envelope = valid(); return wrap({ ...envelope, issuedAtMs: envelope.issuedAtMs - 1 }); }, "signature invalid"],
    ["signed by another identity", () => signedRegister(signerFor(other), mesh.trustDomain, manifest()).request, "signer mismatch"],
    ["claims the peer but signed with another key", () => signedRegister(signerFor({ spiffeId: agent.spiffeId, privateKey: other.privateKey }), mesh.trustDomain, manifest()).request, "signature invalid"],
    ["for another audience", () => signedRegister(signerFor(agent), mesh.trustDomain, manifest(), { audience: "spiffe://agentmesh.local/server/other" }).request, "audience mismatch"],
    ["for another trust domain's server", () => signedRegister(signerFor(agent), "elsewhere.example", manifest()).request, "audience mismatch"],
    ["for another method", () => signedRegister(signerFor(agent), mesh.trustDomain, manifest(), { method: "/agentmesh.v1.RegistryService/Deregister" }).request, "method mismatch"],
    ["for another payload type", () => signedRegister(signerFor(agent), mesh.trustDomain, manifest(), { payloadType: "agentmesh.v1.Hello" }).request, "payload type mismatch"],
    ["31 s old", () => signedRegister(signerFor(agent, new ManualClock(Date.now() - 31_000)), mesh.trustDomain, manifest()).request, "timestamp outside window"],
    ["31 s in the future", () => signedRegister(signerFor(agent, new ManualClock(Date.now() + 31_000)), mesh.trustDomain, manifest()).request, "timestamp outside window"],
    ["with an unsupported algorithm", () => wrap({ ...valid(), alg: "RS256" }), "unsupported signature algorithm"],
    ["with a short nonce", () => wrap({ ...valid(), nonce: Buffer.alloc(8) }), "nonce must be 16 bytes"],
  ];

  it.each(refusals)("%s is UNAUTHENTICATED and changes nothing", async (_case, build, reason) => {
    const before = snapshot(mesh.server);
    const error = await expectCode(sendRegister(build()), status.UNAUTHENTICATED);
    expect(error.details).toBe(reason);
    const entry = await expectOnlyDenialAudited(mesh.server, before, "call.denied");
    expect(entry).toMatchObject({ actor: agent.spiffeId, target: "/agentmesh.v1.RegistryService/Register", details: { reason } });
  });

  it("29 s old and 29 s ahead are still accepted (the window is ±30 s)", async () => {
    for (const offsetMs of [-29_000, 29_000]) {
      const request = signedRegister(signerFor(agent, new ManualClock(Date.now() + offsetMs)), mesh.trustDomain, manifest()).request;
      expect((await sendRegister(request)).instance?.spiffeId).toBe(agent.spiffeId);
    }
  });

  it("the same envelope sent twice is refused the second time as a replayed nonce", async () => {
    const envelope = valid();
    await sendRegister(wrap(envelope));
    const before = snapshot(mesh.server);
    expect((await expectCode(sendRegister(wrap(envelope)), status.UNAUTHENTICATED)).details).toBe("nonce replayed");
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
  });

  it("a forged envelope does not burn the nonce of the genuine one", async () => {
    const envelope = valid();
    await expectCode(sendRegister(wrap({ ...envelope, signature: flipBit(envelope.signature, 3) })), status.UNAUTHENTICATED);
    expect((await sendRegister(wrap(envelope))).instance?.spiffeId).toBe(agent.spiffeId);
  });

  it("a payload that is not a RegisterRequest is INVALID_ARGUMENT once its signature checks out", async () => {
    const envelope = signerFor(agent).sign(Buffer.from([0xff, 0xff, 0xff]), "/agentmesh.v1.RegistryService/Register", "agentmesh.v1.RegisterRequest", `spiffe://${mesh.trustDomain}/server`);
    const before = snapshot(mesh.server);
    await expectCode(sendRegister(wrap(envelope)), status.INVALID_ARGUMENT);
    expect(snapshot(mesh.server)).toEqual(before);
  });
});

describe("signer_chain: a renewed key on a connection opened with the previous certificate", () => {
  const withChain = (signer: MintedIdentity, claimed: string, chainOf: MintedIdentity) => {
    const { request, envelope } = signedRegister(
      { spiffeId: claimed, sign: (payload, method, payloadType, audience) => signEnvelope({ payload, signer: claimed, audience, method, payloadType, privateKey: signer.privateKey, clock: systemClock, signerChain: [chainOf.certificate.raw] }) },
      mesh.trustDomain,
      manifest(),
    );
    expect(envelope.signerChain).toHaveLength(1);
    return request;
  };

  it("a newer certificate of the same identity, attached, verifies the new key", async () => {
    const renewed = await mintIdentity(mesh.server.security.ca, agent.spiffeId);
    expect((await sendRegister(withChain(renewed, agent.spiffeId, renewed))).instance?.spiffeId).toBe(agent.spiffeId);
    // Attaching the connection's own certificate works too.
    expect((await sendRegister(withChain(agent, agent.spiffeId, agent))).instance?.spiffeId).toBe(agent.spiffeId);
  });

  const chainRefusals: Array<[string, () => Promise<RegisterRequest>, string]> = [
    ["another identity's certificate", async () => withChain(other, agent.spiffeId, other), "signer mismatch"],
    ["a certificate from another CA", async () => { const stranger = await mintIdentity(await foreignCa(mesh.trustDomain), agent.spiffeId); return withChain(stranger, agent.spiffeId, stranger); }, "client certificate not issued by the mesh CA"],
    ["an expired certificate", async () => {
      const { certPem, keyPem } = await readCaFiles(mesh.dataDir);
      const pastCa = await loadOrCreateCa({ certPem, keyPem, trustDomain: mesh.trustDomain, clock: new ManualClock(Date.now() - 2 * 60 * 60_000) });
      const expired = await mintIdentity(pastCa, agent.spiffeId, { ttlMs: 60_000 });
      return withChain(expired, agent.spiffeId, expired);
    }, "client certificate expired or not yet valid"],
    ["garbage", async () => { const request = withChain(agent, agent.spiffeId, agent); (request.envelope as SignedEnvelope).signerChain = [Buffer.from("not a certificate")]; return request; }, "signer certificate unreadable"],
  ];

  it.each(chainRefusals)("attaching %s is UNAUTHENTICATED and changes nothing", async (_case, build, reason) => {
    const request = await build();
    const before = snapshot(mesh.server);
    expect((await expectCode(sendRegister(request), status.UNAUTHENTICATED)).details).toBe(reason);
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
  });

  it("attaching a revoked certificate of the same identity is UNAUTHENTICATED", async () => {
    const { token } = await mesh.joinToken({ host: "host-s", agents: ["sql-agent"], uses: 2 });
    const current = (await joinOverRpc(mesh, agent.spiffeId, token)).identity;
    const revoked = (await joinOverRpc(mesh, agent.spiffeId, token)).identity;
    await call((metadata, options, callback) => mesh.adminClients.identity.revokeCertificate({ target: revoked.serial, reason: "" }, metadata, options, callback));
    clients = mesh.clientsFor(current);
    const before = snapshot(mesh.server);
    expect((await expectCode(sendRegister(withChain(revoked, agent.spiffeId, revoked)), status.UNAUTHENTICATED)).details).toBe("signer certificate revoked");
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
  });
});

describe("Connect", () => {
  interface OpenStream {
    stream: ClientDuplexStream<ConnectRequest, ConnectResponse>;
    responses: EventLog<ConnectResponse>;
    ended: Promise<ServiceError>;
  }

  function open(hello: Hello): OpenStream {
    const stream = clients.orchestrator.connect();
    streams.push(stream);
    const responses = new EventLog<ConnectResponse>();
    stream.on("data", (response: ConnectResponse) => responses.push(response));
    const ended = new Promise<ServiceError>((resolve) => stream.on("error", resolve));
    stream.write({ msg: { $case: "hello", value: hello } });
    return { stream, responses, ended };
  }

  function signedHello(instanceIds: string[], clock?: ManualClock): Hello {
    const hello = Hello.fromPartial({ sidecarId: "host-a", host: "host-a", instanceIds });
    hello.envelope = signerFor(agent, clock).sign(Hello.encode(hello).finish(), connectMethod, "agentmesh.v1.Hello", `spiffe://${mesh.trustDomain}/server`);
    return hello;
  }

  const beat = (sequence: number, instanceId: string, reportedState = HealthState.HEALTH_STATE_READY): ConnectRequest => ({
    msg: { $case: "heartbeat", value: { sequence, instances: [{ instanceId, load: undefined, reportedState, announce: true }] } },
  });

  it("a replayed heartbeat sequence is a stream error and changes no state", async () => {
    const instanceId = (await sendRegister(wrap(valid()))).instance?.instanceId ?? "";
    const { stream, responses } = open(signedHello([instanceId]));
    await responses.next((response) => response.msg?.$case === "welcome");
    stream.write(beat(1, instanceId));
    await expect.poll(() => mesh.server.registry.get(instanceId)?.state).toBe(HealthState.HEALTH_STATE_READY);

    const before = snapshot(mesh.server);
    for (const sequence of [1, 0]) {
      stream.write(beat(sequence, instanceId, HealthState.HEALTH_STATE_UNHEALTHY));
      const refused = await responses.next((response) => response.msg?.$case === "error");
      expect(refused.msg?.$case === "error" && refused.msg.value).toEqual({ code: status.INVALID_ARGUMENT, message: "heartbeat.sequence: must increase", instanceId: "" });
    }
    expect(mesh.server.registry.get(instanceId)?.state).toBe(HealthState.HEALTH_STATE_READY);
    expect(snapshot(mesh.server)).toMatchObject({ instances: before.instances, revision: before.revision });

    // The stream survives the refusal: the next sequence still counts.
    stream.write(beat(2, instanceId, HealthState.HEALTH_STATE_UNHEALTHY));
    await expect.poll(() => mesh.server.registry.get(instanceId)?.state).toBe(HealthState.HEALTH_STATE_UNHEALTHY);
  });

  const helloRefusals: Array<[string, () => Hello, string]> = [
    ["unsigned", () => Hello.fromPartial({ sidecarId: "host-a", host: "host-a" }), "signed envelope required"],
    ["signed 31 s ago", () => signedHello([], new ManualClock(Date.now() - 31_000)), "timestamp outside window"],
    ["with a tampered payload", () => { const hello = signedHello([]); hello.envelope = { ...(hello.envelope as SignedEnvelope), payload: flipBit((hello.envelope as SignedEnvelope).payload, 2) }; return hello; }, "signature invalid"],
    ["signed for Register", () => { const hello = signedHello([]); hello.envelope = signerFor(agent).sign(Hello.encode(Hello.fromPartial({ sidecarId: "host-a" })).finish(), "/agentmesh.v1.RegistryService/Register", "agentmesh.v1.Hello", `spiffe://${mesh.trustDomain}/server`); return hello; }, "method mismatch"],
  ];

  it.each(helloRefusals)("a Hello %s ends the stream UNAUTHENTICATED", async (_case, build, reason) => {
    const before = snapshot(mesh.server);
    const { ended, responses } = open(build());
    const error = await ended;
    expect({ code: error.code, details: error.details }).toEqual({ code: status.UNAUTHENTICATED, details: reason });
    expect(responses.items).toEqual([]);
    expect(mesh.server.hub.openStreams).toBe(0);
    expect(snapshot(mesh.server)).toMatchObject({ instances: before.instances, revision: before.revision });
  });

  it("a Hello replayed on a second stream is refused as a replayed nonce", async () => {
    const hello = signedHello([]);
    const first = open(hello);
    await first.responses.next((response) => response.msg?.$case === "welcome");
    const second = open(hello);
    const error = await second.ended;
    expect({ code: error.code, details: error.details }).toEqual({ code: status.UNAUTHENTICATED, details: "nonce replayed" });
  });
});
