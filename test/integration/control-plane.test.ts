import { type ServiceError, status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MeshClient } from "../../sdk/ts/src/client/mesh-client.js";
import { WatchResponse_EventType, type WatchResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type RunningServer, startServer } from "../../services/server/server.js";
import { EventLog } from "../helpers/events.js";
import { logSink } from "../helpers/log-sink.js";
import { tempDir } from "../helpers/processes.js";
import { manifest } from "../helpers/manifests.js";

let server: RunningServer;
const clients: MeshClient[] = [];

function client(sidecarId = "host-a"): MeshClient {
  const created = new MeshClient({ address: server.address, sidecarId });
  clients.push(created);
  return created;
}

function watchEvents(watcher: MeshClient) {
  const log = new EventLog<WatchResponse>();
  const stop = watcher.watch((event) => log.push(event));
  return { events: log.items, stop, next: (predicate: (event: WatchResponse) => boolean) => log.next(predicate) };
}

beforeEach(async () => {
  server = await startServer({ port: 0, httpPort: 0, reconnectGraceMs: 200, insecureDev: true, dataDir: tempDir() }, { log: logSink("silent").log });
});

afterEach(async () => {
  for (const created of clients.splice(0)) created.close();
  await server.close();
});

describe("registry over gRPC", () => {
  it("registers, discovers and deregisters an agent", async () => {
    const agent = client();
    const handle = await agent.register(manifest());
    expect(handle.instance.state).toBe(HealthState.HEALTH_STATE_STARTING);
    const watch = watchEvents(client("watcher"));
    await watch.next((event) => event.instance?.instanceId === handle.instanceId && event.instance.state === HealthState.HEALTH_STATE_READY);

    const found = await agent.discover("sql.query", "^2.0.0");
    expect(found.map((instance) => instance.instanceId)).toEqual([handle.instanceId]);
    expect(await agent.discover("sql.query", "^3.0.0")).toEqual([]);

    await agent.deregister(handle);
    expect(await agent.discover("sql.query", "^2.0.0")).toEqual([]);
    watch.stop();
  });

  it("Watch delivers a snapshot, then register, state change and deregister in order", async () => {
    const agent = client();
    const existing = await agent.register(manifest({ name: "existing" }));
    const watch = watchEvents(client("watcher"));
    await watch.next((event) => event.type === WatchResponse_EventType.EVENT_TYPE_SYNCED);
    expect(watch.events[0]?.instance?.instanceId).toBe(existing.instanceId);

    const second = await agent.register(manifest({ name: "second" }));
    await watch.next((event) => event.instance?.instanceId === second.instanceId && event.instance.state === HealthState.HEALTH_STATE_READY);
    await agent.deregister(second);
    await watch.next((event) => event.type === WatchResponse_EventType.EVENT_TYPE_REMOVED);

    const forSecond = watch.events.filter((event) => event.instance?.instanceId === second.instanceId);
    expect(forSecond.map((event) => [WatchResponse_EventType[event.type], HealthState[event.instance?.state ?? 0]])).toEqual([
      ["EVENT_TYPE_ADDED", "HEALTH_STATE_STARTING"],
      ["EVENT_TYPE_UPDATED", "HEALTH_STATE_READY"],
      ["EVENT_TYPE_REMOVED", "HEALTH_STATE_READY"],
    ]);
    const revisions = watch.events.slice(1).map((event) => event.revision);
    expect(revisions).toEqual([...revisions].sort((left, right) => left - right));
    watch.stop();
  });

  it("Watch resumes from a revision without a snapshot", async () => {
    const agent = client();
    const first = await agent.register(manifest({ name: "first" }));
    const revision = server.registry.currentRevision;
    await agent.register(manifest({ name: "later" }));
    const resumed: WatchResponse[] = [];
    const stop = client("watcher").watch((event) => resumed.push(event), { sinceRevision: revision, epoch: server.registry.epoch });
    await expect.poll(() => resumed.some((event) => event.instance?.manifest?.name === "later")).toBe(true);
    expect(resumed.some((event) => event.instance?.instanceId === first.instanceId && event.type === WatchResponse_EventType.EVENT_TYPE_ADDED)).toBe(false);
    expect(resumed.some((event) => event.type === WatchResponse_EventType.EVENT_TYPE_SYNCED)).toBe(false);
    stop();
  });
});

