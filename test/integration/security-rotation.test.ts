// Rotation without restarts: with 3-second certificates on both sides, a client
// keeps registering and discovering and its Connect stream stays up across several
// renewals of its own certificate and of the server's, with no failed call.
import { afterEach, describe, expect, it } from "vitest";
import { MeshClient, type MeshClientEvent } from "../../sdk/ts/src/client/mesh-client.js";
import { MeshIdentity } from "../../sdk/ts/src/client/mesh-identity.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";
import { type SecureMesh, spiffe, startSecureMesh } from "../helpers/mesh-pki.js";

let mesh: SecureMesh | undefined;
const closers: Array<() => void> = [];

afterEach(async () => {
  for (const close of closers.splice(0)) close();
  await mesh?.close();
  mesh = undefined;
});

describe("certificate rotation", () => {
  it("calls and the Connect stream continue across several renewals of client and server certificates", { timeout: 30_000 }, async () => {
    const sink = logSink("info");
    mesh = await startSecureMesh({ certTtlMs: 3000, reconnectGraceMs: 200 }, sink.log);
    const secure = mesh;
    const { token } = await secure.joinToken({ host: "host-r", agents: ["sql-agent"] });
    const renewErrors: unknown[] = [];
    const identity = await MeshIdentity.join({
      address: secure.server.address,
      trustBundlePem: secure.trustBundle.join(""),
      spiffeId: spiffe(secure.trustDomain, "sidecar", "host-r"),
      joinToken: token,
      ttlSeconds: 3,
      onRenewError: (error) => renewErrors.push(error),
    });
    closers.push(() => identity.close());
    const events: MeshClientEvent[] = [];
    const client = new MeshClient({
      address: secure.server.address,
      sidecarId: "host-r",
      credentials: identity.channelCredentials(),
      signer: identity,
      onEvent: (event) => events.push(event),
    });
    closers.push(() => client.close());
    const handle = await client.register(manifest({ healthPolicy: { heartbeatIntervalMs: 100, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 } }));
    await client.waitConnected();
    await expect.poll(() => secure.server.registry.get(handle.instanceId)?.state).toBe(HealthState.HEALTH_STATE_READY);

    const clientSerials = new Set<string>();
    const serverSerials = new Set<string>();
    const failures: unknown[] = [];
    const states = new Set<HealthState>();
    let calls = 0;
    const observe = () => {
      clientSerials.add(identity.source.current?.serial ?? "");
      serverSerials.add(secure.server.security.tls?.source.current?.serial ?? "");
      states.add(secure.server.registry.get(handle.instanceId)?.state ?? HealthState.HEALTH_STATE_UNSPECIFIED);
    };
    const work = async (round: number) => {
      calls += 1;
      if (round % 10 === 0) await client.register(manifest({ name: "sql-agent" }), { instanceId: `extra-${round}` });
      else await client.discover("sql.query");
    };
    // Until both sides have renewed at least three times (about 5 s at half-life of 3 s).
    for (let round = 0; (clientSerials.size < 4 || serverSerials.size < 4) && round < 400; round += 1) {
      observe();
      await work(round).catch((error: unknown) => failures.push(error));
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    observe();

    expect(failures).toEqual([]);
    expect(renewErrors).toEqual([]);
    expect(clientSerials.size).toBeGreaterThanOrEqual(4);
    expect(serverSerials.size).toBeGreaterThanOrEqual(4);
    expect(calls).toBeGreaterThan(20);
    // One welcome, never a drop: the stream opened before the first renewal is still the one in use.
    expect(events.filter((event) => event.type !== "connected")).toEqual([]);
    expect(events.filter((event) => event.type === "connected")).toHaveLength(1);
    expect([...states]).toEqual([HealthState.HEALTH_STATE_READY]);
    expect(secure.server.hub.openStreams).toBe(1);
    // Renewals happened at half-life, not in a loop.
    const serverRenewals = sink.lines.filter((line) => line.msg === "server certificate renewed").length;
    expect(serverRenewals).toBeGreaterThanOrEqual(3);
    expect(serverRenewals).toBeLessThan(12);
  });
});
