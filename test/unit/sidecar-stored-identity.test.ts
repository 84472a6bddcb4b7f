import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { MeshCa } from "../../services/identity/domain/ca.js";
import { loadStoredIdentity, storeIdentity, storedIdentityFiles } from "../../sidecar/stored-identity.js";
import { foreignCa, mintIdentity, spiffe } from "../helpers/mesh-pki.js";
import { tempDir } from "../helpers/processes.js";

const sidecarId = spiffe("agentmesh.local", "sidecar", "host-a");

async function stored(ca: MeshCa, spiffeId = sidecarId, ttlMs = 60_000) {
  const identity = await mintIdentity(ca, spiffeId, { ttlMs });
  const dataDir = tempDir();
  await storeIdentity(dataDir, { ...identity, notBeforeMs: 0, expiresAtMs: Date.parse(identity.certificate.validTo) });
  return { identity, dataDir };
}

describe("the certificate a sidecar keeps in its data dir", () => {
  it("is used when it is this sidecar's, signed by the trust bundle, matches its key and is valid", async () => {
    const ca = await foreignCa("agentmesh.local");
    const { identity, dataDir } = await stored(ca);
    const loaded = await loadStoredIdentity(dataDir, { spiffeId: sidecarId, trustBundlePem: ca.trustBundle(), nowMs: Date.now() });
    expect(loaded).toMatchObject({ kind: "usable", material: { serial: identity.serial, spiffeId: sidecarId, privateKeyPem: identity.privateKeyPem } });
  });

  it("is absent in a fresh data dir", async () => {
    expect(await loadStoredIdentity(tempDir(), { spiffeId: sidecarId, trustBundlePem: [], nowMs: Date.now() })).toEqual({ kind: "none" });
  });

  it.each([
    ["another host's", { spiffeId: spiffe("agentmesh.local", "sidecar", "host-b") }, "is not a certificate of"],
    ["another CA's", { otherCa: true }, "was not signed by the CA of --ca-cert"],
    ["an expired one", { nowMs: Date.now() + 120_000 }, "expired at"],
    ["one with another key", { swapKey: true }, "does not match its key"],
    ["garbage", { garbage: true }, "cannot be read as PEM"],
  ])("refuses %s, saying why", async (_name, variant: { spiffeId?: string; otherCa?: boolean; nowMs?: number; swapKey?: boolean; garbage?: boolean }, problem) => {
    const ca = await foreignCa("agentmesh.local");
    const { dataDir } = await stored(ca, variant.spiffeId);
    if (variant.swapKey) writeFileSync(join(dataDir, storedIdentityFiles.key), (await mintIdentity(ca, sidecarId)).privateKeyPem);
    if (variant.garbage) writeFileSync(join(dataDir, storedIdentityFiles.cert), "not a certificate");
    const bundle = variant.otherCa ? (await foreignCa("agentmesh.local")).trustBundle() : ca.trustBundle();
    const loaded = await loadStoredIdentity(dataDir, { spiffeId: sidecarId, trustBundlePem: bundle, nowMs: variant.nowMs ?? Date.now() });
    expect(loaded.kind).toBe("unusable");
    expect(loaded.kind === "unusable" ? loaded.problem : "").toContain(problem);
  });
});
