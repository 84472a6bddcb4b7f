import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AuditHeadWriter, auditHeadPath, auditHeadSlotBytes, headSignerFor, readAuditHead } from "../../sdk/ts/src/core/audit-head.js";
import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import {
  auditEntryHash,
  canonicalJson,
  FileAuditLog,
  genesisHash,
  verifyAuditLog,
} from "../../sdk/ts/src/core/audit-log.js";
import type { AuditEntry, AuditEvent, AuditSinkState } from "../../sdk/ts/src/core/audit-log.js";
import type { MeshError } from "../../sdk/ts/src/core/mesh-error.js";

let dir: string;
let path: string;
let clock: ManualClock;
const openLogs: FileAuditLog[] = [];

async function openLog(durability: "write" | "fsync" = "write"): Promise<FileAuditLog> {
  const log = await FileAuditLog.open({ path, clock, durability });
  openLogs.push(log);
  return log;
}

const event = (index: number): AuditEvent => ({
  actor: "spiffe://mesh.local/admin/alice",
  action: "agent.register",
  target: `instance-${index}`,
  outcome: index % 3 === 0 ? "denied" : "success",
  requestId: `req-${index}`,
  details: { index, note: "é ✓", nested: { b: 1, a: [true, null] } },
});

async function writeEntries(count: number, durability: "write" | "fsync" = "write"): Promise<void> {
  const log = await openLog(durability);
  await Promise.all(Array.from({ length: count }, (_, index) => log.append(event(index))));
  await log.close();
}

async function lines(): Promise<string[]> {
  return (await readFile(path, "utf8")).split("\n").filter((line) => line.length > 0);
}

async function writeLines(newLines: string[]): Promise<void> {
  await writeFile(path, newLines.map((line) => `${line}\n`).join(""));
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "agentmesh-audit-"));
  path = join(dir, "audit.jsonl");
  clock = new ManualClock(1_700_000_000_000);
});

