import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PostgresChangeLog } from "../../services/state/adapters/postgres-change-log.js";
import { PostgresDatabase, type PostgresDatabaseOptions } from "../../services/state/adapters/postgres-database.js";
import { migrations } from "../../services/state/adapters/postgres-migrations.js";
import type { ChangeLog } from "../../services/state/ports.js";
import { describeChangeLog } from "../contract/change-log.js";
import { describePortsOnChangeLog } from "../contract/port-suites.js";
import { startPostgres, type ThrowawayPostgres } from "../helpers/postgres.js";

let server: ThrowawayPostgres;
let schemaCounter = 0;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.destroy();
});

/** Each handle is a replica: its own pool and group committer on the shared schema. */
async function openReplica(schema: string): Promise<ChangeLog> {
  const database = await PostgresDatabase.open({ url: server.url(), schema, poolSize: 4 });
  const store = new PostgresChangeLog(database);
  const close = store.close.bind(store);
  store.close = async () => {
    await close();
    await database.close();
  };
  return store;
}

describeChangeLog("postgres", async () => {
  schemaCounter += 1;
  const schema = `contract_${schemaCounter}`;
  let opened = 0;
  return {
    // A fresh schema per open: a new, empty store.
    open: () => {
      opened += 1;
      return openReplica(opened === 1 ? schema : `${schema}_${opened}`);
    },
    openAgain: () => openReplica(schema),
  };
});

describePortsOnChangeLog("postgres", async () => {
  schemaCounter += 1;
  const schema = `ports_${schemaCounter}`;
  const log = await openReplica(schema);
  const replica = await openReplica(schema);
  return {
    log,
    replica,
    close: async () => {
      await log.close();
      await replica.close();
    },
  };
});

describe("PostgreSQL store operations", () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const freshSchema = () => {
    schemaCounter += 1;
    return `operations_${schemaCounter}`;
  };
  async function database(schema: string, extra: Partial<PostgresDatabaseOptions> = {}): Promise<PostgresDatabase> {
    const opened = await PostgresDatabase.open({ url: server.url(), schema, poolSize: 4, ...extra });
    cleanups.push(() => opened.close());
    return opened;
  }

  it("applies migrations once when several replicas start at the same moment", async () => {
    const schema = freshSchema();
    const opened = await Promise.all(Array.from({ length: 6 }, () => database(schema)));
    expect(new Set(opened.map((db) => db.epoch)).size).toBe(1);
    const applied = await opened[0]?.pool.query<{ version: number }>(`SELECT version FROM ${schema}.schema_migrations ORDER BY version`);
    expect(applied?.rows.map((row) => row.version)).toEqual(migrations.map((migration) => migration.version));
  });

  it("upgrades a schema left by an older build, and refuses one from a newer build", async () => {
    const schema = freshSchema();
    const old = await database(schema, { migrations: migrations.slice(0, 1) });
    const store = new PostgresChangeLog(old);
    await store.txn([{ type: "put", key: "/a", value: new Uint8Array([1]) }]);
    const upgraded = await database(schema);
    expect(upgraded.epoch).toBe(old.epoch);
    expect((await new PostgresChangeLog(upgraded).get("/a")).item?.modRevision).toBe(1);
    await expect(PostgresDatabase.open({ url: server.url(), schema, migrations: migrations.slice(0, 1) })).rejects.toMatchObject({ kind: "failedPrecondition", message: expect.stringContaining("newer than this build") });
  });

  it("commits each turn's writes as one transaction on every replica", async () => {
    const schema = freshSchema();
    const batches: number[] = [];
    const store = new PostgresChangeLog(await database(schema), { observer: { batchCommitted: ({ txns }) => batches.push(txns) } });
    const results = await Promise.all(Array.from({ length: 2_000 }, (_, index) => store.txn([{ type: "put", key: `/registry/instances/${index}`, value: new Uint8Array([1]) }])));
    expect(results.every((result) => result.ok)).toBe(true);
    expect(batches).toEqual([2_000]);
  });

  it("fences a replica's write once another replica wrote a higher token", async () => {
    const schema = freshSchema();
    const replicaA = new PostgresChangeLog(await database(schema));
    const replicaB = new PostgresChangeLog(await database(schema));
    expect((await replicaB.txn([], { fence: { name: "reconciler", token: 2 } })).ok).toBe(true);
    expect(await replicaA.txn([{ type: "put", key: "/deployments/web", value: new Uint8Array([1]) }], { fence: { name: "reconciler", token: 1 } })).toMatchObject({ ok: false, reason: "fenced", highestToken: 2 });
    expect((await replicaA.get("/deployments/web")).item).toBeUndefined();
  });

  it("refuses reads and writes with unavailable while PostgreSQL is down, and loses nothing acknowledged", async () => {
    const schema = freshSchema();
    const store = new PostgresChangeLog(await database(schema, { connectionTimeoutMs: 1_000 }));
    const acknowledged = await store.txn([{ type: "put", key: "/deployments/web", value: new Uint8Array([1]) }]);
    await server.stop();
    try {
      await expect(store.txn([{ type: "put", key: "/deployments/api", value: new Uint8Array([1]) }])).rejects.toMatchObject({ kind: "unavailable", message: "state store unavailable" });
      await expect(store.get("/deployments/web")).rejects.toMatchObject({ kind: "unavailable" });
    } finally {
      await server.start();
    }
    expect((await store.get("/deployments/web")).item?.modRevision).toBe(acknowledged.ok ? acknowledged.revision : -1);
    expect((await store.get("/deployments/api")).item).toBeUndefined();
    expect((await store.txn([{ type: "put", key: "/deployments/api", value: new Uint8Array([1]) }])).ok).toBe(true);
  });
});
