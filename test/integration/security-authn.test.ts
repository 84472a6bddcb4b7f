// Who may talk to an mTLS server at all: every case is a real handshake and a real
// RPC, and every refusal must leave the registry untouched and add exactly one
// audit entry (the denial itself).
import { X509Certificate } from "node:crypto";
import { type ServiceError, status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MeshClient, type MeshClientEvent } from "../../sdk/ts/src/client/mesh-client.js";
import { MeshIdentity } from "../../sdk/ts/src/client/mesh-identity.js";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { generateKeyAndCsr } from "../../sdk/ts/src/core/csr.js";
import { type DiscoverResponse, RegisterRequest, type RegisterResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { WatchResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { loadOrCreateCa } from "../../services/identity/domain/ca.js";
import { EventLog } from "../helpers/events.js";
import { manifest } from "../helpers/manifests.js";
import {
  type MintedIdentity,
  type RawClients,
  type SecureMesh,
  auditSince,
  call,
  expectCode,
  expectOnlyDenialAudited,
  forgeCertificate,
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
const closers: Array<() => void> = [];

beforeEach(async () => {
  mesh = await startSecureMesh();
});

afterEach(async () => {
  for (const close of closers.splice(0)) close();
  await mesh.close();
});

const discover = (clients: RawClients) =>
  call<DiscoverResponse>((metadata, options, callback) =>
    clients.registry.discover({ capability: "sql.query", versionRange: "", labelSelector: undefined, limit: 0, includeUnhealthy: true }, metadata, options, callback),
  );

const register = (clients: RawClients, identity: MintedIdentity, name = "sql-agent") =>
  call<RegisterResponse>((metadata, options, callback) =>
    clients.registry.register(signedRegister(signerFor(identity), mesh.trustDomain, manifest({ name })).request, metadata, options, callback),
  );

/** Discover and Register both refused as UNAUTHENTICATED, each leaving one audit entry and nothing else. */
async function expectLockedOut(clients: RawClients, identity: MintedIdentity | undefined, reason: string): Promise<void> {
  let before = snapshot(mesh.server);
  const discovered = await expectCode(discover(clients), status.UNAUTHENTICATED);
  expect(discovered.details).toBe(reason);
  const entry = await expectOnlyDenialAudited(mesh.server, before, "call.unauthenticated");
  expect(entry).toMatchObject({ target: "/agentmesh.v1.RegistryService/Discover", details: { reason } });

  before = snapshot(mesh.server);
  const registerCall = identity
    ? register(clients, identity)
    : call<RegisterResponse>((metadata, options, callback) =>
        clients.registry.register(RegisterRequest.fromPartial({ manifest: manifest(), host: "h" }), metadata, options, callback),
      );
  expect((await expectCode(registerCall, status.UNAUTHENTICATED)).details).toBe(reason);
  await expectOnlyDenialAudited(mesh.server, before, "call.unauthenticated");
}

describe("client certificates", () => {
  it("a valid agent certificate from the mesh CA is accepted (the baseline the refusals differ from)", async () => {
    const agent = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "agent", "sql-agent"));
    const clients = mesh.clientsFor(agent);
    const registered = await register(clients, agent);
    expect(registered.instance?.spiffeId).toBe(agent.spiffeId);
    expect((await discover(clients)).instances.map((instance) => instance.instanceId)).toEqual([registered.instance?.instanceId]);
  });

  it("without a client certificate Discover and Register are UNAUTHENTICATED", async () => {
    await expectLockedOut(mesh.clientsFor(), undefined, "valid client certificate required");
  });

  it("without a client certificate a join token still gets a certificate", async () => {
    const { token } = await mesh.joinToken({ host: "host-a", agents: ["sql-agent"] });
    const { response, identity } = await joinOverRpc(mesh, spiffe(mesh.trustDomain, "sidecar", "host-a"), token);
    expect(response.spiffeId).toBe(spiffe(mesh.trustDomain, "sidecar", "host-a"));
    expect(response.allowedAgentNames).toEqual(["sql-agent"]);
    expect(new X509Certificate(response.certificateChainPem[0] ?? "").verify(mesh.server.security.ca.certificate.publicKey)).toBe(true);
    // The new identity works at once, for the names its token allowed.
    expect((await register(mesh.clientsFor(identity), identity)).instance?.manifest?.name).toBe("sql-agent");
  });

  // TLS itself fails to verify these, and grpc-js then shows the server no certificate at all.
  it("a certificate from another CA is UNAUTHENTICATED", async () => {
    const other = await foreignCa(mesh.trustDomain);
    const stranger = await mintIdentity(other, spiffe(mesh.trustDomain, "agent", "sql-agent"));
    await expectLockedOut(mesh.clientsFor(stranger), stranger, "valid client certificate required");
  });

  it("an expired certificate is UNAUTHENTICATED", async () => {
    // The server's own CA, driven by a clock two hours back: a leaf that expired long ago.
    const { certPem, keyPem } = await readCaFiles(mesh.dataDir);
    const past = new ManualClock(Date.now() - 2 * 60 * 60_000);
    const pastCa = await loadOrCreateCa({ certPem, keyPem, trustDomain: mesh.trustDomain, clock: past });
    const expired = await mintIdentity(pastCa, spiffe(mesh.trustDomain, "agent", "sql-agent"), { ttlMs: 60_000 });
    expect(Date.parse(expired.certificate.validTo)).toBeLessThan(Date.now());
    await expectLockedOut(mesh.clientsFor(expired), expired, "valid client certificate required");
  });

  it("a certificate that expires while its connection is open stops working on that connection", async () => {
    const shortLived = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "agent", "sql-agent"), { ttlMs: 2000 });
    const clients = mesh.clientsFor(shortLived);
    await discover(clients);
    const expiresAtMs = Date.parse(shortLived.certificate.validTo);
    await expect.poll(() => Date.now() >= expiresAtMs, { timeout: 5000, interval: 100 }).toBe(true);
    await expectLockedOut(clients, shortLived, "client certificate expired or not yet valid");
  });

  it("a certificate with two URI SANs is UNAUTHENTICATED even when signed by the mesh CA", async () => {
    const { certPem, keyPem } = await readCaFiles(mesh.dataDir);
    const twoNames = await forgeCertificate({
      caCertPem: certPem,
      caKeyPem: keyPem,
      uris: [spiffe(mesh.trustDomain, "agent", "sql-agent"), spiffe(mesh.trustDomain, "admin", "operator")],
    });
    await expectLockedOut(mesh.clientsFor(twoNames), twoNames, "peer certificate has several URI SANs");
  });

  it("a certificate of another trust domain is UNAUTHENTICATED even when signed by the mesh CA", async () => {
    const { certPem, keyPem } = await readCaFiles(mesh.dataDir);
    const foreignDomain = await forgeCertificate({ caCertPem: certPem, caKeyPem: keyPem, uris: ["spiffe://evil.example/admin/operator"] });
    await expectLockedOut(mesh.clientsFor(foreignDomain), foreignDomain, "peer certificate is from another trust domain");
  });

  it("a certificate without a SPIFFE ID is UNAUTHENTICATED", async () => {
    const { certPem, keyPem } = await readCaFiles(mesh.dataDir);
    const noName = await forgeCertificate({ caCertPem: certPem, caKeyPem: keyPem, uris: [] });
    await expectLockedOut(mesh.clientsFor(noName), noName, "peer certificate has no SPIFFE ID");
  });
});

