import { afterEach, describe, expect, it } from "vitest";
import { MeshClient } from "../../sdk/ts/src/client/mesh-client.js";
import { manifest } from "../helpers/manifests.js";
import { type ServerProcess, cliPath, run, startServerProcess, toolPath } from "../helpers/processes.js";

let server: ServerProcess | undefined;
const clients: MeshClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await server?.stop("SIGKILL");
  server = undefined;
});

const ctl = (...args: string[]) => run(process.execPath, [cliPath, "ctl", "--plaintext", "--server", (server as ServerProcess).address, ...args]);

describe("agentmesh server as a process", () => {
  it("is listed by grpcurl through reflection and reports SERVING to grpc-health-probe", async () => {
    server = await startServerProcess(["--insecure-dev"]);
    const listed = await run(toolPath("grpcurl"), ["-plaintext", server.address, "list"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout.split("\n")).toEqual(
      expect.arrayContaining(["agentmesh.v1.RegistryService", "agentmesh.v1.OrchestratorService", "grpc.health.v1.Health"]),
    );
    for (const service of ["", "agentmesh.v1.RegistryService", "agentmesh.v1.OrchestratorService"]) {
      const probe = await run(toolPath("grpc-health-probe"), ["-addr", server.address, ...(service ? ["-service", service] : [])]);
      expect(probe.stdout + probe.stderr).toContain("SERVING");
      expect(probe.code).toBe(0);
    }
  });

  it("answers grpcurl calls with maps in their messages, and bad input with a clear status", async () => {
    server = await startServerProcess(["--insecure-dev"]);
    const body = JSON.stringify({
      manifest: { name: "demo", version: "1.0.0", capabilities: [{ name: "text.stats", version: "1.2.0", attributes: { lang: "en" } }], labels: { env: "dev" } },
    });
    const registered = await run(toolPath("grpcurl"), ["-plaintext", "-d", body, server.address, "agentmesh.v1.RegistryService/Register"]);
    expect(registered.code).toBe(0);
    expect(JSON.parse(registered.stdout).instance.manifest.capabilities[0].attributes).toEqual({ lang: "en" });
    const invalid = await run(toolPath("grpcurl"), [
      "-plaintext",
      "-d",
      JSON.stringify({ capability: "text.stats", version_range: "^^1" }),
      server.address,
      "agentmesh.v1.RegistryService/Discover",
    ]);
    expect(invalid.code).not.toBe(0);
    expect(invalid.stderr).toContain("InvalidArgument");
    expect(invalid.stderr).toContain("version_range: not a valid semver range");
  });

  it("ctl lists, describes and discovers agents", async () => {
    server = await startServerProcess(["--insecure-dev"]);
    const client = new MeshClient({ address: server.address, sidecarId: "host-a" });
    clients.push(client);
    const handle = await client.register(manifest({ name: "sql-agent" }));
    await client.waitConnected();
    const agents = await ctl("agents");
    expect(agents.code).toBe(0);
    expect(agents.stdout).toMatch(/^NAME\s+VERSION\s+INSTANCE\s+STATE\s+CAPABILITIES\s+AGE/);
    expect(agents.stdout).toContain(handle.instanceId);
    expect(agents.stdout).toContain("sql.query@2.1.0");
    const described = await ctl("agent", handle.instanceId);
    expect(described.stdout).toContain("Agent:           sql-agent 1.0.0");
    const discovered = await ctl("discover", "sql.query", "^2", "-o", "json");
    expect(JSON.parse(discovered.stdout).map((instance: { instanceId: string }) => instance.instanceId)).toEqual([handle.instanceId]);
    const missing = await ctl("agent", "no-such-instance");
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe("error: instance not found (NOT_FOUND)");
  });

  it("exits 0 within 5 s of SIGTERM, telling its sidecars first", async () => {
    server = await startServerProcess(["--insecure-dev"]);
    const events: string[] = [];
    const client = new MeshClient({ address: server.address, sidecarId: "host-a", onEvent: (event) => events.push(event.type) });
    clients.push(client);
    await client.register(manifest());
    await client.waitConnected();
    const startedAt = Date.now();
    const code = await server.stop("SIGTERM");
    expect(code).toBe(0);
    expect(Date.now() - startedAt).toBeLessThan(5000);
    expect(events).toContain("shutdown");
  });

  it("refuses to serve plaintext on a non-loopback address", async () => {
    const result = await run(process.execPath, [cliPath, "server", "--insecure-dev", "--host", "0.0.0.0", "--port", "0", "--http-port", "0"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toBe("error: --insecure-dev serves plaintext and only binds 127.0.0.1; remove --host or the dev flag\n");
  });
});
