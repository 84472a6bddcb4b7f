import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findBinary, freePort, type RunningChild, startUntilReady, stopChild } from "./server-binaries.js";

// A throwaway Redis from the system binary: a free port on 127.0.0.1, a temp dir,
// no persistence. One server per test file; tests isolate themselves with a key
// prefix (see `keyPrefix`), which is cheaper than a server each.

export interface ThrowawayRedis {
  readonly port: number;
  readonly url: string;
  /** A prefix no other test in this process uses. */
  keyPrefix(): string;
  /** Shuts the server down (its keys are gone: there is no persistence). */
  stop(): Promise<void>;
  /** Starts again on the same port after `stop`. */
  start(): Promise<void>;
  /** stop, then start: what a Redis restart looks like to clients. */
  restart(): Promise<void>;
  destroy(): Promise<void>;
}

let prefixCounter = 0;

export async function startRedis(): Promise<ThrowawayRedis> {
  const redisServer = findBinary(["/usr/bin/redis-server", "/usr/local/bin/redis-server"], "sudo apt-get install -y redis-server");
  const directory = mkdtempSync(join(tmpdir(), "agentmesh-redis-"));
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", directory, "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"];
  const launch = () => startUntilReady(redisServer, args, "Ready to accept connections");
  let running: RunningChild | undefined = await launch();
  const instance: ThrowawayRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    keyPrefix() {
      prefixCounter += 1;
      return `test:${process.pid}:${prefixCounter}:`;
    },
    async stop() {
      // SIGKILL: a crash, and no chance to save anything (nothing is configured to be saved anyway).
      if (running) await stopChild(running, "SIGKILL");
      running = undefined;
    },
    async start() {
      if (!running) running = await launch();
    },
    async restart() {
      await instance.stop();
      await instance.start();
    },
    async destroy() {
      await instance.stop();
      rmSync(directory, { recursive: true, force: true });
    },
  };
  return instance;
}
