/**
 * bench:commands — what a lifecycle command costs when the sidecar's stream is held
 * by another replica (docs/adr/0009), against one held by the leader itself, and how
 * long a dead replica's sidecars stay placeable. In one process: two ConnectHubs on
 * real gRPC servers, MeshClient sidecars answering at once, one leader Lifecycle;
 * per store: SQLite with one handle per replica (in-process wake-ups), and
 * PostgreSQL (one pool per replica) + Redis (one connection per replica).
 *
 *   npm run bench:commands -- [--samples 200]
 *
 * Prints a table and writes bench/results/commands-across-replicas-<timestamp>.json.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { MeshClient } from "../sdk/ts/src/client/mesh-client.js";
import { systemClock } from "../sdk/ts/src/core/clock.js";
import { MemoryNonceCache } from "../sdk/ts/src/core/nonce-cache.js";
import { OrchestratorServiceService } from "../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegistryServiceService } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { EnvelopeOpener } from "../services/identity/envelope-opener.js";
import { ChangeLogSidecarDirectory } from "../services/orchestrator/adapters/change-log-sidecar-directory.js";
import { MemoryDeploymentStore } from "../services/orchestrator/adapters/memory-deployment-store.js";
import { ConnectHub } from "../services/orchestrator/connect-hub.js";
import { orchestratorHandlers } from "../services/orchestrator/grpc-handlers.js";
import { Lifecycle } from "../services/orchestrator/lifecycle.js";
import { Resolver } from "../services/orchestrator/resolver.js";
import { MemoryChangeFeed } from "../services/registry/adapters/memory-change-feed.js";
import { MemoryInstanceStore } from "../services/registry/adapters/memory-instance-store.js";
import { registryHandlers } from "../services/registry/grpc-handlers.js";
import { Registry } from "../services/registry/registry.js";
import { type CallerIdentity, devAuthenticator } from "../services/server/call-context.js";
import { createLogger } from "../services/server/logger.js";
import { ServerMetrics } from "../services/server/metrics.js";
import type { LifecycleHandlers } from "../services/orchestrator/grpc-handlers.js";
import {
  type ChangeLog,
  type Coordination,
  InProcessCoordination,
  PostgresChangeLog,
  PostgresDatabase,
  RedisCoordination,
  SqliteChangeLog,
  relayCommits,
} from "../services/state/index.js";
import { startPostgres } from "../test/helpers/postgres.js";
import { startRedis } from "../test/helpers/redis.js";
import { percentile, printGrid, round, writeResults } from "./bench-kit.js";

const { values } = parseArgs({ options: { samples: { type: "string", default: "200" } } });
const samples = Number(values.samples);
const trustDomain = "bench.local";
const admin: CallerIdentity = { spiffeId: `spiffe://${trustDomain}/admin/bench`, isAdmin: true, allowedAgentNames: new Set(["*"]) };
const logger = createLogger("silent");
const leaseTtlMs = 3_000;
const renewIntervalMs = 1_000;

/** What a process that died can no longer do: every call of the wrapped port fails from `kill()` on. */
function mortal<T extends object>(target: T): { port: T; kill(): void } {
  let dead = false;
  const port = new Proxy(target, {
    get(object, property, receiver) {
      const value = Reflect.get(object, property, receiver) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => (dead ? Promise.reject(new Error("replica is dead")) : (value as (...rest: unknown[]) => unknown).apply(object, args));
    },
  });
  return { port, kill: () => (dead = true) };
}

interface StoreUnderTest {
  name: string;
  /** One handle and one coordination per replica. */
  replicas: Array<{ log: ChangeLog; coordination: Coordination }>;
  close(): Promise<void>;
}

interface Measured {
  localMs: number[];
  remoteMs: number[];
  deadReplicaDroppedAfterMs: number;
}

