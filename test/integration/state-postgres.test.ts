import { afterAll, beforeAll } from "vitest";
import { PostgresChangeLog } from "../../services/state/adapters/postgres-change-log.js";
import { PostgresDatabase } from "../../services/state/adapters/postgres-database.js";
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
