import { execFile } from "node:child_process";
import { chownSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { findBinary, freePort, type RunAs, type RunningChild, startUntilReady, stopChild, unprivilegedUser } from "./server-binaries.js";

// A throwaway PostgreSQL from the system binaries: initdb in a temp dir, a free port
// on 127.0.0.1, its unix socket in the temp dir, never the default port or the
// system instance. One server per test file (beforeAll); each test takes a fresh
// schema (milliseconds) or, with createDatabase, a fresh database (~100 ms).

const execFileAsync = promisify(execFile);
const binDirectories = ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin", "/usr/local/pgsql/bin"];
const installHint = "sudo apt-get install -y postgresql";

function postgresBinary(name: string): string {
  return findBinary(binDirectories.map((directory) => join(directory, name)), installHint);
}

export interface ThrowawayPostgres {
  readonly port: number;
  /** Connection string for a database on this server. */
  url(database?: string): string;
  /** Creates an empty database and answers its connection string. */
  createDatabase(): Promise<string>;
  /** Fast shutdown (SIGINT); the data directory stays, so `start` brings it back. */
  stop(): Promise<void>;
  /** Starts again on the same port and data directory after `stop`. */
  start(): Promise<void>;
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
}

let databaseCounter = 0;

export interface StartPostgresOptions {
  /** fsync as in production (for measurements); off by default, tests do not need it. */
  durable?: boolean;
}

export async function startPostgres(options: StartPostgresOptions = {}): Promise<ThrowawayPostgres> {
  const initdb = postgresBinary("initdb");
  const postgres = postgresBinary("postgres");
  const runAs = unprivilegedUser("postgres");
  const root = mkdtempSync(join(tmpdir(), "agentmesh-pg-"));
  const dataDirectory = join(root, "data");
  const socketDirectory = join(root, "socket");
  mkdirSync(socketDirectory);
  if (runAs) {
    chownSync(root, runAs.uid, runAs.gid);
    chownSync(socketDirectory, runAs.uid, runAs.gid);
  }
  await runInitdb(initdb, dataDirectory, runAs);
  const port = await freePort();
  const args = [
    "-D", dataDirectory,
    "-p", String(port),
    "-k", socketDirectory,
    "-c", "listen_addresses=127.0.0.1",
    // A test server: durability is not what these tests measure, speed is welcome.
    ...(options.durable ? [] : ["-c", "fsync=off", "-c", "full_page_writes=off"]),
    "-c", "max_connections=200",
    "-c", "shared_buffers=32MB",
  ];
  let running: RunningChild | undefined = await startUntilReady(postgres, args, "database system is ready to accept connections", { runAs });
  const url = (database = "postgres") => `postgres://postgres@127.0.0.1:${port}/${database}`;
  const instance: ThrowawayPostgres = {
    port,
    url,
    async createDatabase() {
      databaseCounter += 1;
      const name = `test_${process.pid}_${databaseCounter}`;
      const admin = new pg.Client({ connectionString: url() });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      return url(name);
    },
    async stop() {
      if (running) await stopChild(running, "SIGINT");
      running = undefined;
    },
    async start() {
      if (running) return;
      running = await startUntilReady(postgres, args, "database system is ready to accept connections", { runAs });
    },
    async destroy() {
      await instance.stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
  return instance;
}

async function runInitdb(initdb: string, dataDirectory: string, runAs: RunAs | undefined): Promise<void> {
  try {
    await execFileAsync(initdb, ["-D", dataDirectory, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"], {
      env: { ...process.env, LC_ALL: "C" },
      ...(runAs ?? {}),
    });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? "";
    throw new Error(`initdb failed: ${stderr.slice(-2000)}`);
  }
}
