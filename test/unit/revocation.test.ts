import { beforeEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { MemoryCertificateStore } from "../../services/identity/adapters/memory-certificate-store.js";
import { MemoryRevocationStore } from "../../services/identity/adapters/memory-revocation-store.js";
import { RevocationList } from "../../services/identity/domain/revocations.js";
import { RevokedSerials } from "../../sdk/ts/src/core/tls/revoked-serials.js";

const agent = "spiffe://mesh.local/agent/summarizer";
const other = "spiffe://mesh.local/agent/other";
const admin = { reason: "key compromised", revokedBy: "spiffe://mesh.local/admin/alice" };

let clock: ManualClock;
let certificates: MemoryCertificateStore;
let store: MemoryRevocationStore;
let revocations: RevocationList;

beforeEach(async () => {
  clock = new ManualClock();
  certificates = new MemoryCertificateStore();
  store = new MemoryRevocationStore();
  revocations = new RevocationList({ certificates, store, clock });
  const nowMs = clock.nowMs();
  await certificates.recordIssued({ serial: "4a01", spiffeId: agent, issuedAtMs: nowMs, notAfterMs: nowMs + 3_600_000 });
  await certificates.recordIssued({ serial: "4a02", spiffeId: agent, issuedAtMs: nowMs, notAfterMs: nowMs + 7_200_000 });
  await certificates.recordIssued({ serial: "4b01", spiffeId: other, issuedAtMs: nowMs, notAfterMs: nowMs + 3_600_000 });
});

describe("RevocationList", () => {
  it("revokes one certificate by serial, in any case or zero padding", async () => {
    const added = await revocations.revoke("004A01", admin);
    expect(added).toMatchObject([{ serial: "4a01", spiffeId: agent, reason: "key compromised", revokedAtMs: clock.nowMs() }]);
    expect(revocations.isRevoked({ serial: "4A01" })).toBe(true);
    expect(revocations.isRevoked({ serial: "4a02" })).toBe(false);
    expect(revocations.isRevoked({ serial: "4b01" })).toBe(false);
  });

  it("revokes every valid certificate of a SPIFFE ID and none of another's", async () => {
    const added = await revocations.revoke(agent, admin);
    expect(added.map((record) => record.serial).sort()).toEqual(["4a01", "4a02"]);
    expect(revocations.isRevoked({ serial: "4a01" })).toBe(true);
    expect(revocations.isRevoked({ serial: "4a02" })).toBe(true);
    expect(revocations.isRevoked({ serial: "4b01" })).toBe(false);
  });

  it("leaves a certificate issued after the revocation valid", async () => {
    await revocations.revoke(agent, admin);
    await certificates.recordIssued({ serial: "4a03", spiffeId: agent, issuedAtMs: clock.nowMs(), notAfterMs: clock.nowMs() + 60_000 });
    expect(revocations.isRevoked({ serial: "4a03" })).toBe(false);
  });

  it("is idempotent", async () => {
    await revocations.revoke(agent, admin);
    expect(await revocations.revoke(agent, admin)).toEqual([]);
    expect(await revocations.revoke("4a01", admin)).toEqual([]);
    expect(revocations.list()).toHaveLength(2);
  });

  it("survives a restart through the store", async () => {
    await revocations.revoke("4a02", admin);
    const restarted = new RevocationList({ certificates, store, clock });
    expect(restarted.isRevoked({ serial: "4a02" })).toBe(false);
    await restarted.load();
    expect(restarted.isRevoked({ serial: "4a02" })).toBe(true);
  });

  it("applies revocations replicated from another server", async () => {
    const [record] = await revocations.revoke("4b01", admin);
    const replica = new RevocationList({ certificates: new MemoryCertificateStore(), store: new MemoryRevocationStore(), clock });
    replica.apply(record ? [record] : []);
    expect(replica.isRevoked({ serial: "4B01" })).toBe(true);
  });

  it("forgets revocations once the certificate has expired anyway", async () => {
    await revocations.revoke(agent, admin);
    clock.advance(3_600_000);
    expect(revocations.list().map((record) => record.serial)).toEqual(["4a02"]);
    expect(revocations.prune()).toBe(1);
    expect(revocations.isRevoked({ serial: "4a01" })).toBe(false);
    expect(revocations.isRevoked({ serial: "4a02" })).toBe(true);
    expect((await store.listActive(clock.nowMs())).map((record) => record.serial)).toEqual(["4a02"]);
  });

  it("does not revoke already expired certificates of a SPIFFE ID", async () => {
    clock.advance(3_600_000);
    expect((await revocations.revoke(agent, admin)).map((record) => record.serial)).toEqual(["4a02"]);
  });

  it.each([
    ["an unknown serial", "ffff", new MeshError("notFound", "certificate not found")],
    ["a malformed target", "not-hex", new MeshError("invalidArgument", "revocation target must be a serial or a SPIFFE ID")],
    ["a malformed SPIFFE ID", "spiffe://mesh.local/agent", new MeshError("invalidArgument", "revocation target must be a serial or a SPIFFE ID")],
  ])("refuses %s", async (_label, target, error) => {
    await expect(revocations.revoke(target, admin)).rejects.toThrow(error);
    expect(revocations.list()).toEqual([]);
  });

  it("answers zero revocations for a SPIFFE ID with no valid certificate", async () => {
    expect(await revocations.revoke("spiffe://mesh.local/agent/nobody", admin)).toEqual([]);
  });
});

describe("RevokedSerials (a sidecar's copy, from Connect)", () => {
  const entry = (serial: string, notAfterMs: number) => ({ serial, spiffeId: "spiffe://mesh.local/sidecar/host-b", notAfterMs });

  it("adds incremental notices, answers only what is new, matches serials in any case and with leading zeros", () => {
    const clock = new ManualClock(1_000);
    const revoked = new RevokedSerials(clock);
    expect(revoked.apply({ full: false, certificates: [entry("0A1b", 5_000)] })).toEqual(["a1b"]);
    expect(revoked.apply({ full: false, certificates: [entry("a1b", 5_000), entry("c2", 5_000)] })).toEqual(["c2"]);
    expect([revoked.has("A1B"), revoked.has("000a1b"), revoked.has("c2"), revoked.has("d3")]).toEqual([true, true, true, false]);
  });

  it("a full list replaces the set; certificates past their expiry are forgotten", () => {
    const clock = new ManualClock(1_000);
    const revoked = new RevokedSerials(clock);
    revoked.apply({ full: false, certificates: [entry("a1", 2_000), entry("b2", 9_000)] });
    expect(revoked.apply({ full: true, certificates: [entry("b2", 9_000), entry("c3", 9_000), entry("e5", 500)] })).toEqual(["c3"]);
    expect([revoked.has("a1"), revoked.has("b2"), revoked.has("c3"), revoked.has("e5")]).toEqual([false, true, true, false]);
    clock.advance(8_000);
    revoked.apply({ full: false, certificates: [] });
    expect([revoked.has("b2"), revoked.size]).toEqual([false, 0]);
  });
});
