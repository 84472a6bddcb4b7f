import { afterEach, describe, expect, it } from "vitest";
import type { JoinTokenRecord, JoinTokenStore } from "../../services/identity/ports.js";
import type { CreateHarness, StoreHarness } from "./store-harness.js";

const nowMs = 1_700_000_000_000;

function token(hashDigit: string, overrides: Partial<JoinTokenRecord> = {}): JoinTokenRecord {
  const tokenHash = hashDigit.repeat(64);
  return {
    tokenId: tokenHash.slice(0, 16),
    tokenHash,
    allowedAgentNames: ["summarizer"],
    host: "host-a",
    maxUses: 1,
    uses: 0,
    createdAtMs: nowMs,
    expiresAtMs: nowMs + 60_000,
    createdBy: "spiffe://mesh.local/admin/alice",
    ...overrides,
  };
}

/** The JoinTokenStore contract; every adapter runs it unchanged. */
export function describeJoinTokenStore(adapterName: string, create: CreateHarness<JoinTokenStore>): void {
  describe(`JoinTokenStore contract: ${adapterName}`, () => {
    let harness: StoreHarness<JoinTokenStore> | undefined;
    const open = async () => {
      harness = await create();
      return harness;
    };
    afterEach(async () => {
      await harness?.close();
      harness = undefined;
    });

    it("gets what was inserted, and undefined for an unknown hash", async () => {
      const { store } = await open();
      await store.insert(token("a"));
      expect(await store.get("a".repeat(64))).toEqual(token("a"));
      expect(await store.get("b".repeat(64))).toBeUndefined();
    });

    it("hands out copies", async () => {
      const { store } = await open();
      const record = token("a");
      await store.insert(record);
      record.allowedAgentNames.push("inserted-later");
      const fetched = await store.get(record.tokenHash);
      fetched?.allowedAgentNames.push("changed-after-get");
      expect((await store.get(record.tokenHash))?.allowedAgentNames).toEqual(["summarizer"]);
    });

    it("counts uses up to maxUses, then answers undefined and counts no more", async () => {
      const { store } = await open();
      await store.insert(token("a", { maxUses: 2 }));
      expect((await store.use("a".repeat(64), nowMs))?.uses).toBe(1);
      expect((await store.use("a".repeat(64), nowMs))?.uses).toBe(2);
      expect(await store.use("a".repeat(64), nowMs)).toBeUndefined();
      expect((await store.get("a".repeat(64)))?.uses).toBe(2);
    });

    it("refuses an expired or unknown token without counting a use", async () => {
      const { store } = await open();
      await store.insert(token("a"));
      expect(await store.use("a".repeat(64), nowMs + 60_000)).toBeUndefined();
      expect(await store.use("c".repeat(64), nowMs)).toBeUndefined();
      expect((await store.get("a".repeat(64)))?.uses).toBe(0);
    });

    it("lets exactly one of many racing joins across replicas spend the last use", async () => {
      const { store, replica } = await open();
      await store.insert(token("a"));
      const results = await Promise.all(Array.from({ length: 12 }, (_, index) => (index % 2 === 0 ? store : replica).use("a".repeat(64), nowMs)));
      expect(results.filter((result) => result !== undefined)).toHaveLength(1);
      expect((await replica.get("a".repeat(64)))?.uses).toBe(1);
    });

    it("spends a multi-use token exactly maxUses times under concurrent use", async () => {
      const { store, replica } = await open();
      await store.insert(token("a", { maxUses: 5 }));
      const results = await Promise.all(Array.from({ length: 16 }, (_, index) => (index % 2 === 0 ? store : replica).use("a".repeat(64), nowMs)));
      const granted = results.filter((result) => result !== undefined);
      expect(granted.map((result) => result?.uses).sort()).toEqual([1, 2, 3, 4, 5]);
      expect((await store.get("a".repeat(64)))?.uses).toBe(5);
    });

    it("deletes expired tokens, answering how many, and keeps the rest", async () => {
      const { store, replica } = await open();
      await store.insert(token("a", { expiresAtMs: nowMs + 10 }));
      await store.insert(token("b", { expiresAtMs: nowMs + 20 }));
      await store.insert(token("c", { expiresAtMs: nowMs + 30 }));
      expect(await store.deleteExpired(nowMs + 20)).toBe(2);
      expect(await replica.get("a".repeat(64))).toBeUndefined();
      expect(await replica.get("b".repeat(64))).toBeUndefined();
      expect(await replica.get("c".repeat(64))).toBeDefined();
      expect(await store.deleteExpired(nowMs + 20)).toBe(0);
    });
  });
}
