import { rmSync } from "node:fs";
import { afterAll } from "vitest";
import { SqliteChangeLog } from "../../services/state/adapters/sqlite-change-log.js";
import { describeChangeLog } from "../contract/change-log.js";
import { tempDir } from "../helpers/processes.js";

const directories: string[] = [];
afterAll(() => {
  for (const directory of directories) rmSync(directory, { recursive: true, force: true });
});

describeChangeLog("sqlite", async () => {
  const dataDir = tempDir("agentmesh-state-");
  directories.push(dataDir);
  return { open: () => SqliteChangeLog.open({ dataDir }), openAgain: () => SqliteChangeLog.open({ dataDir }) };
});
