import { rmSync } from "node:fs";
import { afterAll } from "vitest";
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
