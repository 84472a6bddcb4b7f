import { afterEach, describe, expect, it } from "vitest";
import type { Change, ChangeLog, TxnResult } from "../../services/state/ports.js";

// The ChangeLog contract: every adapter (memory, SQLite, PostgreSQL) runs these
// cases unchanged. An adapter passes when a projection built on it cannot tell
// which one it is.

export interface ChangeLogHarness {
  /** A store on fresh, empty storage. Each call is a new store (a new epoch). */
  open(): Promise<ChangeLog>;
  /**
   * Another handle on the storage of the last `open`: a restart for SQLite, a second
   * replica for PostgreSQL. Absent for stores without storage of their own (memory).
   */
  openAgain?(): Promise<ChangeLog>;
}

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined) => (value === undefined ? undefined : new TextDecoder().decode(value));
const put = (key: string, value: string, expectRevision?: number) => ({ type: "put" as const, key, value: bytes(value), ...(expectRevision === undefined ? {} : { expectRevision }) });
const del = (key: string, expectRevision?: number) => ({ type: "delete" as const, key, ...(expectRevision === undefined ? {} : { expectRevision }) });

function revisionOf(result: TxnResult): number {
  if (!result.ok) throw new Error(`txn refused: ${JSON.stringify(result)}`);
  return result.revision;
}

/** Reads every change after `afterRevision` page by page, as a follower does. */
export async function readAllChanges(store: ChangeLog, afterRevision = 0, limit = 1000): Promise<Change[]> {
  const all: Change[] = [];
  let position = afterRevision;
  for (;;) {
    const page = await store.changesSince(position, { limit, epoch: store.epoch });
    if (page.kind !== "changes") throw new Error(`unexpected resync: ${page.reason}`);
    all.push(...page.changes);
    position = page.revision;
    if (!page.more) return all;
  }
}