async function measure(store: StoreUnderTest): Promise<Measured> {
  const registry = new Registry(new MemoryInstanceStore(), new MemoryChangeFeed(), systemClock, logger);
  const replicas: Array<{ hub: ConnectHub; server: Server; address: string; directory: ChangeLogSidecarDirectory; kill(): void }> = [];
  let lifecycle: Lifecycle | undefined;
  for (const [index, { log, coordination }] of store.replicas.entries()) {
    const serverId = `replica-${index}`;
    const hub = new ConnectHub(registry, logger, { reconnectGraceMs: 0, heartbeatTimeoutMultiplier: 3, serverId, maxInstancesPerStream: 100 }, () => undefined);
    const mortalLog = mortal(log);
    const mortalLeases = mortal(coordination.leases);
    const directory = new ChangeLogSidecarDirectory({ hub, log: mortalLog.port, leases: mortalLeases.port, wakeUps: coordination.wakeUps, serverId, clock: systemClock, logger, leaseTtlMs, renewIntervalMs });
    await directory.start();
    const metrics = new ServerMetrics(() => registry, () => undefined);
    const plumbing = { authenticate: devAuthenticator(trustDomain), log: logger, metrics, streams: new Map() };
    const server = new Server();
    server.addService(RegistryServiceService, registryHandlers(registry, plumbing, metrics, new EnvelopeOpener(trustDomain, new MemoryNonceCache({ clock: systemClock }), systemClock)));
    // Only Connect is used here; the lifecycle RPCs are called on the Lifecycle directly.
    server.addService(OrchestratorServiceService, orchestratorHandlers(hub, new Resolver(registry), plumbing, metrics, {} as LifecycleHandlers));
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))));
    replicas.push({
      hub,
      server,
      address: `127.0.0.1:${port}`,
      directory,
      kill: () => {
        mortalLog.kill();
        mortalLeases.kill();
      },
    });
  }
  const [leader, other] = replicas as [(typeof replicas)[number], (typeof replicas)[number]];
  lifecycle = new Lifecycle({
    registry,
    sidecars: leader.directory,
    store: new MemoryDeploymentStore(),
    clock: systemClock,
    log: logger,
    audit: { append: async () => undefined },
    signer: undefined,
    reconcileIntervalMs: 3_600_000,
    adoptGraceMs: 0,
  });
  await lifecycle.start();
  const clients: MeshClient[] = [];
  const connect = async (sidecarId: string, address: string): Promise<string> => {
    const client: MeshClient = new MeshClient({
      address,
      sidecarId,
      host: sidecarId,
      onCommand: (response) => {
        if (response.msg?.$case === "command") client.sendCommandResult({ commandId: response.msg.value.commandId, ok: true, message: "", instanceId: "" });
      },
    });
    clients.push(client);
    const handle = await client.register({ name: "bench", version: "1.0.0", capabilities: [{ name: "bench.noop", version: "1.0.0", attributes: {} }], labels: {}, resources: undefined, healthPolicy: undefined, agentCardJson: "" });
    await client.waitConnected();
    return handle.instanceId;
  };
  const local = await connect("sidecar-local", leader.address);
  const remote = await connect("sidecar-remote", other.address);
  while (leader.directory.sessionFor(remote)?.holder !== "replica-1") await new Promise((resolve) => setTimeout(resolve, 5));
  const timeRestarts = async (instanceId: string): Promise<number[]> => {
    const times: number[] = [];
    for (let index = 0; index < samples; index += 1) {
      const startedMs = performance.now();
      await lifecycle?.command("restart", instanceId, 0, admin, "bench");
      times.push(performance.now() - startedMs);
    }
    return times;
  };
  const localMs = await timeRestarts(local);
  const remoteMs = await timeRestarts(remote);
  // The remote replica dies without a word: it can no longer write or renew, its keys stay.
  const killedAtMs = performance.now();
  other.kill();
  other.server.forceShutdown();
  while (leader.directory.sessions().some((session) => session.holder === "replica-1")) await new Promise((resolve) => setTimeout(resolve, 10));
  const deadReplicaDroppedAfterMs = performance.now() - killedAtMs;

  lifecycle.stop();
  for (const client of clients) client.close();
  for (const replica of replicas) {
    replica.hub.shutdown("bench over", 0);
    replica.server.forceShutdown();
    await replica.directory.close();
  }
  await lifecycle.settle();
  return { localMs, remoteMs, deadReplicaDroppedAfterMs };
}

