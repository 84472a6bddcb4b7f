import { afterEach, describe, expect, it } from "vitest";
import type { CertificateStore, IssuedCertificateRecord } from "../../services/identity/ports.js";
import type { CreateHarness, StoreHarness } from "./store-harness.js";

const nowMs = 1_700_000_000_000;
const sidecarA = "spiffe://mesh.local/sidecar/host-a";

const certificate = (serial: string, spiffeId = sidecarA, notAfterMs = nowMs + 60_000): IssuedCertificateRecord => ({ serial, spiffeId, issuedAtMs: nowMs, notAfterMs });

/** The CertificateStore contract; every adapter runs it unchanged. */
export function describeCertificateStore(adapterName: string, create: CreateHarness<CertificateStore>): void {
  describe(`CertificateStore contract: ${adapterName}`, () => {
    let harness: StoreHarness<CertificateStore> | undefined;
    const open = async () => {
      harness = await create();
      return harness;
    };
    afterEach(async () => {
      await harness?.close();
      harness = undefined;
    });

    it("gets a recorded certificate by serial, on any replica", async () => {
      const { store, replica } = await open();
      await store.recordIssued(certificate("1f"));
      expect(await replica.get("1f")).toEqual(certificate("1f"));
      expect(await replica.get("2f")).toBeUndefined();
    });

    it("lists the SPIFFE ID's certificates still valid, and no other identity's", async () => {
      const { store, replica } = await open();
      await store.recordIssued(certificate("a1"));
      await store.recordIssued(certificate("a2", sidecarA, nowMs + 10));
      await store.recordIssued(certificate("a3"));
      // A SPIFFE ID that extends the other one must not be listed with it.
      await store.recordIssued(certificate("b1", `${sidecarA}b`));
      await store.recordIssued(certificate("c1", "spiffe://mesh.local/agent/summarizer"));
      const valid = await replica.listValid(sidecarA, nowMs + 10);
      expect(valid.map((record) => record.serial).sort()).toEqual(["a1", "a3"]);
      expect((await replica.listValid(`${sidecarA}b`, nowMs)).map((record) => record.serial)).toEqual(["b1"]);
      expect(await replica.listValid("spiffe://mesh.local/sidecar/nobody", nowMs)).toEqual([]);
    });

    it("hands out copies", async () => {
      const { store } = await open();
      const record = certificate("a1");
      await store.recordIssued(record);
      record.spiffeId = "changed";
      const fetched = await store.get("a1");
      if (fetched) fetched.notAfterMs = 0;
      expect(await store.get("a1")).toEqual(certificate("a1"));
    });
  });
}
