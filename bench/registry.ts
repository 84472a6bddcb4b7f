/**
 * bench:registry — N agents registered over K channels (one MeshClient per
 * simulated sidecar), heartbeating at 1 s; then a subset goes silent and another
 * subset's streams are cut. The server runs as its own process so its CPU and
 * RSS are measured alone.
 *
 *   npm run bench:registry -- --agents 10000 --channels 100 --seconds 30
 */
import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { credentials } from "@grpc/grpc-js";
import { type AgentHandle, MeshClient } from "../sdk/ts/src/client/mesh-client.js";
import { ManualClock } from "../sdk/ts/src/core/clock.js";
import { RegistryServiceClient, WatchResponse_EventType } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type AgentManifest, HealthState } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import { MemoryChangeFeed } from "../services/registry/adapters/memory-change-feed.js";
import { MemoryInstanceStore } from "../services/registry/adapters/memory-instance-store.js";
import { Registry } from "../services/registry/registry.js";
import { createLogger } from "../services/server/logger.js";
import { type BenchRow, cpuPercent, delay, percentile, printTable, round, sampleProcess, writeResults } from "./bench-kit.js";

const { values: args } = parseArgs({
  options: {
    agents: { type: "string", default: "10000" },
    channels: { type: "string", default: "100" },
    seconds: { type: "string", default: "30" },
    capabilities: { type: "string", default: "100" },
    silent: { type: "string", default: "200" },
    "cut-channels": { type: "string", default: "2" },
    "grace-ms": { type: "string", default: "1000" },
  },
});
const agentCount = Number(args.agents);
const channelCount = Number(args.channels);
const steadySeconds = Number(args.seconds);
const capabilityCount = Number(args.capabilities);
const silentCount = Number(args.silent);
const cutChannels = Number(args["cut-channels"]);
const graceMs = Number(args["grace-ms"]);
const intervalMs = 1000;

function manifestFor(index: number): AgentManifest {
  const capability = index % capabilityCount;
  return {
    name: `agent-${index}`,
    version: "1.0.0",
    capabilities: [{ name: `cap.c${capability}`, version: `${1 + (index % 3)}.${index % 5}.0`, attributes: {} }],
    labels: { zone: `z${index % 4}` },
    resources: undefined,
    healthPolicy: { heartbeatIntervalMs: intervalMs, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 },
    agentCardJson: "",
  };
}

