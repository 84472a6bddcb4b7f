// The SDK's control-plane client across connection ageing and certificate renewal:
// a server that retires every connection after about a second, 4-second
// certificates on both sides, and a client that keeps its Connect stream and a
// Watch open for longer than grpc-js' 10-second keepalive (whose first ping on a
// retired connection used to cut every stream on it). Streams move to new
// connections make-before-break: no disconnect, no state change, every Watch
// event exactly once, no failed call.
import { Metadata, credentials as grpcCredentials } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { MeshClient, type MeshClientEvent } from "../../sdk/ts/src/client/mesh-client.js";
import { type ConnectRequest, type ConnectResponse, OrchestratorServiceClient } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type RunningServer, startServer } from "../../services/server/server.js";
import { EventLog } from "../helpers/events.js";
import { tempDir } from "../helpers/processes.js";
import { MeshIdentity } from "../../sdk/ts/src/client/mesh-identity.js";
import {
  RegisterRequest,
  type RegisterResponse,
  RegistryServiceClient,
  WatchResponse_EventType,
  type WatchResponse,
} from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";
import { type SecureMesh, call, spiffe, startSecureMesh } from "../helpers/mesh-pki.js";

let mesh: SecureMesh | undefined;
let devServer: RunningServer | undefined;
const closers: Array<() => void> = [];

afterEach(async () => {
  for (const close of closers.splice(0)) close();
  await mesh?.close();
  mesh = undefined;
  await devServer?.close();
  devServer = undefined;
});

