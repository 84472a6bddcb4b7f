// A MeshClient given several control-plane addresses (what `agentmesh sidecar
// --server a,b` passes it), over real gRPC: an address nobody listens on is passed
// over at once, and when the server it uses goes away the client moves to the next,
// says Hello there and re-registers its instance under the same id. The replicas here
// are two independent in-process servers that both listen (as active/active replicas
// will); test/e2e/replica-failover.test.ts does the same with real processes.
import { createServer } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { MeshClient, type MeshClientEvent } from "../../sdk/ts/src/client/mesh-client.js";
import type { WatchResponse } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type RunningServer, startServer } from "../../services/server/server.js";
import { EventLog } from "../helpers/events.js";
import { logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";
import { tempDir } from "../helpers/processes.js";

const servers: RunningServer[] = [];
const clients: MeshClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const server of servers.splice(0)) await server.close();
});

async function devServer(): Promise<RunningServer> {
  const server = await startServer({ port: 0, httpPort: 0, insecureDev: true, dataDir: tempDir() }, { log: logSink("silent").log });
  servers.push(server);
  return server;
}

/** A port nobody listens on: bound, then released. */
async function closedAddress(): Promise<string> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const address = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return `127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
}

describe("MeshClient with several control-plane addresses", () => {
  it("skips an address nobody listens on, and moves to the next server when its own goes away, re-registering the same instance there", async () => {
    const [first, second] = [await devServer(), await devServer()];
    const events = new EventLog<MeshClientEvent>();
    const client = new MeshClient({ address: [await closedAddress(), first.address, await closedAddress(), second.address], sidecarId: "host-a", onEvent: (event) => events.push(event) });
    clients.push(client);
    await client.waitConnected();
    await events.next((event) => event.type === "connected");
    expect(client.address).toBe(first.address);
    const handle = await client.register(manifest({ name: "mover" }));
    expect([...first.registry.all()].map((instance) => instance.instanceId)).toEqual([handle.instanceId]);

    const seen = new EventLog<WatchResponse>();
    const watcher = new MeshClient({ address: second.address, sidecarId: "watcher" });
    clients.push(watcher);
    watcher.watch((event) => seen.push(event));
    const readyOnSecond = seen.next((event) => event.instance?.instanceId === handle.instanceId && event.instance.state === HealthState.HEALTH_STATE_READY);
    await first.close();
    servers.splice(servers.indexOf(first), 1);
    // Past the next address (nobody listens there either) to the second server, in the same round.
    const reconnected = await events.next((event) => event.type === "connected");
    expect(reconnected).toEqual({ type: "connected", unknownInstanceIds: [handle.instanceId] });
    expect(client.address).toBe(second.address);
    await readyOnSecond;
    expect([...second.registry.all()].map((instance) => instance.instanceId)).toEqual([handle.instanceId]);
  });
});