async function startServerProcess(): Promise<{ address: string; httpPort: number; pid: number; stop(): Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), "agentmesh-bench-"));
  const cli = join(import.meta.dirname, "..", "cli", "main.js");
  // The server logs at its default level (info) to a file, as it would in production.
  const logPath = join(dataDir, "server.log");
  const child = spawn(
    process.execPath,
    [cli, "server", "--insecure-dev", "--port", "0", "--http-port", "0", "--data-dir", dataDir, "--reconnect-grace-ms", String(graceMs), "--max-instances-per-identity", "1000000"],
    { stdio: ["ignore", openSync(logPath, "a"), "inherit"] },
  );
  let listening: { grpcAddress: string; httpPort: number } | undefined;
  while (!listening) {
    if (child.exitCode !== null) throw new Error(`server exited; see ${logPath}`);
    const line = readFileSync(logPath, "utf8").split("\n").find((text) => text.includes('"msg":"listening"'));
    if (line) listening = JSON.parse(line) as { grpcAddress: string; httpPort: number };
    else await delay(50);
  }
  return {
    address: listening.grpcAddress,
    httpPort: listening.httpPort,
    pid: child.pid as number,
    stop: () =>
      new Promise((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

async function heartbeatsTotal(httpPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  return Number(/^agentmesh_heartbeats_total (\S+)$/m.exec(text)?.[1] ?? 0);
}

/** Registers `count` agents from `clients` with bounded concurrency; returns per-call latencies. */
async function registerAll(clients: MeshClient[], count: number, concurrency: number): Promise<{ handles: AgentHandle[][]; latenciesMs: number[]; seconds: number }> {
  const handles: AgentHandle[][] = clients.map(() => []);
  const latenciesMs: number[] = [];
  let next = 0;
  const startedAt = performance.now();
  const worker = async () => {
    for (;;) {
      const index = next++;
      if (index >= count) return;
      const clientIndex = index % clients.length;
      const began = performance.now();
      const handle = await (clients[clientIndex] as MeshClient).register(manifestFor(index));
      latenciesMs.push(performance.now() - began);
      (handles[clientIndex] as AgentHandle[]).push(handle);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { handles, latenciesMs, seconds: (performance.now() - startedAt) / 1000 };
}

/** Registers `count` agents (numbered from `first`) with one RegisterBatch call per client, all clients at once. */
async function registerBatches(clients: MeshClient[], first: number, count: number): Promise<{ handles: AgentHandle[][]; seconds: number }> {
  const startedAt = performance.now();
  const handles = await Promise.all(
    clients.map(async (client, clientIndex) => {
      const items = [];
      for (let index = first + clientIndex; index < first + count; index += clients.length) items.push({ manifest: manifestFor(index) });
      const result = await client.registerMany(items);
      if (result.failures.length > 0) throw new Error(`batch registration failed: ${result.failures[0]?.message}`);
      return result.handles;
    }),
  );
  return { handles, seconds: (performance.now() - startedAt) / 1000 };
}

/** The registry's Discover on its in-memory index, without gRPC: the "in-process" budget. */
async function discoverInProcess(): Promise<{ p50: number; p99: number }> {
  const registry = new Registry(new MemoryInstanceStore(), new MemoryChangeFeed(), new ManualClock(), createLogger("silent"));
  for (let index = 0; index < agentCount; index += 1) {
    const { instance } = await registry.register({ manifest: manifestFor(index), instanceId: "", endpoint: "", host: "h", owner: "o" });
    registry.recordHeartbeat(instance.instanceId, undefined, "ready");
  }
  const samples: number[] = [];
  for (let iteration = 0; iteration < 20_000; iteration += 1) {
    const began = performance.now();
    registry.discover({ capability: `cap.c${iteration % capabilityCount}`, versionRange: "^1 || ^2", labelSelector: undefined, limit: 0, includeUnhealthy: false });
    samples.push(performance.now() - began);
  }
  return { p50: percentile(samples, 0.5), p99: percentile(samples, 0.99) };
}

async function main(): Promise<void> {
  const inProcess = await discoverInProcess();
  const server = await startServerProcess();
  await delay(300);
  const idle = sampleProcess(server.pid);
  const clients = Array.from({ length: channelCount }, (_, index) => new MeshClient({ address: server.address, sidecarId: `bench-host-${index}` }));
  await Promise.all(clients.map((client) => client.waitConnected()));

  // Registration latency on an open channel, one call at a time (the DESIGN budget).
  const probeClient = new MeshClient({ address: server.address, sidecarId: "bench-probe" });
  await probeClient.waitConnected();
  const sequentialMs: number[] = [];
  for (let index = 0; index < 500; index += 1) {
    const began = performance.now();
    const handle = await probeClient.register({ ...manifestFor(index), name: `probe-${index}` });
    sequentialMs.push(performance.now() - began);
    await probeClient.deregister(handle);
  }
  probeClient.close();

  // Half the agents one Register each (concurrent), half with RegisterBatch (one call per simulated sidecar).
  const singleCount = Math.floor(agentCount / 2);
  const registration = await registerAll(clients, singleCount, Math.min(256, channelCount * 4));
  const batched = await registerBatches(clients, singleCount, agentCount - singleCount);
  for (const [index, handles] of batched.handles.entries()) registration.handles[index]?.push(...handles);
  const afterRegister = sampleProcess(server.pid);
  process.stdout.write(`registered ${singleCount} agents singly in ${registration.seconds.toFixed(2)} s, ${agentCount - singleCount} in batches in ${batched.seconds.toFixed(2)} s\n`);

  // Watch from a separate channel: detection is measured as the moment the event arrives.
  const watcher = new RegistryServiceClient(server.address, credentials.createInsecure());
  const unhealthyAt = new Map<string, number>();
  const readyIds = new Set<string>();
  const watch = watcher.watch({ sinceRevision: 0, capability: "", epoch: "" });
  watch.on("data", (event) => {
    if (event.type === WatchResponse_EventType.EVENT_TYPE_SYNCED || !event.instance) return;
    if (event.instance.state === HealthState.HEALTH_STATE_UNHEALTHY) unhealthyAt.set(event.instance.instanceId, performance.now());
    if (event.instance.state === HealthState.HEALTH_STATE_READY) readyIds.add(event.instance.instanceId);
  });
  watch.on("error", () => {});

  // Steady state: everything heartbeating; measure heartbeats/s, CPU and Discover latency.
  await delay(2000);
  const steadyStart = sampleProcess(server.pid);
  const heartbeatsBefore = await heartbeatsTotal(server.httpPort);
  const discoverMs: number[] = [];
  const steadyEnd = performance.now() + steadySeconds * 1000;
  let iteration = 0;
  while (performance.now() < steadyEnd) {
    const began = performance.now();
    await clients[iteration % clients.length]?.discover(`cap.c${iteration % capabilityCount}`, "^1 || ^2");
    discoverMs.push(performance.now() - began);
    iteration += 1;
    await delay(5);
  }
  const heartbeatsAfter = await heartbeatsTotal(server.httpPort);
  const steadyStop = sampleProcess(server.pid);
  const readyCount = [...readyIds].length;

  // Silent agents: stop heartbeating on live streams.
  const silentHandles = clients.slice(cutChannels).flatMap((_, index) => registration.handles[cutChannels + index] ?? []).slice(0, silentCount);
  const silencedAt = new Map<string, number>();
  for (const handle of silentHandles) {
    handle.paused = true;
    silencedAt.set(handle.instanceId, performance.now());
  }
  // Cut streams: the sidecar vanishes without a goodbye.
  const cutHandles = registration.handles.slice(0, cutChannels).flat();
  const cutAt = performance.now();
  for (const client of clients.slice(0, cutChannels)) client.cutStream();
  for (const client of clients.slice(0, cutChannels)) client.close();
  await delay(Math.max(4000, 3 * intervalMs + graceMs + 1000));

  const silentDetectionMs = silentHandles.map((handle) => (unhealthyAt.get(handle.instanceId) ?? Number.NaN) - (silencedAt.get(handle.instanceId) ?? 0));
  const cutDetectionMs = cutHandles.map((handle) => (unhealthyAt.get(handle.instanceId) ?? Number.NaN) - cutAt);
  const undetected = [...silentDetectionMs, ...cutDetectionMs].filter((value) => Number.isNaN(value)).length;

  watch.cancel();
  watcher.close();
  for (const client of clients) client.close();
  await server.stop();

  const rssPerAgentBytes = (afterRegister.rssBytes - idle.rssBytes) / agentCount;
  const steadyCpu = cpuPercent(steadyStart, steadyStop);
  const heartbeatsPerSecond = (heartbeatsAfter - heartbeatsBefore) / ((steadyStop.atMs - steadyStart.atMs) / 1000);
  const rows: BenchRow[] = [
    { metric: "agents registered / ready", value: `${agentCount} / ${readyCount}`, unit: "", budget: "10,000 at 1 s heartbeats", ok: readyCount >= agentCount },
    { metric: "channels (simulated sidecars)", value: channelCount, unit: "" },
    { metric: `registrations/s, one Register per agent (${singleCount}, concurrent)`, value: round(singleCount / registration.seconds, 0), unit: "1/s", budget: ">= 2,000", ok: singleCount / registration.seconds >= 2000 },
    { metric: `registrations/s, RegisterBatch per sidecar (${agentCount - singleCount})`, value: round((agentCount - singleCount) / batched.seconds, 0), unit: "1/s", budget: ">= 2,000", ok: (agentCount - singleCount) / batched.seconds >= 2000 },
    { metric: "registration p50 / p99 (open channel, 1 in flight)", value: `${round(percentile(sequentialMs, 0.5))} / ${round(percentile(sequentialMs, 0.99))}`, unit: "ms", budget: "p99 < 5", ok: percentile(sequentialMs, 0.99) < 5 },
    { metric: "registration p50 / p99 (under concurrent load)", value: `${round(percentile(registration.latenciesMs, 0.5))} / ${round(percentile(registration.latenciesMs, 0.99))}`, unit: "ms" },
    { metric: "heartbeats handled", value: round(heartbeatsPerSecond, 0), unit: "1/s", budget: `~${agentCount}`, ok: heartbeatsPerSecond >= agentCount * 0.95 },
    { metric: "server CPU at steady state", value: round(steadyCpu, 1), unit: "% of a core" },
    { metric: "server RSS idle / with agents", value: `${round(idle.rssBytes / 2 ** 20, 1)} / ${round(afterRegister.rssBytes / 2 ** 20, 1)}`, unit: "MiB" },
    { metric: "server RSS per agent", value: round(rssPerAgentBytes / 1024, 2), unit: "KiB", budget: "< 50", ok: rssPerAgentBytes < 50 * 1024 },
    { metric: `silent → UNHEALTHY p50 / p99 (${silentHandles.length} agents)`, value: `${round(percentile(silentDetectionMs, 0.5), 0)} / ${round(percentile(silentDetectionMs, 0.99), 0)}`, unit: "ms", budget: "p99 < 2500", ok: percentile(silentDetectionMs, 0.99) < 2500 },
    { metric: `stream cut → UNHEALTHY p50 / p99 (${cutHandles.length} agents)`, value: `${round(percentile(cutDetectionMs, 0.5), 0)} / ${round(percentile(cutDetectionMs, 0.99), 0)}`, unit: "ms", budget: `< grace ${graceMs} + 100`, ok: percentile(cutDetectionMs, 0.99) < graceMs + 100 },
    { metric: "agents never detected", value: undetected, unit: "", budget: "0", ok: undetected === 0 },
    { metric: "Discover RPC p50 / p99 (loopback, under load)", value: `${round(percentile(discoverMs, 0.5), 3)} / ${round(percentile(discoverMs, 0.99), 3)}`, unit: "ms" },
    { metric: "Discover p50 / p99 (in-process, 10k agents)", value: `${round(inProcess.p50, 4)} / ${round(inProcess.p99, 4)}`, unit: "ms", budget: "p99 < 1", ok: inProcess.p99 < 1 },
  ];
  printTable(`bench:registry — ${agentCount} agents, ${channelCount} channels, ${steadySeconds} s steady, node ${process.version}`, rows);
  const path = writeResults("registry", { at: new Date().toISOString(), parameters: args, rows });
  process.stdout.write(`\nwrote ${path}\n`);
}

await main();
