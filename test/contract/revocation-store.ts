import { afterEach, describe, expect, it } from "vitest";
import type { RevocationRecord, RevocationStore } from "../../services/identity/ports.js";
import type { CreateHarness, StoreHarness } from "./store-harness.js";

const nowMs = 1_700_000_000_000;

const revocation = (serial: string, overrides: Partial<RevocationRecord> = {}): RevocationRecord => ({
  serial,
  spiffeId: "spiffe://mesh.local/sidecar/host-a",
  reason: "key compromise",
  revokedAtMs: nowMs,
  revokedBy: "spiffe://mesh.local/admin/alice",
  notAfterMs: nowMs + 60_000,
  ...overrides,
});

/** The RevocationStore contract; every adapter runs it unchanged. */
export function describeRevocationStore(adapterName: string, create: CreateHarness<RevocationStore>): void {
  describe(`RevocationStore contract: ${adapterName}`, () => {
    let harness: StoreHarness<RevocationStore> | undefined;
    const open = async () => {
      harness = await create();
      return harness;
    };
    afterEach(async () => {
      await harness?.close();
      harness = undefined;
    });

    it("lists active revocations on every replica", async () => {
      const { store, replica } = await open();
      await store.add([revocation("a1"), revocation("a2", { notAfterMs: nowMs + 10 })]);
      expect((await replica.listActive(nowMs)).map((record) => record.serial).sort()).toEqual(["a1", "a2"]);
      expect((await replica.listActive(nowMs + 10)).map((record) => record.serial)).toEqual(["a1"]);
    });

    it("is idempotent per serial: the first revocation is the one kept", async () => {
      const { store, replica } = await open();
      await store.add([revocation("a1")]);
      await replica.add([revocation("a1", { reason: "second" }), revocation("a2")]);
      await store.add([revocation("a3"), revocation("a3", { reason: "duplicate in one call" })]);
      const active = await store.listActive(nowMs);
      expect(active.map((record) => record.serial).sort()).toEqual(["a1", "a2", "a3"]);
      expect(active.find((record) => record.serial === "a1")?.reason).toBe("key compromise");
      expect(active.find((record) => record.serial === "a3")?.reason).toBe("key compromise");
    });

    it("accepts an empty list", async () => {
      const { store } = await open();
      await store.add([]);
      expect(await store.listActive(nowMs)).toEqual([]);
    });
  });
}