describe("revocation", () => {
  async function joinedAgent(): Promise<{ identity: MeshIdentity; client: MeshClient; events: EventLog<MeshClientEvent> }> {
    const { token } = await mesh.joinToken({ host: "host-r", agents: ["sql-agent"], uses: 2 });
    const identity = await MeshIdentity.join({
      address: mesh.server.address,
      trustBundlePem: mesh.trustBundle.join(""),
      spiffeId: spiffe(mesh.trustDomain, "sidecar", "host-r"),
      joinToken: token,
    });
    const events = new EventLog<MeshClientEvent>();
    const client = new MeshClient({
      address: mesh.server.address,
      sidecarId: "host-r",
      credentials: identity.channelCredentials(),
      signer: identity,
      onEvent: (event) => events.push(event),
    });
    closers.push(() => client.close(), () => identity.close());
    await client.register(manifest());
    await client.waitConnected();
    return { identity, client, events };
  }

  const revoke = (target: string) =>
    call<{ revoked: number }>((metadata, options, callback) => mesh.adminClients.identity.revokeCertificate({ target, reason: "compromised" }, metadata, options, callback));

  it("by serial: the next call is UNAUTHENTICATED and its Connect and Watch streams close within a second", async () => {
    const { identity, client, events } = await joinedAgent();
    const serial = identity.source.current?.serial ?? "";
    const clients = mesh.clientsFor({ chainPem: identity.source.current?.chainPem ?? [], privateKeyPem: identity.source.current?.privateKeyPem ?? "" });
    const watchErrors = new EventLog<ServiceError>();
    const watch = clients.registry.watch({ sinceRevision: 0, capability: "", epoch: "" });
    watch.on("data", (_event: WatchResponse) => {});
    watch.on("error", (error: ServiceError) => watchErrors.push(error));
    await discover(clients);

    const before = snapshot(mesh.server);
    expect(await revoke(serial)).toEqual({ revoked: 1 });
    const revokedEntries = await auditSince(mesh.server, before.auditSeq);
    expect(revokedEntries.map((entry) => [entry.action, entry.target, entry.details?.serial])).toEqual([["cert.revoke", identity.spiffeId, serial]]);

    const disconnected = await events.next((event) => event.type === "disconnected", 1000);
    expect(disconnected).toMatchObject({ code: status.UNAUTHENTICATED, details: "certificate revoked" });
    expect((await watchErrors.next(() => true, 1000)).code).toBe(status.UNAUTHENTICATED);

    const afterRevoke = snapshot(mesh.server);
    expect((await expectCode(discover(clients), status.UNAUTHENTICATED)).details).toBe("client certificate revoked");
    await expectOnlyDenialAudited(mesh.server, afterRevoke, "call.unauthenticated");
    // The instance it registered is not deleted by the revocation; it loses its stream.
    expect(mesh.server.registry.size).toBe(1);
    client.close();
  });

  it("by SPIFFE ID: every valid certificate of the identity is revoked, and a fresh join gets a working one", async () => {
    const spiffeId = spiffe(mesh.trustDomain, "agent", "sql-agent");
    const { token } = await mesh.joinToken({ host: "host-x", agents: ["sql-agent"], uses: 3 });
    const first = await joinOverRpc(mesh, spiffeId, token);
    const second = await joinOverRpc(mesh, spiffeId, token);
    const firstClients = mesh.clientsFor(first.identity);
    const secondClients = mesh.clientsFor(second.identity);
    await discover(firstClients);
    await discover(secondClients);

    expect(await revoke(spiffeId)).toEqual({ revoked: 2 });
    // Revoking again finds nothing new.
    expect(await revoke(spiffeId)).toEqual({ revoked: 0 });
    for (const clients of [firstClients, secondClients]) {
      const before = snapshot(mesh.server);
      expect((await expectCode(discover(clients), status.UNAUTHENTICATED)).details).toBe("client certificate revoked");
      await expectOnlyDenialAudited(mesh.server, before, "call.unauthenticated");
    }
    const third = await joinOverRpc(mesh, spiffeId, token);
    expect((await discover(mesh.clientsFor(third.identity))).instances).toEqual([]);
  });

  it("an unknown serial is NOT_FOUND and a malformed target INVALID_ARGUMENT", async () => {
    await expectCode(revoke("7f00ff"), status.NOT_FOUND);
    await expectCode(revoke("not-hex!"), status.INVALID_ARGUMENT);
    await expectCode(revoke("spiffe://UPPER/agent/x"), status.INVALID_ARGUMENT);
  });
});

