import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { signEnvelope } from "../../sdk/ts/src/core/signing.js";
import { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import { SignedEnvelope } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import {
  DashboardTokenVerifier,
  createDashboardToken,
  dashboardNeedsAuthentication,
  maxTokenTtlMs,
} from "../../services/dashboard/index.js";
import { type MeshCa, loadOrCreateCa, splitPemCertificates } from "../../services/identity/domain/ca.js";
import { type MintedIdentity, foreignCa, mintIdentity, spiffe } from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";

const trustDomain = "dash.test";
const clock = new ManualClock(Date.now());
const dataDir = tempDir("agentmesh-dashboard-token-");
let ca: MeshCa;
let admin: MintedIdentity;
let sidecar: MintedIdentity;
let foreignAdmin: MintedIdentity;
const revoked = new Set<string>();

beforeAll(async () => {
  ca = await loadOrCreateCa({ dataDir, trustDomain, clock });
  admin = await mintIdentity(ca, spiffe(trustDomain, "admin", "operator"), { clock, ttlMs: 24 * 60 * 60_000 });
  sidecar = await mintIdentity(ca, spiffe(trustDomain, "sidecar", "host-a"), { clock });
  foreignAdmin = await mintIdentity(await foreignCa(trustDomain, clock), spiffe(trustDomain, "admin", "operator"), { clock });
});
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

function verifier(): DashboardTokenVerifier {
  return new DashboardTokenVerifier({
    trustDomain,
    verifier: new PeerVerifier(trustDomain, [...ca.trustBundle(), ...splitPemCertificates(ca.certificatePem)]),
    revocations: { isRevoked: ({ serial }) => revoked.has(serial) },
    clock,
  });
}

function tokenOf(identity: MintedIdentity, ttlMs = 15 * 60_000): string {
  return createDashboardToken({ spiffeId: identity.spiffeId, privateKey: identity.privateKey, leafDer: identity.certificate.raw, ttlMs, clock }).token;
}

/** A token as ctl would make it, with one field of the envelope changed before or after signing. */
function craftedToken(options: { payload?: string; method?: string; audience?: string; issuedAtOffsetMs?: number; tamper?: (envelope: SignedEnvelope) => void }): string {
  const issuingClock = new ManualClock(clock.nowMs() + (options.issuedAtOffsetMs ?? 0));
  const envelope = signEnvelope({
    payload: Buffer.from(options.payload ?? JSON.stringify({ expiresAtMs: issuingClock.nowMs() + 60_000 })),
    signer: admin.spiffeId,
    audience: options.audience ?? `spiffe://${trustDomain}/server`,
    method: options.method ?? "GET /dashboard",
    payloadType: "agentmesh.dashboard.v1.TokenClaims",
    privateKey: admin.privateKey,
    clock: issuingClock,
    signerChain: [admin.certificate.raw],
  });
  options.tamper?.(envelope);
  return Buffer.from(SignedEnvelope.encode(envelope).finish()).toString("base64url");
}

async function refusal(token: string): Promise<string> {
  try {
    await verifier().verify(token);
  } catch (error) {
    expect(error).toBeInstanceOf(MeshError);
    expect((error as MeshError).kind).toBe("unauthenticated");
    return (error as MeshError).message;
  }
  throw new Error("token was accepted");
}

describe("dashboard tokens", () => {
  it("an admin's token is accepted until it expires, and names the admin", async () => {
    const token = tokenOf(admin, 10 * 60_000);
    const session = await verifier().verify(token);
    expect(session).toEqual({ spiffeId: admin.spiffeId, serial: admin.serial, expiresAtMs: clock.nowMs() + 10 * 60_000 });
    // Used again and again (a bearer token), not refused as a replay.
    await expect(verifier().verify(token)).resolves.toMatchObject({ spiffeId: admin.spiffeId });
    expect(token.length).toBeLessThan(2000);
  });

  it("stops working at its expiry, and stillValid says so for an open session", async () => {
    const tokens = verifier();
    const session = await tokens.verify(tokenOf(admin, 60_000));
    clock.advance(59_000);
    expect(tokens.stillValid(session)).toBe(true);
    clock.advance(1_000);
    expect(tokens.stillValid(session)).toBe(false);
    clock.advance(-60_000);
  });

  it("dies with its certificate's revocation", async () => {
    const tokens = verifier();
    const token = tokenOf(admin);
    const session = await tokens.verify(token);
    revoked.add(admin.serial);
    try {
      expect(tokens.stillValid(session)).toBe(false);
      expect(await refusal(token)).toBe("token certificate revoked");
    } finally {
      revoked.delete(admin.serial);
    }
  });

  it("never outlives the admin certificate", async () => {
    const shortLived = await mintIdentity(ca, spiffe(trustDomain, "admin", "brief"), { clock, ttlMs: 5 * 60_000 });
    const session = await verifier().verify(tokenOf(shortLived, 60 * 60_000));
    expect(session.expiresAtMs).toBe(Date.parse(shortLived.certificate.validTo));
  });

  it.each([
    { problem: "empty", token: () => "", reason: "token malformed" },
    { problem: "not base64url", token: () => "abc$def", reason: "token malformed" },
    { problem: "not an envelope", token: () => Buffer.from([0xff, 0xff, 0xff, 0xff]).toString("base64url"), reason: "token malformed" },
    { problem: "a stray trailing character", token: () => `${tokenOf(admin)}x`, reason: "token malformed" },
    { problem: "too long", token: () => "A".repeat(9000), reason: "token malformed" },
    { problem: "no certificate", token: () => craftedToken({ tamper: (envelope) => (envelope.signerChain = []) }), reason: "token carries no certificate" },
    { problem: "signed by a sidecar", token: () => tokenOfSidecar(), reason: "token not signed by an admin identity" },
    { problem: "from another CA", token: () => tokenOf(foreignAdmin), reason: "client certificate not issued by the mesh CA" },
    { problem: "for another purpose (method)", token: () => craftedToken({ method: "/agentmesh.v1.RegistryService/Register" }), reason: "method mismatch" },
    { problem: "for another trust domain", token: () => craftedToken({ audience: "spiffe://other.test/server" }), reason: "audience mismatch" },
    {
      problem: "an expiry extended after signing",
      token: () => craftedToken({ tamper: (envelope) => (envelope.payload = Buffer.from(JSON.stringify({ expiresAtMs: clock.nowMs() + 10 * 60 * 60_000 }))) }),
      reason: "signature invalid",
    },
    { problem: "a lifetime over the maximum", token: () => craftedToken({ payload: JSON.stringify({ expiresAtMs: clock.nowMs() + maxTokenTtlMs + 1 }) }), reason: "token lifetime not allowed" },
    { problem: "issued long ago", token: () => craftedToken({ issuedAtOffsetMs: -(maxTokenTtlMs + 1) }), reason: "timestamp outside window" },
    { problem: "issued in the future", token: () => craftedToken({ issuedAtOffsetMs: 5 * 60_000 }), reason: "token issued in the future" },
    { problem: "expired", token: () => craftedToken({ issuedAtOffsetMs: -120_000 }), reason: "token expired" },
    { problem: "claims that are not JSON", token: () => craftedToken({ payload: "{expires" }), reason: "token malformed" },
    { problem: "no expiry claim", token: () => craftedToken({ payload: "{}" }), reason: "token malformed" },
  ])("is refused when $problem", async ({ token, reason }) => {
    expect(await refusal(token())).toBe(reason);
  });

  it("cannot be made for a non-admin identity or with a lifetime over 12 h", () => {
    expect(() => tokenOf(sidecar)).toThrow(/admin credentials/);
    expect(() => tokenOf(admin, maxTokenTtlMs + 1000)).toThrow(/token lifetime must be 1s-12h/);
  });
});

/** A token signed by a sidecar's key (createDashboardToken refuses to make one, so it is signed by hand). */
function tokenOfSidecar(): string {
  const envelope = signEnvelope({
    payload: Buffer.from(JSON.stringify({ expiresAtMs: clock.nowMs() + 60_000 })),
    signer: sidecar.spiffeId,
    audience: `spiffe://${trustDomain}/server`,
    method: "GET /dashboard",
    payloadType: "agentmesh.dashboard.v1.TokenClaims",
    privateKey: sidecar.privateKey,
    clock,
    signerChain: [sidecar.certificate.raw],
  });
  return Buffer.from(SignedEnvelope.encode(envelope).finish()).toString("base64url");
}

describe("when the dashboard asks for a token", () => {
  it.each([
    ["127.0.0.1", false],
    ["127.1.2.3", false],
    ["localhost", false],
    ["::1", false],
    ["[::1]", false],
    ["0.0.0.0", true],
    ["::", true],
    ["10.0.0.5", true],
    ["agentmesh.default.svc", true],
    ["127.0.0.1.example", true],
  ])("--http-host %s: %s", (host, needed) => expect(dashboardNeedsAuthentication(host)).toBe(needed));
});