afterEach(async () => {
  for (const log of openLogs.splice(0)) await log.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

describe("canonicalJson", () => {
  it("sorts keys at every depth, drops undefined and adds no whitespace", () => {
    expect(canonicalJson({ b: 1, a: { d: [1, "x"], c: null }, u: undefined })).toBe('{"a":{"c":null,"d":[1,"x"]},"b":1}');
  });

  it.each([[Number.NaN], [Number.POSITIVE_INFINITY], [10n], [() => 1]])("refuses %s", (value) => {
    expect(() => canonicalJson({ value })).toThrow();
  });
});

describe("FileAuditLog", () => {
  it("writes one chained JSON line per event, in call order", async () => {
    await writeEntries(5);
    const entries = (await lines()).map((line) => JSON.parse(line) as AuditEntry);
    expect(entries.map((entry) => entry.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(entries.map((entry) => entry.target)).toEqual(["instance-0", "instance-1", "instance-2", "instance-3", "instance-4"]);
    expect(entries[0]?.prevHash).toBe(genesisHash);
    for (const [index, entry] of entries.entries()) {
      expect(entry.hash).toBe(auditEntryHash(entry));
      if (index > 0) expect(entry.prevHash).toBe(entries[index - 1]?.hash);
    }
    expect(entries[0]).toMatchObject({
      time: "2023-11-14T22:13:20.000Z",
      actor: "spiffe://mesh.local/admin/alice",
      action: "agent.register",
      outcome: "denied",
      requestId: "req-0",
      details: { index: 0, note: "é ✓" },
    });
  });

  it("the hash is SHA-256 over the canonical JSON without the hash field", async () => {
    await writeEntries(1);
    const [line] = await lines();
    const entry = JSON.parse(line ?? "") as AuditEntry;
    const { hash, ...rest } = entry;
    const { createHash } = await import("node:crypto");
    expect(hash).toBe(createHash("sha256").update(canonicalJson(rest)).digest("hex"));
    // Stored lines are themselves canonical, so other tools can re-derive them.
    expect(line).toBe(canonicalJson(entry));
  });

  it("creates the file with mode 0600", async () => {
    await writeEntries(1);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it("continues the chain across a reopen", async () => {
    await writeEntries(3);
    await writeEntries(2, "fsync");
    const result = await verifyAuditLog(path);
    expect(result).toMatchObject({ ok: true, entries: 5 });
    const reopened = await openLog();
    expect(reopened.head.seq).toBe(5);
    expect(result.ok && result.head).toEqual(reopened.head);
  });

  it("continues after a last line longer than the 64 KiB read chunk", async () => {
    const log = await openLog();
    await log.append(event(0));
    await log.append({ ...event(1), details: { big: "x".repeat(150_000) } });
    await log.close();
    const reopened = await openLog();
    expect(reopened.head.seq).toBe(2);
    await reopened.append(event(2));
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 3 });
  });

  it("keeps every entry of a large concurrent burst", async () => {
    await writeEntries(2_000);
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 2_000 });
  });

  it("tail answers the newest lines, oldest first, including unflushed appends", async () => {
    const log = await openLog();
    for (let index = 0; index < 10; index += 1) void log.append(event(index));
    const tail = await log.tail(3);
    expect(tail.map((line) => (JSON.parse(line) as AuditEntry).seq)).toEqual([8, 9, 10]);
    expect((await log.tail(50)).length).toBe(10);
  });

  it("tail reads across 64 KiB chunk boundaries without splitting lines or characters", async () => {
    const log = await openLog();
    const wide = "é✓".repeat(700);
    await Promise.all(Array.from({ length: 200 }, (_, index) => log.append({ ...event(index), details: { wide } })));
    const stored = await lines();
    expect(Buffer.byteLength(stored.join("\n"))).toBeGreaterThan(3 * 64 * 1024);
    expect(await log.tail(150)).toEqual(stored.slice(-150));
    expect(await log.tail(1_000)).toEqual(stored);
  });

  it("refuses to continue a log whose last line was edited", async () => {
    await writeEntries(3);
    const stored = await lines();
    stored[2] = stored[2]?.replace("instance-2", "instance-9") ?? "";
    await writeLines(stored);
    await expect(FileAuditLog.open({ path, clock })).rejects.toThrow(/corrupt/);
  });

  it("cuts a torn last line off at open, records that, and continues the chain", async () => {
    await writeEntries(2);
    // What a crash in the middle of a write leaves: part of an entry that was never acknowledged.
    const torn = '{"action":"agent.register","actor":"spiffe://mesh.local/ag';
    await writeFile(path, `${await readFile(path, "utf8")}${torn}`);
    const reopened = await openLog();
    expect(reopened.recovery).toEqual({ truncatedTailBytes: torn.length, headRecreated: false, entriesPastHead: 0 });
    await reopened.append(event(3));
    await reopened.close();
    const entries = (await lines()).map((line) => JSON.parse(line) as AuditEntry);
    expect(entries.map((entry) => [entry.seq, entry.action])).toEqual([
      [1, "agent.register"],
      [2, "agent.register"],
      [3, "audit.recovered"],
      [4, "agent.register"],
    ]);
    expect(entries[2]?.details).toMatchObject({ truncatedTailBytes: torn.length });
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 4 });
  });

  it("refuses to continue a log whose committed last line was cut", async () => {
    await writeEntries(2);
    await writeFile(path, (await readFile(path, "utf8")).slice(0, -10));
    await expect(FileAuditLog.open({ path, clock })).rejects.toThrow(/ends at seq 1 but its head record says 2/);
  });

  it("cuts a log that is nothing but a torn line back to empty", async () => {
    await writeFile(path, '{"seq":1,"ti');
    const reopened = await openLog();
    expect(reopened.recovery.truncatedTailBytes).toBe(12);
    expect(reopened.head.seq).toBe(1);
    await reopened.close();
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 1 });
  });

  it("rejects appends after close", async () => {
    const log = await openLog();
    await log.close();
    await expect(log.append(event(1))).rejects.toThrow(/closed/);
  });

  it("rejects an event whose details are not JSON without breaking the chain", async () => {
    const log = await openLog();
    await expect(log.append({ ...event(1), details: { bad: Number.NaN } })).rejects.toThrow();
    await log.append(event(2));
    await log.close();
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 1 });
  });
});