describe("join tokens", () => {
  const sidecarId = () => spiffe(mesh.trustDomain, "sidecar", "host-j");

  /**
   * Issuance refused with `code`: no certificate recorded, and the `audited` entries
   * (each with the reason). Refusals are sampled (refusal-auditor.ts): the token's
   * denial (join_token.use, keyed by the identity asked for) and the generic
   * refused-call entry (keyed by peer, method and reason) are each written for the
   * first refusal in a window and only counted for repeats.
   */
  async function expectJoinRefused(
    token: string,
    spiffeId: string,
    code: number,
    audited?: { reason: string; actions: string[] },
    csrPem?: string,
  ): Promise<void> {
    const before = snapshot(mesh.server);
    await expectCode(joinOverRpc(mesh, spiffeId, token, { csrPem }), code);
    const entries = await auditSince(mesh.server, before.auditSeq);
    expect(entries.some((entry) => entry.action === "cert.issue" || entry.outcome === "success")).toBe(false);
    if (audited === undefined) expect(entries).toEqual([]);
    else expect(entries.map((entry) => [entry.action, entry.outcome, entry.details?.reason])).toEqual(audited.actions.map((action) => [action, "denied", audited.reason]));
    expect(mesh.server.registry.size).toBe(before.instances);
  }

  /** The token still has `usesLeft` uses after this successful join. */
  async function expectUsesLeftAfterJoin(token: string, usesLeft: number): Promise<void> {
    const before = snapshot(mesh.server);
    await joinOverRpc(mesh, sidecarId(), token);
    const entries = await auditSince(mesh.server, before.auditSeq);
    expect(entries.find((entry) => entry.action === "join_token.use")?.details).toEqual({ usesLeft });
  }

  it("a reused single-use token is UNAUTHENTICATED with nothing issued", async () => {
    const { token } = await mesh.joinToken({ host: "host-j", agents: ["sql-agent"] });
    await expectUsesLeftAfterJoin(token, 0);
    await expectJoinRefused(token, sidecarId(), status.UNAUTHENTICATED, { reason: "join token invalid or expired", actions: ["join_token.use", "call.denied"] });
  });

  it("a token for another name or host is UNAUTHENTICATED and not spent", async () => {
    const { token } = await mesh.joinToken({ host: "host-j", agents: ["sql-agent"], uses: 2 });
    const reason = "join token not valid for this identity";
    await expectJoinRefused(token, spiffe(mesh.trustDomain, "agent", "other-agent"), status.UNAUTHENTICATED, { reason, actions: ["join_token.use", "call.denied"] });
    // Another identity asked for: its own token denial; the same peer's same refused call is only counted.
    await expectJoinRefused(token, spiffe(mesh.trustDomain, "sidecar", "other-host"), status.UNAUTHENTICATED, { reason, actions: ["join_token.use"] });
    await expectUsesLeftAfterJoin(token, 1);
  });

  it("a token cannot mint an admin or a server identity", async () => {
    const { token } = await mesh.joinToken({ host: "host-j", agents: ["*"] });
    for (const kind of ["admin", "server"] as const) {
      const before = snapshot(mesh.server);
      await expectCode(joinOverRpc(mesh, spiffe(mesh.trustDomain, kind, "host-j"), token), status.PERMISSION_DENIED);
      // The second, from the same peer with the same reason, is counted for the window's summary.
      expect((await auditSince(mesh.server, before.auditSeq)).map((entry) => entry.action)).toEqual(kind === "admin" ? ["call.denied"] : []);
    }
    await expectUsesLeftAfterJoin(token, 0);
  });

  it("an unknown or malformed token is UNAUTHENTICATED", async () => {
    const reason = "join token invalid or expired";
    await expectJoinRefused("A".repeat(43), sidecarId(), status.UNAUTHENTICATED, { reason, actions: ["join_token.use", "call.denied"] });
    await expectJoinRefused("short", sidecarId(), status.UNAUTHENTICATED, { reason, actions: [] });
  });

  it("a CSR whose signature does not match its key is INVALID_ARGUMENT and the token is not spent", async () => {
    const { token } = await mesh.joinToken({ host: "host-j", agents: ["sql-agent"] });
    const { csrPem } = await generateKeyAndCsr(sidecarId());
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
    // The signature is the DER's last field: flipping its last byte breaks proof of possession.
    der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
    const badPem = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END CERTIFICATE REQUEST-----\n`;
    await expectJoinRefused(token, sidecarId(), status.INVALID_ARGUMENT, undefined, badPem);
    await expectJoinRefused(token, sidecarId(), status.INVALID_ARGUMENT, undefined, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n");
    await expectUsesLeftAfterJoin(token, 0);
  });

  it("an identity renews only its own SPIFFE ID", async () => {
    const agent = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "agent", "sql-agent"));
    const clients = mesh.clientsFor(agent);
    const renew = async (spiffeId: string) => {
      const { csrPem } = await generateKeyAndCsr(spiffeId);
      return call<{ spiffeId: string }>((metadata, options, callback) =>
        clients.identity.issueCertificate({ csrPem, joinToken: "", spiffeId, ttlSeconds: 0 }, metadata, options, callback),
      );
    };
    expect((await renew(agent.spiffeId)).spiffeId).toBe(agent.spiffeId);
    const before = snapshot(mesh.server);
    await expectCode(renew(spiffe(mesh.trustDomain, "admin", "operator")), status.PERMISSION_DENIED);
    await expectOnlyDenialAudited(mesh.server, before, "call.denied");
  });
});

describe("join token expiry (manual clock)", () => {
  it("an expired token is UNAUTHENTICATED with nothing issued", async () => {
    await mesh.close();
    const clock = new ManualClock(Date.now());
    mesh = await startSecureMesh({}, undefined, clock);
    const { token } = await mesh.joinToken({ host: "host-j", agents: ["sql-agent"], uses: 5, ttlSeconds: 60 });
    clock.advance(60_000);
    const before = snapshot(mesh.server);
    await expectCode(joinOverRpc(mesh, spiffe(mesh.trustDomain, "sidecar", "host-j"), token), status.UNAUTHENTICATED);
    const entries = await auditSince(mesh.server, before.auditSeq);
    expect(entries.map((entry) => [entry.action, entry.outcome, entry.details?.reason])).toEqual([
      ["join_token.use", "denied", "join token invalid or expired"],
      ["call.denied", "denied", "join token invalid or expired"],
    ]);
  });
});

describe("admin RPCs", () => {
  it("CreateJoinToken, RevokeCertificate and ListAuditEvents refuse a non-admin identity with PERMISSION_DENIED", async () => {
    const sidecar = await mintIdentity(mesh.server.security.ca, spiffe(mesh.trustDomain, "sidecar", "host-a"), { allowedAgentNames: ["*"] });
    const clients = mesh.clientsFor(sidecar);
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ["CreateJoinToken", () => call((metadata, options, callback) => clients.identity.createJoinToken({ host: "h", allowedAgentNames: ["*"], maxUses: 1, ttlSeconds: 0 }, metadata, options, callback))],
      ["RevokeCertificate", () => call((metadata, options, callback) => clients.identity.revokeCertificate({ target: mesh.admin.serial, reason: "" }, metadata, options, callback))],
      ["ListAuditEvents", () => call((metadata, options, callback) => clients.identity.listAuditEvents({ limit: 10 }, metadata, options, callback))],
    ];
    for (const [method, attempt] of attempts) {
      const before = snapshot(mesh.server);
      const error = await expectCode(attempt(), status.PERMISSION_DENIED);
      expect(error.details).toBe("requires an admin identity");
      const entry = await expectOnlyDenialAudited(mesh.server, before, "call.denied");
      expect(entry).toMatchObject({ actor: sidecar.spiffeId, target: `/agentmesh.v1.IdentityService/${method}` });
    }
    // The admin's own certificate was not revoked by the refused call.
    const listed = await call<{ entriesJson: string[] }>((metadata, options, callback) => mesh.adminClients.identity.listAuditEvents({ limit: 3 }, metadata, options, callback));
    expect(listed.entriesJson).toHaveLength(3);
  });
});