describe("RegisterBatch", () => {
  it("registers each item on its own: good ones stored, a bad one refused with its own status", async () => {
    const agent = client();
    const { handles, failures } = await agent.registerMany([
      { manifest: manifest({ name: "batch-a" }) },
      { manifest: manifest({ name: "Bad_Name" }) },
      { manifest: manifest({ name: "batch-c" }) },
    ]);
    expect(handles.map((handle) => handle.manifest.name)).toEqual(["batch-a", "batch-c"]);
    expect(failures).toEqual([{ index: 1, code: status.INVALID_ARGUMENT, message: expect.stringContaining("manifest.name") }]);
    expect(server.registry.size).toBe(2);
    await expect.poll(() => [...server.registry.all()].every((instance) => instance.state === HealthState.HEALTH_STATE_READY)).toBe(true);
  });

  it("refuses an empty or oversized batch as a whole", async () => {
    const agent = client();
    for (const registrations of [[], Array.from({ length: 1001 }, () => ({ manifest: manifest(), instanceId: "", endpoint: "", host: "", envelope: undefined, deployment: "" }))]) {
      const error = await new Promise<ServiceError>((resolve) => agent.registry.registerBatch({ registrations }, (failure) => resolve(failure as ServiceError)));
      expect(error.code).toBe(status.INVALID_ARGUMENT);
      expect(error.details).toMatch(/^registrations: /);
    }
    expect(server.registry.size).toBe(0);
  });
});

describe("health over Connect", () => {
  it("heartbeat silence makes an agent UNHEALTHY, and a heartbeat makes it READY again", async () => {
    const agent = client();
    const watch = watchEvents(client("watcher"));
    const handle = await agent.register(manifest());
    await watch.next((event) => event.instance?.state === HealthState.HEALTH_STATE_READY);
    handle.paused = true;
    const unhealthy = await watch.next((event) => event.instance?.state === HealthState.HEALTH_STATE_UNHEALTHY);
    expect(unhealthy.instance?.stateReason).toBe("heartbeat timeout");
    expect(await agent.discover("sql.query")).toEqual([]);
    handle.paused = false;
    await watch.next((event) => event.instance?.state === HealthState.HEALTH_STATE_READY);
    expect((await agent.discover("sql.query")).length).toBe(1);
    watch.stop();
  });

  it("a cut stream makes its agents UNHEALTHY after the reconnect grace", async () => {
    const agent = client();
    const watch = watchEvents(client("watcher"));
    await agent.register(manifest({ healthPolicy: { heartbeatIntervalMs: 1000, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 } }));
    await watch.next((event) => event.instance?.state === HealthState.HEALTH_STATE_READY);
    agent.close();
    const unhealthy = await watch.next((event) => event.instance?.state === HealthState.HEALTH_STATE_UNHEALTHY);
    expect(unhealthy.instance?.stateReason).toBe("sidecar stream lost");
    watch.stop();
  });

  it("50 agents register and heartbeat concurrently and all become READY", async () => {
    const agents = Array.from({ length: 5 }, (_, index) => client(`host-${index}`));
    const handles = await Promise.all(
      Array.from({ length: 50 }, (_, index) =>
        (agents[index % 5] as MeshClient).register(manifest({ name: `agent-${index}` })),
      ),
    );
    expect(new Set(handles.map((handle) => handle.instanceId)).size).toBe(50);
    await expect
      .poll(() => [...server.registry.all()].filter((instance) => instance.state === HealthState.HEALTH_STATE_READY).length, { timeout: 5000 })
      .toBe(50);
    const found = await (agents[0] as MeshClient).discover("sql.query", "2.x");
    expect(found.length).toBe(50);
  });

  it("Resolve picks among healthy instances and spreads picks", async () => {
    const agent = client();
    const handles = await Promise.all([1, 2, 3].map((index) => agent.register(manifest({ name: `worker-${index}` }))));
    await expect.poll(() => server.registry.discover({ capability: "sql.query", versionRange: "", labelSelector: undefined, limit: 0, includeUnhealthy: false }).length).toBe(3);
    const picked = new Set<string>();
    for (let index = 0; index < 30; index += 1) picked.add((await agent.resolve("sql.query", "^2")).instanceId);
    expect(picked.size).toBe(3);
    expect([...picked].sort()).toEqual(handles.map((handle) => handle.instanceId).sort());
  });
});