async function sqliteStore(): Promise<StoreUnderTest> {
  const path = join(mkdtempSync(join(tmpdir(), "agentmesh-bench-commands-")), "state.db");
  const coordination = new InProcessCoordination(systemClock);
  const logs = [await SqliteChangeLog.open({ path }), await SqliteChangeLog.open({ path })];
  const relays = logs.map((log) => relayCommits(log, coordination.wakeUps));
  return {
    name: "SQLite, 2 handles",
    replicas: logs.map((log) => ({ log, coordination })),
    close: async () => {
      for (const stop of relays) stop();
      for (const log of logs) await log.close();
    },
  };
}

async function postgresStore(): Promise<StoreUnderTest> {
  const postgres = await startPostgres({ durable: true });
  const redis = await startRedis();
  const url = await postgres.createDatabase();
  const databases = [await PostgresDatabase.open({ url }), await PostgresDatabase.open({ url })];
  const logs = databases.map((database) => new PostgresChangeLog(database));
  const keyPrefix = redis.keyPrefix();
  const coordinations = [await RedisCoordination.open({ url: redis.url, clock: systemClock, keyPrefix }), await RedisCoordination.open({ url: redis.url, clock: systemClock, keyPrefix })];
  const relays = logs.map((log, index) => relayCommits(log, (coordinations[index] as Coordination).wakeUps));
  return {
    name: "PostgreSQL + Redis, 2 pools",
    replicas: logs.map((log, index) => ({ log, coordination: coordinations[index] as Coordination })),
    close: async () => {
      for (const stop of relays) stop();
      for (const log of logs) await log.close();
      for (const coordination of coordinations) await coordination.close();
      for (const database of databases) await database.close();
      await redis.destroy();
      await postgres.destroy();
    },
  };
}

const results: Record<string, Measured> = {};
for (const open of [sqliteStore, postgresStore]) {
  const store = await open();
  try {
    results[store.name] = await measure(store);
  } finally {
    await store.close();
  }
}
const headers = ["metric", "unit", ...Object.keys(results)];
const column = (pick: (measured: Measured) => number) => Object.values(results).map((measured) => round(pick(measured)));
const rows: Array<Array<string | number>> = [
  ["restart RPC, sidecar on the leader's replica, p50", "ms", ...column((measured) => percentile(measured.localMs, 0.5))],
  ["restart RPC, sidecar on the leader's replica, p99", "ms", ...column((measured) => percentile(measured.localMs, 0.99))],
  ["restart RPC, sidecar on another replica, p50", "ms", ...column((measured) => percentile(measured.remoteMs, 0.5))],
  ["restart RPC, sidecar on another replica, p99", "ms", ...column((measured) => percentile(measured.remoteMs, 0.99))],
  [`dead replica's sidecars out of placement (lease ${leaseTtlMs} ms, sweep every ${renewIntervalMs} ms)`, "ms", ...column((measured) => measured.deadReplicaDroppedAfterMs)],
];
printGrid(`bench:commands — ${samples} restarts each, one process, node ${process.version}`, headers, rows);
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
const path = writeResults(`commands-across-replicas-${stamp}`, {
  samples,
  results: Object.fromEntries(
    Object.entries(results).map(([name, measured]) => [
      name,
      {
        localP50Ms: percentile(measured.localMs, 0.5),
        localP99Ms: percentile(measured.localMs, 0.99),
        remoteP50Ms: percentile(measured.remoteMs, 0.5),
        remoteP99Ms: percentile(measured.remoteMs, 0.99),
        deadReplicaDroppedAfterMs: measured.deadReplicaDroppedAfterMs,
      },
    ]),
  ),
});
process.stdout.write(`\nwritten to ${path}\n`);
process.exit(0);
