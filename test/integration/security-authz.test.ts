// No impersonation: an authenticated identity may act only for the agent names it
// covers and only on the instances it registered. Every refusal is a real RPC (or
// Connect message) that leaves the registry as it was and is audited once.
import { type ClientDuplexStream, status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ConnectRequest, type ConnectResponse, Hello } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { DeregisterResponse, RegisterResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
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
  limitRejections,
  mintIdentity,
  signedRegister,
  signerFor,
  snapshot,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";

let mesh: SecureMesh;
const streams: Array<ClientDuplexStream<ConnectRequest, ConnectResponse>> = [];

beforeEach(async () => {
  mesh = await startSecureMesh({ maxInstancesPerIdentity: 3 });
});

afterEach(async () => {
  for (const stream of streams.splice(0)) stream.cancel();
  await mesh.close();
});

interface Actor {
  identity: MintedIdentity;
  clients: RawClients;
}

async function actor(kind: "agent" | "sidecar", name: string, allowedAgentNames?: string[]): Promise<Actor> {
  const identity = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, kind, name), { allowedAgentNames });
  return { identity, clients: mesh.clientsFor(identity) };
}

const register = ({ identity, clients }: Actor, name: string, instanceId = "") =>
  call<RegisterResponse>((metadata, options, callback) =>
    clients.registry.register(signedRegister(signerFor(identity), mesh.trustDomain, manifest({ name }), { instanceId }).request, metadata, options, callback),
  );

const deregister = ({ clients }: Actor, instanceId: string) =>
  call<DeregisterResponse>((metadata, options, callback) => clients.registry.deregister({ instanceId, reason: "" }, metadata, options, callback));

/** A Connect stream opened with a signed Hello; resolves once welcomed. */
async function connect({ identity, clients }: Actor, instanceIds: string[]): Promise<{ stream: ClientDuplexStream<ConnectRequest, ConnectResponse>; responses: EventLog<ConnectResponse> }> {
  const stream = clients.orchestrator.connect();
  streams.push(stream);
  const responses = new EventLog<ConnectResponse>();
  stream.on("data", (response: ConnectResponse) => responses.push(response));
  stream.on("error", () => {});
  const hello = Hello.fromPartial({ sidecarId: identity.spiffeId, host: "host-a", instanceIds });
  hello.envelope = signerFor(identity).sign(Hello.encode(hello).finish(), connectMethod, "agentmesh.v1.Hello", `spiffe://${mesh.trustDomain}/server`);
  stream.write({ msg: { $case: "hello", value: hello } });
  await responses.next((response) => response.msg?.$case === "welcome");
  return { stream, responses };
}

describe("agent names an identity covers", () => {
  it("a sidecar registering a name its join grant does not cover is PERMISSION_DENIED", async () => {
    const sidecar = await actor("sidecar", "host-a", ["sql-agent", "summarizer"]);
    await register(sidecar, "sql-agent");
    await register(sidecar, "summarizer");
    const before = snapshot(mesh.server);
    const error = await expectCode(register(sidecar, "payments"), status.PERMISSION_DENIED);
    expect(error.details).toBe("identity may not register this agent name");
    const entry = await expectOnlyDenialAudited(mesh.server, before, "call.denied");
    expect(entry).toMatchObject({ actor: sidecar.identity.spiffeId, target: "/agentmesh.v1.RegistryService/Register" });
  });

  it("a sidecar without any grant may register nothing", async () => {
    const bare = await actor("sidecar", "host-b");
    const before = snapshot(mesh.server);
    await expectCode(register(bare, "sql-agent"), status.PERMISSION_DENIED);
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
  });

  it("an agent identity registers only its own name", async () => {
    const agent = await actor("agent", "sql-agent");
    await register(agent, "sql-agent");
    const before = snapshot(mesh.server);
    await expectCode(register(agent, "summarizer"), status.PERMISSION_DENIED);
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
  });

  it("a wildcard grant covers any name", async () => {
    const sidecar = await actor("sidecar", "host-w", ["*"]);
    expect((await register(sidecar, "anything-at-all")).instance?.manifest?.name).toBe("anything-at-all");
  });
});

