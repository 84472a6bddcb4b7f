// Data-plane observability with real processes: each sidecar serves /metrics, /healthz
// and /readyz on its --http-port; calls are counted by direction, capability, version
// and code, timed as rpc.{server,client}.call.duration, and tunnels are counted by state.
import { afterEach, describe, expect, it } from "vitest";
import { MeshCluster, echoDeploymentYaml } from "../helpers/mesh-cluster.js";

let cluster: MeshCluster | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

async function scrape(httpAddress: string): Promise<Map<string, number>> {
  const response = await fetch(`http://${httpAddress}/metrics`);
  expect(response.status).toBe(200);
  const samples = new Map<string, number>();
  for (const line of (await response.text()).split("\n")) {
    if (line.startsWith("#") || line === "") continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

describe("sidecar metrics and probes (real processes)", () => {
  it("counts and times calls on both sidecars, and tells ready from live", async () => {
    cluster = await MeshCluster.start();
    const serving = await cluster.startSidecar({ host: "host-a", manifests: [cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 }))] });
    const calling = await cluster.startSidecar({ host: "host-b" });
    await cluster.waitForReady("echo", 1);
    expect(calling.httpAddress).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(calling.httpAddress).not.toBe("127.0.0.1:7432");

    const calls = 5;
    for (let index = 0; index < calls; index += 1) await calling.caller.invoke("test.echo", "{}", { idempotent: true, timeoutMs: 5000 });
    await expect(calling.caller.invoke("test.nothing", "{}", { timeoutMs: 2000 })).rejects.toMatchObject({ code: 14 });

    const client = await scrape(calling.httpAddress);
    expect(client.get('agentmesh_sidecar_calls_total{direction="client",capability="test.echo",version="1.0.0",code="OK"}')).toBe(calls);
    expect(client.get('agentmesh_sidecar_calls_total{direction="client",capability="test.nothing",version="",code="UNAVAILABLE"}')).toBe(1);
    expect(client.get('agentmesh_sidecar_rpc_client_call_duration_seconds_count{capability="test.echo",version="1.0.0",code="OK"}')).toBe(calls);
    expect(client.get('agentmesh_sidecar_rpc_client_call_duration_seconds_bucket{le="10",capability="test.echo",version="1.0.0",code="OK"}')).toBe(calls);
    expect(client.get('agentmesh_sidecar_rpc_client_call_duration_seconds_sum{capability="test.echo",version="1.0.0",code="OK"}')).toBeGreaterThan(0);
    expect(client.get('agentmesh_sidecar_calls_in_flight{direction="client"}')).toBe(0);
    expect(client.get('agentmesh_sidecar_tunnels{state="ready"}')).toBe(1);
    expect(client.get("agentmesh_sidecar_tunnel_reconnects_total")).toBe(0);
    expect(client.get("agentmesh_sidecar_window_full_rejections_total")).toBe(0);
    expect(client.get("agentmesh_sidecar_process_resident_memory_bytes")).toBeGreaterThan(0);

    const server = await scrape(serving.httpAddress);
    expect(server.get('agentmesh_sidecar_calls_total{direction="server",capability="test.echo",version="1.0.0",code="OK"}')).toBe(calls);
    expect(server.get('agentmesh_sidecar_rpc_server_call_duration_seconds_count{capability="test.echo",version="1.0.0",code="OK"}')).toBe(calls);
    expect(server.get('agentmesh_sidecar_calls_in_flight{direction="server"}')).toBe(0);
    expect(server.has('agentmesh_sidecar_calls_total{direction="client",capability="test.echo",version="1.0.0",code="OK"}')).toBe(false);

    expect((await fetch(`http://${calling.httpAddress}/healthz`)).status).toBe(200);
    expect((await fetch(`http://${calling.httpAddress}/readyz`)).status).toBe(200);
    expect((await fetch(`http://${calling.httpAddress}/nothing`)).status).toBe(404);
  }, 60_000);
});