describe("verifyAuditLog", () => {
  beforeEach(async () => {
    await writeEntries(6);
  });

  it("passes on an untouched log", async () => {
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 6 });
  });

  it("names an edited line", async () => {
    const stored = await lines();
    stored[2] = stored[2]?.replace('"outcome":"success"', '"outcome":"denied"') ?? "";
    await writeLines(stored);
    expect(await verifyAuditLog(path)).toEqual({ ok: false, line: 3, reason: "hash does not match contents" });
  });

  it("names an edited line even when its hash was recomputed", async () => {
    const stored = await lines();
    const entry = JSON.parse(stored[1] ?? "") as AuditEntry;
    const forged = { ...entry, actor: "spiffe://mesh.local/admin/mallory" };
    stored[1] = canonicalJson({ ...forged, hash: auditEntryHash(forged) });
    await writeLines(stored);
    expect(await verifyAuditLog(path)).toMatchObject({ ok: false, line: 3, reason: "prevHash does not match the previous entry" });
  });

  it("names the line after a deleted one", async () => {
    const stored = await lines();
    stored.splice(3, 1);
    await writeLines(stored);
    expect(await verifyAuditLog(path)).toMatchObject({ ok: false, line: 4, reason: "expected seq 4, found 5" });
  });

  it("detects a deleted first line", async () => {
    await writeLines((await lines()).slice(1));
    expect(await verifyAuditLog(path)).toMatchObject({ ok: false, line: 1 });
  });

  it("names the first of two swapped lines", async () => {
    const stored = await lines();
    [stored[1], stored[4]] = [stored[4] ?? "", stored[1] ?? ""];
    await writeLines(stored);
    expect(await verifyAuditLog(path)).toMatchObject({ ok: false, line: 2, reason: "expected seq 2, found 5" });
  });

  it("ignores an incomplete last line (a torn write) and says so", async () => {
    await writeFile(path, `${await readFile(path, "utf8")}{"seq":7,"tim`);
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 6, tornTailBytes: 13 });
  });

  it("names a line that is not JSON", async () => {
    const stored = await lines();
    stored[0] = "{oops";
    await writeLines(stored);
    expect(await verifyAuditLog(path)).toEqual({ ok: false, line: 1, reason: "not a JSON audit entry" });
  });
});