describe("graceful shutdown", () => {
  it("tells connected sidecars and ends their streams cleanly", async () => {
    const events: string[] = [];
    const agent = new MeshClient({ address: server.address, sidecarId: "host-a", onEvent: (event) => events.push(event.type) });
    clients.push(agent);
    await agent.register(manifest());
    await agent.waitConnected();
    const stopWatch = client("watcher").watch(() => {});
    await server.close();
    expect(events).toContain("shutdown");
    await expect.poll(() => events.includes("disconnected")).toBe(true);
    stopWatch();
  });
});

describe("bad input", () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ["missing manifest", { manifest: undefined }, "manifest: required"],
    ["bad agent name", { manifest: manifest({ name: "Bad_Name" }) }, "manifest.name"],
    ["bad version", { manifest: manifest({ version: "1.0" }) }, "manifest.version"],
    ["no capabilities", { manifest: manifest({ capabilities: [] }) }, "manifest.capabilities"],
    ["bad capability name", { manifest: manifest({ capabilities: [{ name: "SQL Query", version: "1.0.0", attributes: {} }] }) }, "capabilities[0].name"],
    ["bad capability version", { manifest: manifest({ capabilities: [{ name: "sql.query", version: "v2", attributes: {} }] }) }, "capabilities[0].version"],
    ["bad label", { manifest: manifest({ labels: { "bad key!": "x" } }) }, "manifest.labels"],
    ["interval too small", { manifest: manifest({ healthPolicy: { heartbeatIntervalMs: 10, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 } }) }, "heartbeat_interval_ms"],
    ["bad endpoint", { manifest: manifest(), endpoint: "no-port" }, "endpoint"],
    ["bad instance id", { manifest: manifest(), instanceId: "a b" }, "instance_id"],
  ];

  it.each(cases)("Register with %s is INVALID_ARGUMENT naming the field and stores nothing", async (_name, fields, fieldName) => {
    const agent = client();
    const revision = server.registry.currentRevision;
    const error = await new Promise<ServiceError>((resolve) =>
      agent.registry.register({ manifest: undefined, instanceId: "", endpoint: "", host: "", envelope: undefined, deployment: "", ...fields }, (failure) =>
        resolve(failure as ServiceError),
      ),
    );
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toContain(fieldName);
    expect(server.registry.size).toBe(0);
    expect(server.registry.currentRevision).toBe(revision);
  });

  it.each([["^^1"], ["not a range"], [">=1.0.0 <"]])("Discover with range %s is INVALID_ARGUMENT", async (range) => {
    const agent = client();
    const error = await agent.discover("sql.query", range).catch((failure: ServiceError) => failure);
    expect((error as ServiceError).code).toBe(status.INVALID_ARGUMENT);
    expect((error as ServiceError).details).toContain("version_range");
  });

  it("Deregister of an unknown instance is NOT_FOUND", async () => {
    const error = await new Promise<ServiceError>((resolve) =>
      client().registry.deregister({ instanceId: "nope", reason: "" }, (failure) => resolve(failure as ServiceError)),
    );
    expect(error.code).toBe(status.NOT_FOUND);
  });

  it("Resolve with nothing healthy is UNAVAILABLE", async () => {
    const error = await client().resolve("sql.query").catch((failure: ServiceError) => failure);
    expect((error as ServiceError).code).toBe(status.UNAVAILABLE);
  });
});
