import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type AuditEvent, FileAuditLog, verifyAuditLog } from "../../sdk/ts/src/core/audit-log.js";
import { ManualClock, systemClock } from "../../sdk/ts/src/core/clock.js";
import { PostgresAuditLog } from "../../services/state/adapters/postgres-audit-log.js";
import { PostgresDatabase } from "../../services/state/adapters/postgres-database.js";
import { startPostgres, type ThrowawayPostgres } from "../helpers/postgres.js";
import { tempDir } from "../helpers/processes.js";

let server: ThrowawayPostgres;
let schemaCounter = 0;
const databases: PostgresDatabase[] = [];
const clock = new ManualClock();

beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.destroy();
});
afterEach(async () => {
  for (const database of databases.splice(0)) await database.close();
});

async function openReplicas(count: number): Promise<{ schema: string; logs: PostgresAuditLog[] }> {
  schemaCounter += 1;
  const schema = `audit_${schemaCounter}`;
  const logs: PostgresAuditLog[] = [];
  for (let index = 0; index < count; index += 1) {
    const database = await PostgresDatabase.open({ url: server.url(), schema, poolSize: 3 });
    databases.push(database);
    logs.push(new PostgresAuditLog(database, { clock }));
  }
  return { schema, logs };
}

const event = (index: number, details?: Record<string, unknown>): AuditEvent => ({
  actor: "spiffe://mesh.local/admin/alice",
  action: "deployment.apply",
  target: `web-${index}`,
  outcome: "success",
  requestId: `request-${index}`,
  ...(details ? { details } : {}),
});

async function sql(schema: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: server.url() });
  await client.connect();
  try {
    await client.query(`SET search_path = ${schema}`);
    await client.query(text);
  } finally {
    await client.end();
  }
}

describe("PostgreSQL audit log", () => {
  it("chains appends from two replicas into one gap-free chain that verifies", async () => {
    const { logs } = await openReplicas(2);
    const [first, second] = logs as [PostgresAuditLog, PostgresAuditLog];
    await Promise.all(Array.from({ length: 200 }, (_, index) => (index % 2 === 0 ? first : second).append(event(index, { index }))));
    expect(await first.verify()).toMatchObject({ ok: true, entries: 200, head: await second.storedHead() });
    const lines = await second.tail(3);
    expect(lines.map((line) => (JSON.parse(line) as { seq: number }).seq)).toEqual([198, 199, 200]);
  });

  it("stores exactly the file format: an export of the table passes the file verifier", async () => {
    const { logs } = await openReplicas(1);
    const log = logs[0] as PostgresAuditLog;
    for (let index = 0; index < 5; index += 1) await log.append(event(index, index === 2 ? { nested: { b: 1, a: [true, null, "x"] } } : undefined));
    const exported = (await log.linesAfter(0, 100)).map((row) => `${row.line}\n`).join("");
    const directory = tempDir();
    const path = join(directory, "audit.log");
    writeFileSync(path, exported);
    try {
      // The file format anchors its end in a head record beside the log; a file sink opened on the export
      // writes one, and notes that in one more entry chained onto the exported ones.
      await (await FileAuditLog.open({ path, clock: systemClock })).close();
      expect(await verifyAuditLog(path)).toMatchObject({ ok: true, entries: 6 });
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  it("refuses an entry that is not JSON alone, and commits the others of its turn", async () => {
    const { logs } = await openReplicas(1);
    const log = logs[0] as PostgresAuditLog;
    const results = await Promise.allSettled([log.append(event(1)), log.append(event(2, { ratio: Number.NaN })), log.append(event(3))]);
    expect(results.map((result) => result.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(await log.verify()).toMatchObject({ ok: true, entries: 2 });
  });

  it("refuses UPDATE, DELETE and TRUNCATE in the database itself", async () => {
    const { schema, logs } = await openReplicas(1);
    await (logs[0] as PostgresAuditLog).append(event(1));
    await expect(sql(schema, "UPDATE audit_log SET line = 'x'")).rejects.toThrow(/append-only/);
    await expect(sql(schema, "DELETE FROM audit_log")).rejects.toThrow(/append-only/);
    await expect(sql(schema, "TRUNCATE audit_log")).rejects.toThrow(/append-only/);
    expect(await (logs[0] as PostgresAuditLog).verify()).toMatchObject({ ok: true, entries: 1 });
  });

  it.each([
    ["an edited entry", "UPDATE audit_log SET line = replace(line, 'web-2', 'web-9') WHERE seq = 3", { line: 3, reason: "hash does not match contents" }],
    ["a removed entry", "DELETE FROM audit_log WHERE seq = 2", { line: 2, reason: "expected seq 2, found 3" }],
    ["entries cut off the end", "DELETE FROM audit_log WHERE seq > 3", { line: 4, reason: "chain ends at seq 3 but the head says 5" }],
  ])("names the first bad entry after %s (by someone who can disable the trigger)", async (_name, tamper, expected) => {
    const { schema, logs } = await openReplicas(1);
    const log = logs[0] as PostgresAuditLog;
    for (let index = 0; index < 5; index += 1) await log.append(event(index));
    await sql(schema, `ALTER TABLE audit_log DISABLE TRIGGER USER; ${tamper}; ALTER TABLE audit_log ENABLE TRIGGER USER`);
    expect(await log.verify()).toEqual({ ok: false, ...expected });
  });

  it("fails appends while PostgreSQL is down (an audited action's flush too) and continues the same chain once it is back, with a gap entry", async () => {
    const { logs } = await openReplicas(1);
    const log = logs[0] as PostgresAuditLog;
    await log.append(event(1));
    await server.stop();
    const mark = log.mark();
    try {
      await expect(log.append(event(2))).rejects.toMatchObject({ kind: "unavailable" });
      await expect(log.flushed(mark)).rejects.toMatchObject({ kind: "unavailable" });
    } finally {
      await server.start();
    }
    const afterOutage = log.mark();
    await log.append(event(3));
    await log.flushed(afterOutage);
    expect(await log.verify()).toMatchObject({ ok: true, entries: 3 });
    const lines = (await log.tail(2)).map((line) => JSON.parse(line) as { action: string; details?: Record<string, unknown> });
    expect(lines.map((entry) => entry.action)).toEqual(["audit.gap", "deployment.apply"]);
    expect(lines[0]?.details).toMatchObject({ droppedEntries: 1 });
    expect({ head: log.head, stats: log.stats }).toEqual({ head: await log.storedHead(), stats: { writes: 2, syncs: 0, droppedEntries: 1 } });
  });

  it("holds an audited action until its entries are committed (mark, then flushed)", async () => {
    const { logs } = await openReplicas(1);
    const log = logs[0] as PostgresAuditLog;
    const mark = log.mark();
    const appended = log.append(event(1));
    await log.flushed(mark);
    // flushed resolved only after the entry's transaction committed.
    expect(log.head.seq).toBe(1);
    await appended;
    expect((await log.linesAfter(0, 10)).length).toBe(1);
  });
});