/** A raw Connect stream of sidecar `host-r`, as a sidecar moving to a new connection opens it. */
function connectStream(server: RunningServer, instanceIds: string[]) {
  const client = new OrchestratorServiceClient(server.address, grpcCredentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
  const call = client.connect(new Metadata());
  const responses = new EventLog<ConnectResponse>();
  call.on("data", (response: ConnectResponse) => responses.push(response));
  call.on("error", () => undefined);
  closers.push(() => {
    call.cancel();
    client.close();
  });
  let sequence = 0;
  const send = (request: ConnectRequest): boolean => call.write(request);
  send({ msg: { $case: "hello", value: { sidecarId: "host-r", host: "host-r", instanceIds, inboundEndpoint: "", capacity: 0, envelope: undefined } } });
  return {
    responses,
    welcomed: () => responses.next((response) => response.msg?.$case === "welcome"),
    beat: (instanceId: string, announce = false) => {
      sequence += 1;
      send({ msg: { $case: "heartbeat", value: { sequence, instances: [{ instanceId, load: undefined, reportedState: HealthState.HEALTH_STATE_READY, announce }] } } });
    },
    end: () => call.end(),
  };
}

describe("control-plane streams across connection ageing and renewal", () => {
  it("Connect, Watch and unary calls carry on for longer than a keepalive period with no visible effect", { timeout: 60_000 }, async () => {
    const sink = logSink("info");
    mesh = await startSecureMesh({ certTtlMs: 4000, maxConnectionAgeMs: 1000, reconnectGraceMs: 200 }, sink.log);
    const secure = mesh;
    const { token } = await secure.joinToken({ host: "host-r", agents: ["*"] });
    const identity = await MeshIdentity.join({
      address: secure.server.address,
      trustBundlePem: secure.trustBundle.join(""),
      spiffeId: spiffe(secure.trustDomain, "sidecar", "host-r"),
      joinToken: token,
      ttlSeconds: 4,
    });
    closers.push(() => identity.close());
    const events: MeshClientEvent[] = [];
    const client = new MeshClient({
      address: secure.server.address,
      sidecarId: "host-r",
      credentials: identity.channelCredentials(),
      signer: identity,
      renewals: identity.source,
      onEvent: (event) => events.push(event),
    });
    closers.push(() => client.close());
    const handle = await client.register(manifest({ name: "steady", healthPolicy: { heartbeatIntervalMs: 1000, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 } }));
    await client.waitConnected();
    await expect.poll(() => secure.server.registry.get(handle.instanceId)?.state).toBe(HealthState.HEALTH_STATE_READY);

    // Every state change of the steady instance, straight from the registry.
    const transitions: HealthState[] = [];
    const subscription = secure.server.registry.watch(secure.server.registry.currentRevision, "", (event) => {
      if (event.instance.instanceId === handle.instanceId) transitions.push(event.instance.state);
    });
    closers.push(() => subscription.close());

    const watched: WatchResponse[] = [];
    const watchProblems: unknown[] = [];
    const stopWatch = client.watch((event) => watched.push(event), { onError: (error) => watchProblems.push(error), onEnd: () => watchProblems.push("ended") });
    closers.push(stopWatch);
    await expect.poll(() => watched.some((event) => event.type === WatchResponse_EventType.EVENT_TYPE_SYNCED)).toBe(true);

    const registered: string[] = [];
    const failures: unknown[] = [];
    const serials = new Set<string>();
    const startedAtMs = Date.now();
    for (let round = 0; Date.now() - startedAtMs < 12_000 || client.rotations < 6 || serials.size < 4; round += 1) {
      serials.add(identity.source.current?.serial ?? "");
      try {
        if (round % 4 === 0) registered.push((await client.register(manifest({ name: `extra-${round}` }))).instanceId);
        else await client.discover("sql.query");
      } catch (error) {
        failures.push(error);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await expect.poll(() => registered.every((instanceId) => watched.some((event) => event.instance?.instanceId === instanceId))).toBe(true);

    expect(failures).toEqual([]);
    expect(events.filter((event) => event.type !== "connected")).toEqual([]);
    expect(events).toHaveLength(1);
    expect(watchProblems).toEqual([]);
    expect(transitions).toEqual([]);
    expect(secure.server.registry.get(handle.instanceId)?.state).toBe(HealthState.HEALTH_STATE_READY);
    // Each registration seen once, in revision order, none missed.
    const live = watched.slice(watched.findIndex((event) => event.type === WatchResponse_EventType.EVENT_TYPE_SYNCED) + 1);
    const revisions = live.map((event) => event.revision);
    expect(revisions).toEqual([...new Set(revisions)].sort((left, right) => left - right));
    for (const instanceId of registered) {
      expect(live.filter((event) => event.instance?.instanceId === instanceId && event.type === WatchResponse_EventType.EVENT_TYPE_ADDED)).toHaveLength(1);
    }
    expect(client.rotations).toBeGreaterThanOrEqual(6);
    // Only ever one stream per sidecar once a move is done.
    await expect.poll(() => secure.server.hub.openStreams).toBe(1);
    expect(sink.lines.filter((line) => line.msg === "agent state changed" && line.instanceId === handle.instanceId && line.from === "READY")).toEqual([]);
  });

  it("a second Connect stream of the same sidecar takes its instances over; the first one's messages still count and its end changes no state", async () => {
    // No reconnect grace at all: an instance left with the ended stream would be UNHEALTHY at once.
    devServer = await startServer({ port: 0, httpPort: 0, reconnectGraceMs: 0, insecureDev: true, dataDir: tempDir() }, { log: logSink("silent").log });
    const server = devServer;
    const registry = new RegistryServiceClient(server.address, grpcCredentials.createInsecure());
    closers.push(() => registry.close());
    const slow = { heartbeatIntervalMs: 60_000, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 };
    const register = (name: string) =>
      call<RegisterResponse>((metadata, options, callback) =>
        registry.register(RegisterRequest.fromPartial({ manifest: manifest({ name, healthPolicy: slow }), host: "host-r" }), metadata, options, callback),
      ).then((response) => response.instance?.instanceId as string);
    const first = await register("first");

    const old = connectStream(server, [first]);
    await old.welcomed();
    old.beat(first);
    await expect.poll(() => server.registry.get(first)?.state).toBe(HealthState.HEALTH_STATE_READY);
    // Instances leaving READY: registering "late" below adds it as STARTING, that is not a change of state.
    const transitions: HealthState[] = [];
    const subscription = server.registry.watch(server.registry.currentRevision, "", (event) => {
      if (event.previousState === HealthState.HEALTH_STATE_READY) transitions.push(event.instance.state);
    });
    closers.push(() => subscription.close());

    const next = connectStream(server, [first]);
    await next.welcomed();
    // Still in flight on the old stream after the new Hello took over: counted, not refused.
    old.beat(first);
    // Registered while the move was under way, announced on the old stream only.
    const late = await register("late");
    old.beat(late, true);
    await expect.poll(() => server.registry.get(late)?.state).toBe(HealthState.HEALTH_STATE_READY);
    old.end();
    await expect.poll(() => server.hub.openStreams).toBe(1);
    next.beat(late);
    next.beat(first);

    expect(server.hub.sessionFor(late)).toBe(server.hub.sessionFor(first));
    expect(old.responses.items.filter((response) => response.msg?.$case === "error")).toEqual([]);
    expect(transitions).toEqual([]);
    expect([server.registry.get(first)?.state, server.registry.get(late)?.state]).toEqual([HealthState.HEALTH_STATE_READY, HealthState.HEALTH_STATE_READY]);
  });
});