describe("head record: cutting entries off the end", () => {
  const caKeys = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const headKeys = { sign: headSignerFor(caKeys.privateKey), publicKeys: [caKeys.publicKey] };

  async function writeSigned(count: number): Promise<void> {
    const log = await FileAuditLog.open({ path, clock, headKeys });
    await Promise.all(Array.from({ length: count }, (_, index) => log.append(event(index))));
    await log.close();
  }

  it("a log cut short of its head fails verify at the first missing line (it passed before the head existed)", async () => {
    await writeSigned(6);
    expect(await verifyAuditLog(path, { headKeys })).toMatchObject({ ok: true, entries: 6, anchor: { seq: 6, signed: true }, entriesPastAnchor: 0 });
    await writeLines((await lines()).slice(0, 4));
    expect(await verifyAuditLog(path, { headKeys })).toEqual({
      ok: false,
      line: 5,
      reason: "log ends at seq 4 but the head record says 6: entries were cut off the end",
    });
    await expect(FileAuditLog.open({ path, clock, headKeys })).rejects.toThrow(/cut off/);
  });

  it("a rewritten last entry that matches the chain but not the head fails", async () => {
    await writeSigned(3);
    const stored = await lines();
    const last = JSON.parse(stored[2] ?? "") as AuditEntry;
    const forged = { ...last, actor: "spiffe://mesh.local/admin/mallory" };
    stored[2] = canonicalJson({ ...forged, hash: auditEntryHash(forged) });
    await writeLines(stored);
    expect(await verifyAuditLog(path, { headKeys })).toEqual({ ok: false, line: 3, reason: "entry does not match the head record" });
  });

  it("a head rewritten without the signing key fails, and a signed head needs the key to be checked", async () => {
    await writeSigned(6);
    await writeLines((await lines()).slice(0, 4));
    const other = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const forger = await AuditHeadWriter.open(auditHeadPath(path), undefined, headSignerFor(other.privateKey));
    const fourth = JSON.parse((await lines())[3] ?? "") as AuditEntry;
    await forger.write({ seq: 4, hash: fourth.hash, time: fourth.time }, false);
    await forger.write({ seq: 4, hash: fourth.hash, time: fourth.time }, false);
    await forger.close();
    expect(await verifyAuditLog(path, { headKeys })).toEqual({ ok: false, line: 0, reason: "head record signature invalid" });
    expect(await verifyAuditLog(path)).toMatchObject({ ok: false, reason: "head record is signed: give the CA certificate to check it" });
  });

  it("a removed head record fails verify, and the server's next open records that it made a new one", async () => {
    await writeSigned(3);
    await rm(auditHeadPath(path));
    expect(await verifyAuditLog(path, { headKeys })).toMatchObject({ ok: false, reason: "no head record: entries cut off the end would go unnoticed" });
    const reopened = await FileAuditLog.open({ path, clock, headKeys });
    openLogs.push(reopened);
    expect(reopened.recovery.headRecreated).toBe(true);
    await reopened.close();
    const entries = (await lines()).map((line) => JSON.parse(line) as AuditEntry);
    expect(entries.at(-1)).toMatchObject({ action: "audit.recovered", details: { headRecreated: true } });
    expect(await verifyAuditLog(path, { headKeys })).toMatchObject({ ok: true, entries: 4 });
  });

  it("a torn newest slot leaves the previous head, which still verifies", async () => {
    await writeSigned(2);
    const log = await FileAuditLog.open({ path, clock, headKeys });
    await log.append(event(5));
    await log.close();
    const stored = await readAuditHead(auditHeadPath(path), headKeys);
    if (stored.kind !== "ok") throw new Error("no head");
    const bytes = await readFile(auditHeadPath(path));
    bytes.fill(0x41, stored.slot * auditHeadSlotBytes + 10, stored.slot * auditHeadSlotBytes + 40);
    await writeFile(auditHeadPath(path), bytes);
    expect(await verifyAuditLog(path, { headKeys })).toMatchObject({ ok: true, entries: 3, anchor: { seq: 2 }, entriesPastAnchor: 1 });
  });

  it("an unsigned head (a sidecar's log) still catches a cut", async () => {
    await writeEntries(5);
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, anchor: { seq: 5, signed: false } });
    await writeLines((await lines()).slice(0, 2));
    expect(await verifyAuditLog(path)).toMatchObject({ ok: false, line: 3 });
  });
});

describe("batching and a failing file", () => {
  it("10,000 appends in one burst cost a few writes and fsyncs, not 10,000", async () => {
    const log = await openLog("fsync");
    await Promise.all(Array.from({ length: 10_000 }, (_, index) => log.append(event(index))));
    expect(log.stats.writes).toBeLessThanOrEqual(4);
    expect(log.stats.syncs).toBe(log.stats.writes);
    await log.close();
    expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 10_000 });
  });

  it("on ENOSPC (/dev/full) every append is refused with UNAVAILABLE, the state changes once with the real error", async () => {
    await symlink("/dev/full", path);
    const states: AuditSinkState[] = [];
    const log = await FileAuditLog.open({ path, clock, retryIntervalMs: 60_000, onStateChange: (state) => states.push(state) });
    openLogs.push(log);
    const mark = log.mark();
    const outcomes = await Promise.allSettled(Array.from({ length: 50 }, (_, index) => log.append(event(index))));
    const later = await Promise.allSettled([log.append(event(99))]);
    expect([...outcomes, ...later].map((outcome) => (outcome.status === "rejected" ? (outcome.reason as MeshError).code : "ok"))).toEqual(Array(51).fill(status.UNAVAILABLE));
    expect(states).toHaveLength(1);
    expect(states[0]).toMatchObject({ writable: false, error: { code: "ENOSPC" } });
    expect(log.writable).toBe(false);
    expect(log.stats.droppedEntries).toBe(51);
    expect(log.head.seq).toBe(0);
    await expect(log.flushed(mark)).rejects.toThrow("audit log unavailable");
  });
});
