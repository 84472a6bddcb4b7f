// Per-identity resource limits over real mTLS calls: a breach answers
// RESOURCE_EXHAUSTED naming the limit, is counted in
// agentmesh_limit_rejections_total{limit}, changes nothing, and never touches
// another identity's budget.
import { type ClientReadableStream, status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import type { DiscoverResponse, RegisterResponse, WatchResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { manifest } from "../helpers/manifests.js";
import {
  type MintedIdentity,
  type RawClients,
  type SecureMesh,
  auditSince,
  call,
  expectCode,
  limitRejections,
  mintIdentity,
  signedRegister,
  signerFor,
  snapshot,
  spiffe,
  startSecureMesh,
} from "../helpers/mesh-pki.js";

let mesh: SecureMesh | undefined;
const watches: Array<ClientReadableStream<WatchResponse>> = [];

afterEach(async () => {
  for (const watch of watches.splice(0)) watch.cancel();
  await mesh?.close();
  mesh = undefined;
});

interface Actor {
  identity: MintedIdentity;
  clients: RawClients;
}

async function actor(secure: SecureMesh, name: string): Promise<Actor> {
  const identity = await mintIdentity(secure.server.security.ca, spiffe(secure.trustDomain, "agent", name));
  return { identity, clients: secure.clientsFor(identity) };
}

const discover = ({ clients }: Actor) =>
  call<DiscoverResponse>((metadata, options, callback) =>
    clients.registry.discover({ capability: "sql.query", versionRange: "", labelSelector: undefined, limit: 0, includeUnhealthy: true }, metadata, options, callback),
  );

const register = (secure: SecureMesh, { identity, clients }: Actor, agentManifest = manifest({ name: identity.spiffeId.split("/").pop() ?? "" })) =>
  call<RegisterResponse>((metadata, options, callback) =>
    clients.registry.register(signedRegister(signerFor(identity), secure.trustDomain, agentManifest).request, metadata, options, callback),
  );

/** Asserts one limit.breach audit entry (and nothing else) since `auditSeq`, and no registry change. */
async function expectBreachAudited(secure: SecureMesh, before: ReturnType<typeof snapshot>, actorId: string, limit: string): Promise<void> {
  expect(secure.server.registry.size).toBe(before.instances);
  expect(secure.server.registry.currentRevision).toBe(before.revision);
  const entries = await auditSince(secure.server, before.auditSeq);
  expect(entries.map((entry) => ({ action: entry.action, actor: entry.actor, outcome: entry.outcome, reason: entry.details?.reason }))).toEqual([
    { action: "limit.breach", actor: actorId, outcome: "denied", reason: limit },
  ]);
}

describe("message size", () => {
  it("a message over maxMessageBytes is RESOURCE_EXHAUSTED, changes nothing, and the connection keeps working", async () => {
    mesh = await startSecureMesh({ maxMessageBytes: 16 * 1024 });
    const agent = await actor(mesh, "sql-agent");
    await register(mesh, agent);
    const before = snapshot(mesh.server);
    const oversized = manifest({ name: "sql-agent", agentCardJson: JSON.stringify({ padding: "x".repeat(20 * 1024) }) });
    const error = await expectCode(register(mesh, agent, oversized), status.RESOURCE_EXHAUSTED);
    expect(error.details).toMatch(/larger than max/);
    expect(snapshot(mesh.server)).toMatchObject({ instances: before.instances, revision: before.revision });
    expect((await discover(agent)).instances).toHaveLength(1);
  });

  it("oversized messages do not leak the sender's in-flight slots", async () => {
    mesh = await startSecureMesh({ maxMessageBytes: 16 * 1024, identityMaxInFlight: 2 });
    const agent = await actor(mesh, "sql-agent");
    const oversized = manifest({ name: "sql-agent", agentCardJson: JSON.stringify({ padding: "x".repeat(20 * 1024) }) });
    for (let index = 0; index < 4; index += 1) await expectCode(register(mesh, agent, oversized), status.RESOURCE_EXHAUSTED);
    for (let index = 0; index < 3; index += 1) await discover(agent);
  });
});

describe("request rate per identity (manual clock)", () => {
  it("past the burst calls are RESOURCE_EXHAUSTED and counted; another identity keeps its own budget; time refills it", async () => {
    const clock = new ManualClock(Date.now());
    mesh = await startSecureMesh({ identityRatePerSecond: 2, identityBurst: 3 }, undefined, clock);
    const busy = await actor(mesh, "busy");
    const quiet = await actor(mesh, "quiet");
    for (let index = 0; index < 3; index += 1) await discover(busy);

    const rejectedBefore = await limitRejections(mesh.server, "identity_rate");
    const before = snapshot(mesh.server);
    const error = await expectCode(discover(busy), status.RESOURCE_EXHAUSTED);
    expect(error.details).toBe("limit exceeded: request rate per identity");
    await expectBreachAudited(mesh, before, busy.identity.spiffeId, "rate");
    expect(await limitRejections(mesh.server, "identity_rate")).toBe(rejectedBefore + 1);

    // A refused Register changes nothing either.
    const beforeRegister = snapshot(mesh.server);
    await expectCode(register(mesh, busy), status.RESOURCE_EXHAUSTED);
    await expectBreachAudited(mesh, beforeRegister, busy.identity.spiffeId, "rate");

    for (let index = 0; index < 2; index += 1) await discover(quiet);
    await register(mesh, quiet);
    await expectCode(discover(quiet), status.RESOURCE_EXHAUSTED);

    clock.advance(500);
    await discover(busy);
    await expectCode(discover(busy), status.RESOURCE_EXHAUSTED);
    expect(await limitRejections(mesh.server, "identity_rate")).toBe(rejectedBefore + 4);
  });
});

describe("in-flight calls per identity", () => {
  it("open streams never use the unary slots: an identity holding streams still calls, past its stream limit a new stream is refused, and a closed one frees its slot", async () => {
    mesh = await startSecureMesh({ identityMaxInFlight: 2, identityMaxStreams: 2 });
    const streaming = await actor(mesh, "streaming");
    const other = await actor(mesh, "other");
    const openWatch = async (who: Actor): Promise<ClientReadableStream<WatchResponse>> => {
      const watch = who.clients.registry.watch({ sinceRevision: 0, capability: "", epoch: "" });
      watches.push(watch);
      watch.on("error", () => {});
      await new Promise<void>((resolve) => watch.once("data", () => resolve()));
      return watch;
    };
    const first = await openWatch(streaming);
    await openWatch(streaming);

    // Long-lived streams used to hold these slots and lock the identity out of every call.
    await Promise.all([discover(streaming), discover(streaming)]);
    await register(mesh, streaming);

    const rejectedBefore = await limitRejections(mesh.server, "identity_streams");
    const before = snapshot(mesh.server);
    const refused = streaming.clients.registry.watch({ sinceRevision: 0, capability: "", epoch: "" });
    const error = await new Promise<{ code: number; details: string }>((resolve) => refused.on("error", resolve));
    expect({ code: error.code, details: error.details }).toEqual({ code: status.RESOURCE_EXHAUSTED, details: "limit exceeded: open streams per identity" });
    await expectBreachAudited(mesh, before, streaming.identity.spiffeId, "streams");
    expect(await limitRejections(mesh.server, "identity_streams")).toBe(rejectedBefore + 1);

    await openWatch(other);
    first.cancel();
    await expect.poll(() => openWatch(streaming).then(() => true, () => false), { timeout: 5000 }).toBe(true);
  });

  it("refused calls do not leak slots", async () => {
    mesh = await startSecureMesh({ identityMaxInFlight: 1 });
    const agent = await actor(mesh, "sql-agent");
    // Fifty calls at once against one slot: some are refused, and afterwards the slot is free.
    const outcomes = await Promise.all(Array.from({ length: 50 }, () => discover(agent).then(() => "ok", (error: { code: number }) => error.code)));
    expect(outcomes).toContain("ok");
    expect(new Set(outcomes.filter((outcome) => outcome !== "ok"))).toEqual(new Set([status.RESOURCE_EXHAUSTED]));
    for (let index = 0; index < 5; index += 1) await discover(agent);
  });
});
