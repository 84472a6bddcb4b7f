import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SqliteChangeLog } from "../../services/state/adapters/sqlite-change-log.js";
import { describeChangeLog } from "../contract/change-log.js";
import { describePortsOnChangeLog } from "../contract/port-suites.js";
import { tempDir } from "../helpers/processes.js";

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

function freshDataDir(): string {
  const dataDir = tempDir("agentmesh-state-");
  directories.push(dataDir);
  return dataDir;
}

describeChangeLog("sqlite", async () => {
  const dataDir = freshDataDir();
  let first = true;
  return {
    open: () => {
      // Each open is a new store; openAgain reopens the first one's file.
      const dir = first ? dataDir : freshDataDir();
      first = false;
      return SqliteChangeLog.open({ dataDir: dir });
    },
    openAgain: () => SqliteChangeLog.open({ dataDir }),
  };
});

describePortsOnChangeLog("sqlite", async () => {
  const dataDir = freshDataDir();
  // Two handles on one file, as two processes on one data dir would have.
  const log = await SqliteChangeLog.open({ dataDir });
  const replica = await SqliteChangeLog.open({ dataDir });
  return {
    log,
    replica,
    close: async () => {
      await log.close();
      await replica.close();
    },
  };
});

describe("SQLite group commit", () => {
  it("writes transactions issued in one turn in one database transaction, deciding each on its own", async () => {
    const batches: number[] = [];
    const log = await SqliteChangeLog.open({ dataDir: freshDataDir(), observer: { batchCommitted: ({ txns }) => batches.push(txns) } });
    try {
      const results = await Promise.all(Array.from({ length: 2_000 }, (_, index) => log.txn([{ type: "put", key: `/registry/instances/${index % 1_500}`, value: new Uint8Array([1]), expectRevision: 0 }])));
      expect(batches).toEqual([2_000]);
      // The 500 second creates of a key conflict alone; the first 1,500 commit.
      expect(results.filter((result) => result.ok)).toHaveLength(1_500);
      expect(results.slice(1_500).every((result) => !result.ok && result.reason === "conflict")).toBe(true);
      expect(await log.currentRevision()).toBe(1_500);
    } finally {
      await log.close();
    }
  });

  it("opens with synchronous=full and refuses a database from a newer build", async () => {
    const dataDir = freshDataDir();
    const log = await SqliteChangeLog.open({ dataDir, synchronous: "full" });
    await log.txn([{ type: "put", key: "/a", value: new Uint8Array([1]) }]);
    await log.close();
    const Database = (await import("better-sqlite3")).default;
    const raw = new Database(join(dataDir, "state.db"));
    raw.pragma("user_version = 99");
    raw.close();
    await expect(SqliteChangeLog.open({ dataDir })).rejects.toMatchObject({ kind: "failedPrecondition", message: expect.stringContaining("newer than this build") });
  });

  it("creates the data dir and its files readable by the owner only", async () => {
    const dataDir = join(freshDataDir(), "nested");
    const log = await SqliteChangeLog.open({ dataDir });
    await log.txn([{ type: "put", key: "/a", value: new Uint8Array([1]) }]);
    try {
      expect(statSync(dataDir).mode & 0o777).toBe(0o700);
      for (const file of ["state.db", "state.db-wal"]) expect(statSync(join(dataDir, file)).mode & 0o077).toBe(0);
    } finally {
      await log.close();
    }
  });
});
