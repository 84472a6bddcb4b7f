// The reconciler with sidecars connected to different replicas (ADR 0009): two
// ConnectHubs ("replicas" a and b, real gRPC servers on port 0) on one change log
// (one memory log; SQLite with one handle per replica; the same plus a real Redis
// connection per replica for leases and wake-ups), scripted sidecars (MeshClient on
// real Connect streams), and one leader Lifecycle on replica a. Commands for b's
// sidecars go through the log; their results come back through it.
import { join } from "node:path";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { MemoryNonceCache } from "../../sdk/ts/src/core/nonce-cache.js";
import { MeshClient, type AgentHandle } from "../../sdk/ts/src/client/mesh-client.js";
import { type Command, Command as CommandMessage, type Deployment, OrchestratorServiceService } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { RegistryServiceService } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { EnvelopeOpener } from "../../services/identity/envelope-opener.js";
import { ChangeLogDeploymentStore } from "../../services/orchestrator/adapters/change-log-deployment-store.js";
import { ChangeLogSidecarDirectory } from "../../services/orchestrator/adapters/change-log-sidecar-directory.js";
import { ConnectHub } from "../../services/orchestrator/connect-hub.js";
import { orchestratorHandlers } from "../../services/orchestrator/grpc-handlers.js";
import { Lifecycle } from "../../services/orchestrator/lifecycle.js";
import { lifecycleHandlers } from "../../services/orchestrator/lifecycle-handlers.js";
import { Resolver } from "../../services/orchestrator/resolver.js";
import { ServerInvoker } from "../../services/orchestrator/invoker.js";
import { MemoryChangeFeed } from "../../services/registry/adapters/memory-change-feed.js";
import { MemoryInstanceStore } from "../../services/registry/adapters/memory-instance-store.js";
import { registryHandlers } from "../../services/registry/grpc-handlers.js";
import { Registry } from "../../services/registry/registry.js";
import { type CallerIdentity, devAuthenticator } from "../../services/server/call-context.js";
import { ServerMetrics } from "../../services/server/metrics.js";
import type { RpcPlumbing } from "../../services/server/rpc-wrapper.js";
import {
  type ChangeLog,
  type Coordination,
  InProcessCoordination,
  type LivenessLeases,
  MemoryChangeLog,
  RedisCoordination,
  SqliteChangeLog,
  relayCommits,
  stateKeys,
} from "../../services/state/index.js";
import { EventLog } from "../helpers/events.js";
import { logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";
import { tempDir } from "../helpers/processes.js";
import { type ThrowawayRedis, startRedis } from "../helpers/redis.js";
import { SteppingTimers } from "../helpers/stepping-timers.js";

const trustDomain = "mesh.test";
const admin: CallerIdentity = { spiffeId: `spiffe://${trustDomain}/admin/test`, isAdmin: true, allowedAgentNames: new Set(["*"]) };
const leaseTtlMs = 3_000;
const renewIntervalMs = 1_000;
const { log: logger } = logSink("silent");

/** An upper bound for slow machines, not a timing assertion: each of these follows from events in order. */
function eventually<T>(read: () => T | Promise<T>) {
  return expect.poll(read, { timeout: 10_000, interval: 10 });
}

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

interface Replica {
  serverId: string;
  hub: ConnectHub;
  server: Server;
  address: string;
  directory: ChangeLogSidecarDirectory;
  /** What its directory counted, by event. */
  events: Map<string, number>;
  kill(): void;
}

interface TestSidecar {
  sidecarId: string;
  client: MeshClient;
  commands: EventLog<Command>;
  handles: Map<string, AgentHandle>;
}

let timers: SteppingTimers;
/** Replica a's handle on the change log (the leader's). */
let changeLog: ChangeLog;
let handles: ChangeLog[];
let stopRelays: Array<() => void>;
/** Per replica; the same object twice when they share one process's coordination. */
let coordinations: Coordination[];
let redis: ThrowawayRedis | undefined;
let registry: Registry;
let replicas: Replica[];
let sidecars: TestSidecar[];
let lifecycle: Lifecycle;
let fenceToken: number;

async function startReplica(serverId: string, handle: ChangeLog, coordination: Coordination, lifecycleFor: () => Lifecycle): Promise<Replica> {
  const log = mortal<ChangeLog>(handle);
  const leases = mortal<LivenessLeases>(coordination.leases);
  const hub = new ConnectHub(registry, logger, { reconnectGraceMs: 0, heartbeatTimeoutMultiplier: 3, serverId, maxInstancesPerStream: 100 }, (caller, owner) => {
    if (caller !== owner) throw new Error("instance owned by another identity");
  });
  const events = new Map<string, number>();
  const directory = new ChangeLogSidecarDirectory({
    onEvent: (event) => events.set(event, (events.get(event) ?? 0) + 1),
    hub,
    log: log.port,
    leases: leases.port,
    wakeUps: coordination.wakeUps,
    serverId,
    clock: timers.clock,
    timers,
    logger,
    leaseTtlMs,
    renewIntervalMs,
    fence: () => ({ name: "agentmesh-control-plane", token: fenceToken }),
  });
  await directory.start();
  const metrics = new ServerMetrics(() => registry, () => undefined);
  const plumbing: RpcPlumbing = { authenticate: devAuthenticator(trustDomain), log: logger, metrics, streams: new Map() };
  const resolver = new Resolver(registry);
  const server = new Server();
  server.addService(RegistryServiceService, registryHandlers(registry, plumbing, metrics, new EnvelopeOpener(trustDomain, new MemoryNonceCache({ clock: timers.clock }), timers.clock)));
  const invoker = new ServerInvoker(resolver, undefined, trustDomain, timers.clock, logger);
  server.addService(OrchestratorServiceService, orchestratorHandlers(hub, resolver, plumbing, metrics, lifecycleHandlers(lifecycleFor(), invoker, plumbing, () => timers.clock.nowMs())));
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return {
    serverId,
    hub,
    server,
    address: `127.0.0.1:${port}`,
    directory,
    events,
    kill: () => {
      log.kill();
      leases.kill();
    },
  };
}

/** A sidecar that does what it is told: registers the instance a start names, deregisters a stopped one, answers every command. */
async function connectSidecar(sidecarId: string, replica: Replica, capacity: number): Promise<TestSidecar> {
  const commands = new EventLog<Command>();
  const handles = new Map<string, AgentHandle>();
  const client: MeshClient = new MeshClient({
    address: replica.address,
    sidecarId,
    host: sidecarId,
    capacity,
    onCommand: (response) => {
      if (response.msg?.$case !== "command") return;
      const command = response.msg.value;
      void carryOut(command).then(
        () => {
          client.sendCommandResult({ commandId: command.commandId, ok: true, message: "", instanceId: command.action?.value.instanceId ?? "" });
          commands.push(command);
        },
        (error: unknown) => client.sendCommandResult({ commandId: command.commandId, ok: false, message: String(error), instanceId: "" }),
      );
    },
  });
  const carryOut = async (command: Command): Promise<void> => {
    const action = command.action;
    if (action?.$case === "start") {
      const start = action.value;
      const handle = await client.register(start.manifest ?? manifest(), { instanceId: start.instanceId, deployment: start.deployment });
      handles.set(handle.instanceId, handle);
    } else if (action?.$case === "stop") {
      const handle = handles.get(action.value.instanceId);
      if (handle) await client.deregister(handle, "stopped");
      handles.delete(action.value.instanceId);
    }
  };
  await client.waitConnected();
  const sidecar = { sidecarId, client, commands, handles };
  sidecars.push(sidecar);
  return sidecar;
}

function deployment(replicasWanted: number): Deployment {
  return {
    name: "word-stats",
    manifest: manifest({ name: "word-stats", version: "1.0.0" }),
    process: { command: "node", args: ["examples/agents/word-stats.mjs"], env: {}, cwd: "", image: "" },
    replicas: replicasWanted,
    restartPolicy: undefined,
    strategy: undefined,
    minReady: 0,
    generation: 0,
    status: undefined,
    createdAtMs: 0,
    updatedAtMs: 0,
  };
}

function readyInstances(): string[] {
  return [...registry.all()]
    .filter((instance) => instance.deployment === "word-stats" && instance.state === HealthState.HEALTH_STATE_READY)
    .map((instance) => instance.instanceId)
    .sort();
}

function sidecarIdsSeenBy(replica: Replica): string[] {
  return replica.directory
    .sessions()
    .map((session) => `${session.sidecarId}@${session.holder}`)
    .sort();
}

/** Steps the fake clock one renewal interval at a time, letting each tick's store calls finish. */
async function advance(totalMs: number): Promise<void> {
  for (let elapsedMs = 0; elapsedMs < totalMs; elapsedMs += renewIntervalMs) {
    timers.advance(renewIntervalMs);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

const storeKinds = ["one memory change log", "SQLite, one handle per replica", "SQLite + Redis, one handle and one connection per replica"] as const;
type StoreKind = (typeof storeKinds)[number];

async function openHandles(kind: StoreKind): Promise<ChangeLog[]> {
  if (kind === "one memory change log") {
    const shared = new MemoryChangeLog();
    return [shared, shared];
  }
  const path = join(tempDir(), "state.db");
  return [await SqliteChangeLog.open({ path }), await SqliteChangeLog.open({ path })];
}

async function openCoordinations(kind: StoreKind): Promise<Coordination[]> {
  if (kind !== "SQLite + Redis, one handle and one connection per replica") {
    const shared = new InProcessCoordination(timers.clock);
    return [shared, shared];
  }
  redis ??= await startRedis();
  // Lease expiry follows the stepping clock here too: the adapter takes time from it.
  const keyPrefix = redis.keyPrefix();
  return [await RedisCoordination.open({ url: redis.url, clock: timers.clock, keyPrefix }), await RedisCoordination.open({ url: redis.url, clock: timers.clock, keyPrefix })];
}

async function setUp(kind: StoreKind): Promise<void> {
  timers = new SteppingTimers();
  coordinations = await openCoordinations(kind);
  handles = await openHandles(kind);
  changeLog = handles[0] as ChangeLog;
  // Commits on one handle wake the other replica's followers.
  const relayed = new Map<ChangeLog, Coordination>(handles.map((handle, index) => [handle, coordinations[index] as Coordination]));
  stopRelays = [...relayed].map(([handle, coordination]) => relayCommits(handle, coordination.wakeUps));
  fenceToken = 1;
  sidecars = [];
  // One Registry object for both hubs: what the registry projection of the change log
  // (ADR 0004, built on another branch) will make every replica see. This test is
  // about reaching sidecars across replicas, not about sharing registrations.
  registry = new Registry(new MemoryInstanceStore(), new MemoryChangeFeed(), timers.clock, logger, {
    onRegistered: (instance) => lifecycle.onStateChange(instance),
    onStateChange: ({ instance }) => lifecycle.onStateChange(instance),
    onRemoved: (instance) => lifecycle.onRemoved(instance.instanceId),
  });
  const leaderLifecycle = () => lifecycle;
  const a = await startReplica("replica-a", handles[0] as ChangeLog, coordinations[0] as Coordination, leaderLifecycle);
  const b = await startReplica("replica-b", handles[1] as ChangeLog, coordinations[1] as Coordination, leaderLifecycle);
  replicas = [a, b];
  lifecycle = new Lifecycle({
    registry,
    sidecars: a.directory,
    store: new ChangeLogDeploymentStore(changeLog, { fence: () => ({ name: "agentmesh-control-plane", token: fenceToken }) }),
    clock: timers.clock,
    log: logger,
    audit: { append: async () => undefined },
    signer: undefined,
    // Passes run on events (Hello, registrations, health changes), not on a timer.
    reconcileIntervalMs: 3_600_000,
    adoptGraceMs: 0,
    commandResultSlackMs: 5_000,
  });
  await lifecycle.start();
}

async function tearDown(): Promise<void> {
  lifecycle.stop();
  for (const sidecar of sidecars) sidecar.client.close();
  for (const replica of replicas) {
    replica.hub.shutdown("test over", 0);
    replica.server.forceShutdown();
    await replica.directory.close();
  }
  await lifecycle.settle();
  for (const stop of stopRelays) stop();
  for (const handle of new Set(handles)) await handle.close();
  for (const coordination of new Set(coordinations)) await coordination.close();
}

afterAll(async () => {
  await redis?.destroy();
});

describe.each(storeKinds)("the reconciler reaches sidecars held by other replicas (%s)", (kind) => {
  beforeEach(() => setUp(kind));
  afterEach(tearDown);

  it("places over both replicas, routes commands and results through the log, restarts a remote crash, and stops placing on a dead replica's sidecars", async () => {
    const [a, b] = replicas as [Replica, Replica];
    const s1 = await connectSidecar("sidecar-1", a, 1);
    const s2 = await connectSidecar("sidecar-2", b, 2);
    const s3 = await connectSidecar("sidecar-3", b, 1);
    // The leader sees b's sidecars through the log, with b as their holder.
    await eventually(() => sidecarIdsSeenBy(a)).toEqual(["sidecar-1@replica-a", "sidecar-2@replica-b", "sidecar-3@replica-b"]);

    await lifecycle.apply(deployment(3), admin, "test");
    // Spread by host: one on each sidecar, two of them on the other replica's streams.
    const firstStarts = await Promise.all([s1, s2, s3].map((sidecar) => sidecar.commands.next((command) => command.action?.$case === "start")));
    expect(firstStarts).toHaveLength(3);
    await eventually(readyInstances).toHaveLength(3);
    // Every command key was taken and deleted by its holder; every result read and deleted by the leader.
    await eventually(() => [a.events.get("command_forwarded"), b.events.get("command_delivered"), b.events.get("result_returned")]).toEqual([2, 2, 2]);
    await eventually(async () => (await changeLog.range("/orchestrator/command")).items.length).toBe(0);

    // Announced on b's stream, claimed in b's record: the leader knows who vouches for each remote instance.
    const onS2 = [...s2.handles.keys()][0] as string;
    const onS3 = [...s3.handles.keys()][0] as string;
    await eventually(() => [onS2, onS3].map((instanceId) => `${a.directory.sessionFor(instanceId)?.sidecarId}@${a.directory.sessionFor(instanceId)?.holder}`)).toEqual([
      "sidecar-2@replica-b",
      "sidecar-3@replica-b",
    ]);

    // A lifecycle RPC on a remote instance waits for the sidecar's answer, which comes back through the log.
    await lifecycle.command("restart", onS2, 0, admin, "test-restart");
    expect((await s2.commands.next((command) => command.action?.$case === "restart")).action?.value.instanceId).toBe(onS2);

    // The instance on the remote sidecar crashes for good (FAILED): it is stopped there and replaced there
    // (sidecar-2 is the only one with room).
    const crashed = s2.handles.get(onS2) as AgentHandle;
    s2.client.forget(crashed);
    s2.client.reportState(crashed, HealthState.HEALTH_STATE_FAILED, "crash loop");
    expect((await s2.commands.next((command) => command.action?.$case === "stop")).action?.value.instanceId).toBe(onS2);
    const replacement = await s2.commands.next((command) => command.action?.$case === "start");
    expect(replacement.action?.value.instanceId).not.toBe(onS2);
    await eventually(readyInstances).toHaveLength(3);
    expect(readyInstances()).not.toContain(onS2);

    // Replica b dies: its process can no longer write or renew (its keys stay), its streams break.
    b.kill();
    b.server.forceShutdown();
    s2.client.close();
    s3.client.close();
    const s4 = await connectSidecar("sidecar-4", a, 2);
    await eventually(() => sidecarIdsSeenBy(a)).toContain("sidecar-4@replica-a");
    expect(sidecarIdsSeenBy(a)).toContain("sidecar-2@replica-b");
    // Within the lease, b's sidecars still count; past it, the leader's replica claims the expired leases and removes them.
    await advance(leaseTtlMs + renewIntervalMs);
    await eventually(() => sidecarIdsSeenBy(a)).toEqual(["sidecar-1@replica-a", "sidecar-4@replica-a"]);
    expect(a.events.get("session_expired")).toBe(2);
    expect((await changeLog.range(stateKeys.sidecarSessions)).items.map((item) => item.key)).toEqual([
      stateKeys.sidecarSession("sidecar-1"),
      stateKeys.sidecarSession("sidecar-4"),
    ]);

    // b's hub object (still in this process) marked its instances UNHEALTHY when their streams broke, as the
    // shared registry's liveness will for a dead replica; with their sidecars gone from the directory they are
    // lost, and replaced on the surviving replica's sidecar-4.
    await s4.commands.next((command) => command.action?.$case === "start");
    await s4.commands.next((command) => command.action?.$case === "start");
    await eventually(readyInstances).toHaveLength(3);
    expect([...registry.all()].map((instance) => instance.host).sort()).toEqual(["sidecar-1", "sidecar-4", "sidecar-4"]);

    // Three more wanted: replica a's sidecars are full, and sidecar-2 (two free slots when it left) is not placed on.
    await lifecycle.scale("word-stats", 6, admin, "test-scale");
    await eventually(() => lifecycle.rollout("word-stats").waitingForCapacity).toBe(3);
    await lifecycle.settle();
    expect((await changeLog.range(stateKeys.sidecarCommands("replica-b"))).items).toEqual([]);
  });

  it("a sidecar that moves to another replica is published by the new holder, and the old holder's late close does not remove it", async () => {
    const [a, b] = replicas as [Replica, Replica];
    const before = await connectSidecar("sidecar-2", b, 1);
    await eventually(() => sidecarIdsSeenBy(a)).toEqual(["sidecar-2@replica-b"]);
    // Make-before-break, as a sidecar failing over does: the new stream is up before the old one ends.
    await connectSidecar("sidecar-2", a, 1);
    await eventually(() => [sidecarIdsSeenBy(a), sidecarIdsSeenBy(b)]).toEqual([["sidecar-2@replica-a"], ["sidecar-2@replica-a", "sidecar-2@replica-b"]]);
    const takenOverAt = await changeLog.currentRevision();
    before.client.close();
    await eventually(() => b.hub.openStreams).toBe(0);
    await eventually(() => sidecarIdsSeenBy(b)).toEqual(["sidecar-2@replica-a"]);
    await b.directory.close();
    // Never deleted after replica a wrote it (a deletion would be healed by a, but sidecars would flicker out of placement).
    const history = await changeLog.changesSince(takenOverAt);
    expect(history.kind === "changes" && history.changes.filter((change) => change.key === stateKeys.sidecarSession("sidecar-2") && !change.value)).toEqual([]);
    const { items } = await changeLog.range(stateKeys.sidecarSessions);
    expect(items.map((item) => (JSON.parse(new TextDecoder().decode(item.value)) as { holder: string }).holder)).toEqual(["replica-a"]);
    expect(sidecarIdsSeenBy(a)).toEqual(["sidecar-2@replica-a"]);
    // The lease moved with it: replica a renews it, so nobody sweeps the session.
    await advance(leaseTtlMs + renewIntervalMs);
    expect((await changeLog.range(stateKeys.sidecarSessions)).items).toHaveLength(1);
    expect(a.events.get("session_expired") ?? 0).toBe(0);
  });

  it("a start lost with its holder replica does not wedge the deployment: placed again once the lease lapses", async () => {
    const [a, b] = replicas as [Replica, Replica];
    const s1 = await connectSidecar("sidecar-1", a, 2);
    const s2 = await connectSidecar("sidecar-2", b, 2);
    await eventually(() => sidecarIdsSeenBy(a)).toEqual(["sidecar-1@replica-a", "sidecar-2@replica-b"]);
    // Replica b dies before the deployment is applied: within the lease its sidecar still looks placeable.
    b.kill();
    b.server.forceShutdown();
    s2.client.close();
    await lifecycle.apply(deployment(2), admin, "test");
    await s1.commands.next((command) => command.action?.$case === "start");
    await eventually(async () => (await changeLog.range(stateKeys.sidecarCommands("replica-b"))).items.length).toBe(1);
    // Past the lease: the session and its undelivered command are swept, the pending start is dropped and placed again.
    await advance(leaseTtlMs + renewIntervalMs);
    await s1.commands.next((command) => command.action?.$case === "start");
    await eventually(readyInstances).toHaveLength(2);
    expect((await changeLog.range(stateKeys.sidecarCommands("replica-b"))).items).toEqual([]);
  });

  it("a deposed leader's commands for remote sidecars are refused by the store, and the RPC says the sidecar is unreachable", async () => {
    const [a, b] = replicas as [Replica, Replica];
    await connectSidecar("sidecar-1", a, 1);
    const remote = await connectSidecar("sidecar-2", b, 1);
    await lifecycle.apply(deployment(2), admin, "test");
    await eventually(readyInstances).toHaveLength(2);
    const onRemote = [...remote.handles.keys()][0] as string;

    // Another replica won the election and claimed a higher token.
    expect((await changeLog.txn([], { fence: { name: "agentmesh-control-plane", token: 2 } })).ok).toBe(true);
    await expect(lifecycle.command("stop", onRemote, 1, admin, "test-stop")).rejects.toMatchObject({ kind: "unavailable", message: "the instance's sidecar is not connected" });
    expect((await changeLog.range(stateKeys.sidecarCommands("replica-b"))).items).toEqual([]);
    expect(a.events.get("command_refused")).toBe(1);
  });

  it("a command that reaches a holder without the sidecar's stream is answered undelivered, and the key is gone", async () => {
    const [a] = replicas as [Replica, Replica];
    const undelivered = new EventLog<string>();
    const unwatch = a.directory.watch({ onCommandUndelivered: (sidecarId, commandId) => undelivered.push(`${sidecarId}/${commandId}`) });
    // As the leader writes it for a session replica-b held a moment ago (the sidecar left since).
    const record = { sidecarId: "sidecar-gone", sessionId: "replica-b.0", leader: "replica-a", issuedAtMs: timers.clock.nowMs(), command: "" };
    record.command = Buffer.from(CommandMessage.encode({ commandId: "c1", action: { $case: "stop", value: { instanceId: "i1", graceMs: 1 } }, envelope: undefined }).finish()).toString("base64");
    const written = await changeLog.txn([{ type: "put", key: stateKeys.sidecarCommand("replica-b", "c1"), value: new TextEncoder().encode(JSON.stringify(record)) }]);
    expect(written.ok).toBe(true);
    expect(await undelivered.next(() => true)).toBe("sidecar-gone/c1");
    expect(replicas[1]?.events.get("command_undelivered")).toBe(1);
    unwatch();
    await eventually(async () => (await changeLog.range("/orchestrator/command")).items.length).toBe(0);
  });
});