describe("instance ownership", () => {
  it("one identity deregistering another's instance is PERMISSION_DENIED, and an admin may", async () => {
    const owner = await actor("sidecar", "host-a", ["*"]);
    const intruder = await actor("sidecar", "host-b", ["*"]);
    const instanceId = (await register(owner, "sql-agent")).instance?.instanceId ?? "";
    const before = snapshot(mesh.server);
    const error = await expectCode(deregister(intruder, instanceId), status.PERMISSION_DENIED);
    expect(error.details).toBe("only the owner or an admin may deregister an instance");
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
    expect(mesh.server.registry.get(instanceId)?.spiffeId).toBe(owner.identity.spiffeId);

    await deregister({ identity: mesh.admin, clients: mesh.adminClients }, instanceId);
    expect(mesh.server.registry.get(instanceId)).toBeUndefined();
  });

  it("registering under another identity's instance id is PERMISSION_DENIED and leaves the instance as it was", async () => {
    const owner = await actor("sidecar", "host-a", ["*"]);
    const intruder = await actor("sidecar", "host-b", ["*"]);
    await register(owner, "sql-agent", "sql-1");
    const before = snapshot(mesh.server);
    const error = await expectCode(register(intruder, "sql-agent", "sql-1"), status.PERMISSION_DENIED);
    expect(error.details).toBe("instance_id: owned by another identity");
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
    expect(mesh.server.registry.get("sql-1")?.spiffeId).toBe(owner.identity.spiffeId);
  });

  it("a Connect stream cannot claim or heartbeat another identity's instance", async () => {
    const owner = await actor("sidecar", "host-a", ["*"]);
    const intruder = await actor("sidecar", "host-b", ["*"]);
    const instanceId = (await register(owner, "sql-agent")).instance?.instanceId ?? "";
    const before = snapshot(mesh.server);

    // Claimed in Hello: welcomed first (the documented order), then the instance is refused on the stream.
    const { stream, responses } = await connect(intruder, [instanceId]);
    const claimed = await responses.next((response) => response.msg?.$case === "error");
    expect(claimed.msg?.$case === "error" && claimed.msg.value).toEqual({ code: status.PERMISSION_DENIED, message: "instance owned by another identity", instanceId });
    expect(responses.items.map((response) => response.msg?.$case)).toEqual(["welcome", "error"]);

    // Announced in a heartbeat, as READY: refused the same way, the state does not move.
    stream.write({ msg: { $case: "heartbeat", value: { sequence: 1, instances: [{ instanceId, load: undefined, reportedState: HealthState.HEALTH_STATE_READY, announce: true }] } } });
    const announced = await responses.next((response) => response.msg?.$case === "error");
    expect(announced.msg?.$case === "error" && announced.msg.value).toMatchObject({ code: status.PERMISSION_DENIED, instanceId });
    expect(mesh.server.registry.get(instanceId)?.state).toBe(HealthState.HEALTH_STATE_STARTING);
    expect(snapshot(mesh.server)).toMatchObject({ instances: before.instances, revision: before.revision });

    // The owner's own stream makes it READY.
    const own = await connect(owner, [instanceId]);
    own.stream.write({ msg: { $case: "heartbeat", value: { sequence: 1, instances: [{ instanceId, load: undefined, reportedState: HealthState.HEALTH_STATE_READY, announce: true }] } } });
    await expect.poll(() => mesh.server.registry.get(instanceId)?.state).toBe(HealthState.HEALTH_STATE_READY);
  });
});

describe("instances per identity", () => {
  it("past the maximum Register is RESOURCE_EXHAUSTED and counted, and another identity is unaffected", async () => {
    const busy = await actor("sidecar", "host-a", ["*"]);
    for (const name of ["a-1", "a-2", "a-3"]) await register(busy, name);
    const before = snapshot(mesh.server);
    const rejectedBefore = await limitRejections(mesh.server, "registered_instances_per_identity");
    const error = await expectCode(register(busy, "a-4"), status.RESOURCE_EXHAUSTED);
    expect(error.details).toBe("limit exceeded: registered instances per identity");
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
    expect(await limitRejections(mesh.server, "registered_instances_per_identity")).toBe(rejectedBefore + 1);

    // Re-registering an instance it already has is not a new instance.
    const existing = [...mesh.server.registry.all()][0]?.instanceId ?? "";
    await register(busy, [...mesh.server.registry.all()][0]?.manifest?.name ?? "", existing);

    const other = await actor("sidecar", "host-b", ["*"]);
    expect((await register(other, "b-1")).instance?.spiffeId).toBe(other.identity.spiffeId);

    // Deregistering frees a slot.
    await deregister(busy, existing);
    await register(busy, "a-5");
  });
});