export function describeChangeLog(adapterName: string, createHarness: () => Promise<ChangeLogHarness>): void {
  describe(`ChangeLog contract: ${adapterName}`, () => {
    const opened: ChangeLog[] = [];
    let harness: ChangeLogHarness;
    const open = async () => {
      harness = await createHarness();
      const store = await harness.open();
      opened.push(store);
      return store;
    };
    const openAgain = async () => {
      if (!harness.openAgain) return undefined;
      const store = await harness.openAgain();
      opened.push(store);
      return store;
    };
    afterEach(async () => {
      for (const store of opened.splice(0)) await store.close();
    });

    it("starts empty at revision 0 and answers each write with the next revision", async () => {
      const store = await open();
      expect(await store.currentRevision()).toBe(0);
      expect(await store.get("/a")).toEqual({ revision: 0, item: undefined });
      expect(await store.txn([put("/a", "one")])).toEqual({ ok: true, revision: 1, previousRevisions: [0] });
      expect(await store.txn([put("/a", "two")])).toEqual({ ok: true, revision: 2, previousRevisions: [1] });
      const got = await store.get("/a");
      expect(got.revision).toBe(2);
      expect(got.item).toMatchObject({ key: "/a", modRevision: 2, createRevision: 1 });
      expect(text(got.item?.value)).toBe("two");
      expect(await store.currentRevision()).toBe(2);
    });

    it("gives all ops of one txn its one revision, in op order", async () => {
      const store = await open();
      await store.txn([put("/x", "0")]);
      expect(revisionOf(await store.txn([put("/b", "1"), put("/a", "2"), del("/x")]))).toBe(2);
      const changes = await readAllChanges(store, 1);
      expect(changes.map((change) => [change.revision, change.key, text(change.value), change.previousRevision])).toEqual([
        [2, "/b", "1", 0],
        [2, "/a", "2", 0],
        [2, "/x", undefined, 1],
      ]);
    });

    it("refuses a create over an existing key, naming the key, and writes nothing of that txn", async () => {
      const store = await open();
      await store.txn([put("/deployments/web", "v1")]);
      const result = await store.txn([put("/deployments/api", "v1", 0), put("/deployments/web", "v2", 0)]);
      expect(result).toEqual({ ok: false, reason: "conflict", key: "/deployments/web", actualRevision: 1 });
      expect((await store.get("/deployments/api")).item).toBeUndefined();
      expect(text((await store.get("/deployments/web")).item?.value)).toBe("v1");
      expect(await store.currentRevision()).toBe(1);
    });

    it("compare-and-swaps on the key's mod revision", async () => {
      const store = await open();
      const created = revisionOf(await store.txn([put("/k", "a", 0)]));
      await store.txn([put("/other", "x")]);
      expect(revisionOf(await store.txn([put("/k", "b", created)]))).toBe(3);
      expect(await store.txn([put("/k", "c", created)])).toEqual({ ok: false, reason: "conflict", key: "/k", actualRevision: 3 });
      expect(await store.txn([del("/k", created)])).toEqual({ ok: false, reason: "conflict", key: "/k", actualRevision: 3 });
      expect(await store.txn([del("/k", 3)])).toEqual({ ok: true, revision: 4, previousRevisions: [3] });
      expect(await store.txn([put("/k", "d", 3)])).toEqual({ ok: false, reason: "conflict", key: "/k", actualRevision: 0 });
      expect(revisionOf(await store.txn([put("/k", "d", 0)]))).toBe(5);
      expect((await store.get("/k")).item).toMatchObject({ modRevision: 5, createRevision: 5 });
    });

    it("treats deleting an absent key as a no-op that takes no revision", async () => {
      const store = await open();
      await store.txn([put("/a", "1")]);
      expect(await store.txn([del("/missing")])).toEqual({ ok: true, revision: 1, previousRevisions: [0] });
      expect(await store.txn([del("/missing", 0)])).toEqual({ ok: true, revision: 1, previousRevisions: [0] });
      expect(await store.currentRevision()).toBe(1);
      expect(await readAllChanges(store)).toHaveLength(1);
    });

    it("ranges over a prefix in key order, without deleted keys or lookalike prefixes", async () => {
      const store = await open();
      await store.txn([put("/registry/instances/b", "2"), put("/registry/instances/a", "1"), put("/registry/instancesX", "no"), put("/registry/instances/c", "3")]);
      await store.txn([del("/registry/instances/c")]);
      const listed = await store.range("/registry/instances/");
      expect(listed.revision).toBe(2);
      expect(listed.items.map((item) => [item.key, text(item.value)])).toEqual([
        ["/registry/instances/a", "1"],
        ["/registry/instances/b", "2"],
      ]);
      expect((await store.range("")).items).toHaveLength(3);
      expect((await store.range("/nothing/")).items).toEqual([]);
    });

    it("keeps empty values apart from deletions and round-trips any bytes", async () => {
      const store = await open();
      const binary = Uint8Array.from({ length: 256 }, (_, index) => index);
      await store.txn([{ type: "put", key: "/empty", value: new Uint8Array(0) }, { type: "put", key: "/binary", value: binary }]);
      expect((await store.get("/empty")).item?.value).toEqual(new Uint8Array(0));
      expect((await store.get("/binary")).item?.value).toEqual(binary);
      const changes = await readAllChanges(store);
      expect(changes.map((change) => change.value?.byteLength)).toEqual([0, 256]);
    });

    it("hands out copies: changing what was written or read does not change the store", async () => {
      const store = await open();
      const value = bytes("abc");
      await store.txn([{ type: "put", key: "/k", value }]);
      value[0] = 0x7a;
      const first = await store.get("/k");
      if (!first.item) throw new Error("missing");
      first.item.value[1] = 0x7a;
      expect(text((await store.get("/k")).item?.value)).toBe("abc");
      expect(text((await store.range("/")).items[0]?.value)).toBe("abc");
    });

    it("answers changes in revision order with tombstones and previous revisions, never cutting a txn", async () => {
      const store = await open();
      await store.txn([put("/a", "1")]);
      await store.txn([put("/b", "1"), put("/c", "1"), put("/d", "1")]);
      await store.txn([del("/a")]);
      await store.txn([put("/b", "2")]);
      const first = await store.changesSince(0, { limit: 2 });
      if (first.kind !== "changes") throw new Error("resync");
      // The limit falls inside revision 2; the page finishes it.
      expect(first.changes.map((change) => `${change.revision}${change.key}`)).toEqual(["1/a", "2/b", "2/c", "2/d"]);
      expect(first).toMatchObject({ epoch: store.epoch, revision: 2, more: true });
      const second = await store.changesSince(first.revision, { limit: 2 });
      if (second.kind !== "changes") throw new Error("resync");
      expect(second.changes.map((change) => [change.revision, change.key, text(change.value), change.previousRevision])).toEqual([
        [3, "/a", undefined, 1],
        [4, "/b", "2", 2],
      ]);
      expect(second).toMatchObject({ revision: 4, more: false });
      expect(await store.changesSince(4)).toEqual({ kind: "changes", epoch: store.epoch, changes: [], revision: 4, more: false });
    });

    it("after compaction answers resync below the watermark and keeps every current value", async () => {
      const store = await open();
      for (const value of ["1", "2", "3", "4", "5"]) await store.txn([put(`/k${value}`, value)]);
      expect(await store.compact(4)).toEqual({ compactedRevision: 3 });
      expect(await store.changesSince(2, { epoch: store.epoch })).toMatchObject({ kind: "resync", reason: "compacted", currentRevision: 5, compactedRevision: 3 });
      const resumed = await store.changesSince(3, { epoch: store.epoch });
      expect(resumed.kind === "changes" && resumed.changes.map((change) => change.revision)).toEqual([4, 5]);
      expect((await store.range("/")).items).toHaveLength(5);
      // Compaction never goes backwards and never past the current revision.
      expect(await store.compact(2)).toEqual({ compactedRevision: 3 });
      expect(await store.compact(1_000)).toEqual({ compactedRevision: 5 });
      expect(await store.changesSince(5)).toMatchObject({ kind: "changes", changes: [], revision: 5 });
      expect(await store.changesSince(4)).toMatchObject({ kind: "resync", reason: "compacted" });
      expect(revisionOf(await store.txn([put("/k6", "6")]))).toBe(6);
      const after = await store.changesSince(5);
      expect(after.kind === "changes" && after.changes.map((change) => change.key)).toEqual(["/k6"]);
    });

    it("answers resync to a position from another epoch or beyond its revision", async () => {
      const store = await open();
      await store.txn([put("/a", "1")]);
      expect(store.epoch).toMatch(/\S{8,}/);
      expect(await store.changesSince(0, { epoch: "some-other-store" })).toMatchObject({ kind: "resync", reason: "epoch", epoch: store.epoch, currentRevision: 1 });
      expect(await store.changesSince(7, { epoch: store.epoch })).toMatchObject({ kind: "resync", reason: "ahead", currentRevision: 1 });
      const other = await open();
      expect(other.epoch).not.toBe(store.epoch);
      expect(await other.changesSince(0, { epoch: store.epoch })).toMatchObject({ kind: "resync", reason: "epoch" });
    });

    it("decides transactions issued together one by one: a conflicting one fails alone", async () => {
      const store = await open();
      const results = await Promise.all([
        store.txn([put("/lock", "first", 0)]),
        store.txn([put("/lock", "second", 0)]),
        store.txn([put("/unrelated", "x")]),
        ...Array.from({ length: 40 }, (_, index) => store.txn([put(`/many/${index}`, String(index))])),
      ]);
      const [first, second, unrelated] = results;
      expect(first?.ok).toBe(true);
      expect(second).toEqual({ ok: false, reason: "conflict", key: "/lock", actualRevision: first?.ok ? first.revision : -1 });
      expect(unrelated?.ok).toBe(true);
      const revisions = results.filter((result) => result.ok).map(revisionOf);
      // Strictly increasing in submission order and gap-free from 1.
      expect(revisions).toEqual(Array.from({ length: 42 }, (_, index) => index + 1));
      expect(text((await store.get("/lock")).item?.value)).toBe("first");
      const changes = await readAllChanges(store);
      expect(changes.map((change) => change.revision)).toEqual(revisions);
    });

    it("refuses a write fenced by a lower token than one already seen, per fence name", async () => {
      const store = await open();
      expect(revisionOf(await store.txn([put("/deployments/a", "1")], { fence: { name: "reconciler", token: 2 } }))).toBe(1);
      expect(await store.txn([put("/deployments/a", "old leader")], { fence: { name: "reconciler", token: 1 } })).toEqual({ ok: false, reason: "fenced", fence: "reconciler", highestToken: 2 });
      expect(revisionOf(await store.txn([put("/deployments/a", "2")], { fence: { name: "reconciler", token: 2 } }))).toBe(2);
      // Claiming a token without writing anything shuts out the previous holder at once.
      expect(await store.txn([], { fence: { name: "reconciler", token: 5 } })).toEqual({ ok: true, revision: 2, previousRevisions: [] });
      expect(await store.txn([put("/deployments/a", "3")], { fence: { name: "reconciler", token: 4 } })).toMatchObject({ ok: false, reason: "fenced", highestToken: 5 });
      expect(revisionOf(await store.txn([put("/rollouts/a", "1")], { fence: { name: "other-lock", token: 1 } }))).toBe(3);
      expect(revisionOf(await store.txn([put("/unfenced", "1")]))).toBe(4);
      expect(text((await store.get("/deployments/a")).item?.value)).toBe("2");
    });

    it("does not record the fence of a txn refused for a conflict", async () => {
      const store = await open();
      await store.txn([put("/k", "1")]);
      expect((await store.txn([put("/k", "2", 0)], { fence: { name: "leader", token: 9 } })).ok).toBe(false);
      expect((await store.txn([put("/k", "3")], { fence: { name: "leader", token: 3 } })).ok).toBe(true);
    });

    it("wakes local listeners after a commit with the new revision", async () => {
      const store = await open();
      const hints: number[] = [];
      const stop = store.onChange((revision) => hints.push(revision));
      await store.txn([put("/a", "1")]);
      await store.txn([del("/missing")]);
      await store.txn([put("/b", "1")]);
      stop();
      await store.txn([put("/c", "1")]);
      expect(hints).toEqual([1, 2]);
    });

    it.each([
      ["an empty txn", [], "txn needs at least one op"],
      ["an empty key", [put("", "x")], "key must be"],
      ["a key with a space", [put("/a b", "x")], "key must be"],
      ["a non-ASCII key", [put("/é", "x")], "key must be"],
      ["a key named twice", [put("/a", "x"), del("/a")], "names a key twice"],
      ["a negative expectRevision", [put("/a", "x", -1)], "expectRevision"],
      ["a value over 1 MiB", [{ type: "put" as const, key: "/a", value: new Uint8Array(1024 * 1024 + 1) }], "larger than"],
      ["over 1000 ops", Array.from({ length: 1001 }, (_, index) => put(`/k${index}`, "x")), "more than 1000 ops"],
    ])("refuses %s with invalidArgument and changes nothing", async (_name, ops, message) => {
      const store = await open();
      await expect(store.txn(ops)).rejects.toMatchObject({ kind: "invalidArgument", message: expect.stringContaining(message) });
      expect(await store.currentRevision()).toBe(0);
    });

    it("refuses bad fences, prefixes and revisions with invalidArgument", async () => {
      const store = await open();
      await expect(store.txn([put("/a", "x")], { fence: { name: "leader", token: 0 } })).rejects.toMatchObject({ kind: "invalidArgument" });
      await expect(store.txn([put("/a", "x")], { fence: { name: "", token: 1 } })).rejects.toMatchObject({ kind: "invalidArgument" });
      await expect(store.range("/a b")).rejects.toMatchObject({ kind: "invalidArgument" });
      await expect(store.changesSince(-1)).rejects.toMatchObject({ kind: "invalidArgument" });
      await expect(store.changesSince(0, { limit: 0 })).rejects.toMatchObject({ kind: "invalidArgument" });
      await expect(store.compact(1.5)).rejects.toMatchObject({ kind: "invalidArgument" });
      expect(await store.currentRevision()).toBe(0);
    });

    it("refuses calls after close with unavailable", async () => {
      const store = await open();
      await store.close();
      await expect(store.txn([put("/a", "x")])).rejects.toMatchObject({ kind: "unavailable" });
      await expect(store.get("/a")).rejects.toMatchObject({ kind: "unavailable" });
    });

    it("keeps values, revisions, fences and the epoch for the next handle on the same storage", async () => {
      const store = await open();
      if (!harness.openAgain) return;
      await store.txn([put("/a", "1")], { fence: { name: "leader", token: 3 } });
      await store.txn([put("/b", "2"), del("/a")]);
      await store.compact(2);
      await store.close();
      const again = await openAgain();
      if (!again) throw new Error("openAgain");
      expect(again.epoch).toBe(store.epoch);
      expect(await again.currentRevision()).toBe(2);
      expect((await again.range("/")).items.map((item) => item.key)).toEqual(["/b"]);
      expect(await again.changesSince(0, { epoch: store.epoch })).toMatchObject({ kind: "resync", reason: "compacted" });
      expect(await again.txn([put("/c", "3")], { fence: { name: "leader", token: 2 } })).toMatchObject({ ok: false, reason: "fenced" });
      expect(revisionOf(await again.txn([put("/c", "3")]))).toBe(3);
    });

    it("lets a reader tailing concurrent writers see every change exactly once, in order", async () => {
      const store = await open();
      const writers = (await openAgain()) ?? store;
      const expected = 300;
      let done = false;
      const seen: Change[] = [];
      const tail = (async () => {
        let position = 0;
        while (!done || position < (await store.currentRevision())) {
          const page = await store.changesSince(position, { limit: 17, epoch: store.epoch });
          if (page.kind !== "changes") throw new Error(`resync: ${page.reason}`);
          seen.push(...page.changes);
          position = page.revision;
          if (!page.more) await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      const write = (handle: ChangeLog, from: number) =>
        Promise.all(Array.from({ length: expected / 2 }, (_, index) => handle.txn([put(`/w/${from + index}`, "x")])));
      const results = [...(await Promise.all([write(store, 0), write(writers, expected / 2)]))].flat();
      done = true;
      await tail;
      expect(results.every((result) => result.ok)).toBe(true);
      expect(seen.map((change) => change.revision)).toEqual(Array.from({ length: expected }, (_, index) => index + 1));
      expect(new Set(seen.map((change) => change.key)).size).toBe(expected);
    });
  });
}
