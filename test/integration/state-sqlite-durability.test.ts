import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { SqliteChangeLog } from "../../services/state/adapters/sqlite-change-log.js";
import { readAllChanges } from "../contract/change-log.js";
import { repoRoot, tempDir } from "../helpers/processes.js";

// "A write answered OK is on disk": a writer process is killed with SIGKILL right
// after acknowledging writes; a fresh open must find every acknowledged one.

const writer = join(repoRoot, "test/fixtures/state/sqlite-writer.ts");

function writeUntilKilled(dataDir: string, synchronous: "normal" | "full", killAfterAcks: number): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", writer, dataDir, synchronous], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
    const acknowledged = new Map<string, number>();
    let buffered = "";
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        const [key, revision] = line.split(" ");
        if (key && revision) acknowledged.set(key, Number(revision));
      }
      // Kill the moment enough acks are in, while the writer is mid-burst.
      if (acknowledged.size >= killAfterAcks && child.exitCode === null && !child.killed) child.kill("SIGKILL");
    });
    child.once("exit", (code, signal) => {
      if (signal === "SIGKILL") resolve(acknowledged);
      else reject(new Error(`writer exited with ${code}: ${stderr.slice(-2000)}`));
    });
  });
}

describe("SQLite change log durability", () => {
  const directories: string[] = [];
  afterEach(() => {
    for (const directory of directories.splice(0)) rmSync(directory, { recursive: true, force: true });
  });

  it.each(["normal", "full"] as const)("keeps every write acknowledged before a kill -9 (synchronous=%s)", async (synchronous) => {
    const dataDir = tempDir("agentmesh-durability-");
    directories.push(dataDir);
    const acknowledged = await writeUntilKilled(dataDir, synchronous, 2_000);
    expect(acknowledged.size).toBeGreaterThanOrEqual(2_000);
    const log = await SqliteChangeLog.open({ dataDir });
    try {
      const { items } = await log.range("/registry/instances/");
      const stored = new Map(items.map((item) => [item.key, item.modRevision]));
      const lost = [...acknowledged].filter(([key, revision]) => stored.get(key) !== revision);
      expect(lost).toEqual([]);
      // And the history is whole: gap-free revisions up to the newest.
      const revisions = (await readAllChanges(log)).map((change) => change.revision);
      expect(revisions).toEqual(Array.from({ length: revisions.length }, (_, index) => index + 1));
      expect(Math.max(...acknowledged.values())).toBeLessThanOrEqual(await log.currentRevision());
    } finally {
      await log.close();
    }
  });
});
