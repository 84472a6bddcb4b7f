import { Server, ServerCredentials, status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { type Serving, serve } from "../../sdk/ts/src/agent/serve.js";
import { SidecarServiceService } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { MeshCaller } from "../../sdk/ts/src/agent/invoke.js";
import { AttachHub, TunnelServer } from "../../sdk/ts/src/core/dataplane/index.js";

let server: Server | undefined;
let serving: Serving | undefined;
let hub: AttachHub | undefined;

afterEach(() => {
  serving?.close();
  hub?.close();
  server?.forceShutdown();
  serving = undefined;
  hub = undefined;
  server = undefined;
});

async function startHub(): Promise<string> {
  hub = new AttachHub();
  server = new Server();
  server.addService(SidecarServiceService, { attach: hub.attach, invoke: () => {}, invokeStream: () => {}, discover: () => {} } as never);
  const port = await new Promise<number>((resolve, reject) =>
    (server as Server).bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  return `127.0.0.1:${port}`;
}

describe("SDK serve()", () => {
  it("answers invocations from its sidecar over the Attach stream", async () => {
    const address = await startHub();
    serving = serve({ sidecarAddress: address, instanceId: "agent-1", handlers: { "text.upper": (payload) => payload.toString().toUpperCase() }, orphanTimeoutMs: 0 });
    await serving.ready;
    const reply = await (hub as AttachHub).dispatch("agent-1", {
      callId: "c1",
      capability: "text.upper",
      version: "1.0.0",
      payload: Buffer.from("hello"),
      contentType: "",
      caller: "",
      deadlineMs: 0,
      metadata: {},
      traceparent: "",
    });
    expect(reply.payload.toString()).toBe("HELLO");
  });

  it("gives up as an orphan when its sidecar is gone", async () => {
    const address = await startHub();
    let orphaned = false;
    const gone = new Promise<void>((resolve) => {
      serving = serve({ sidecarAddress: address, instanceId: "agent-2", handlers: {}, orphanTimeoutMs: 300, onOrphaned: () => { orphaned = true; resolve(); } });
    });
    await (serving as Serving).ready;
    expect(orphaned).toBe(false);
    server?.forceShutdown();
    await gone;
    expect(orphaned).toBe(true);
  });
});

describe("SDK MeshCaller", () => {
  async function startLocalSidecar(port = 0): Promise<{ server: Server; port: number }> {
    const tunnels = new TunnelServer({
      handler: {
        verify: (open) => ({ callId: "", capability: open.request?.capability ?? "", version: "", payload: open.request?.payload ?? Buffer.alloc(0), contentType: "", caller: "", deadlineMs: 0, metadata: {}, traceparent: "" }),
        dispatch: async (invocation) => ({ payload: Buffer.from(`echo:${Buffer.from(invocation.payload).toString()}`), contentType: "", instanceId: "i-1", version: "1.0.0" }),
      },
    });
    const local = new Server();
    local.addService(SidecarServiceService, { call: (call: never) => tunnels.accept(call), attach: () => {}, invoke: () => {}, invokeStream: () => {}, discover: () => {} } as never);
    const bound = await new Promise<number>((resolve, reject) =>
      local.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (error, value) => (error ? reject(error) : resolve(value))),
    );
    return { server: local, port: bound };
  }

  it("waits for its sidecar's stream to come back instead of failing at once", async () => {
    const first = await startLocalSidecar();
    server = first.server;
    const caller = new MeshCaller(`127.0.0.1:${first.port}`);
    try {
      expect((await caller.invoke("test.echo", "one")).payload.toString()).toBe("echo:one");
      first.server.forceShutdown();
      await expect(caller.invoke("test.echo", "lost", { timeoutMs: 300 })).rejects.toMatchObject({ code: status.UNAVAILABLE });
      const second = await startLocalSidecar(first.port);
      server = second.server;
      const answer = await caller.invoke("test.echo", "two", { timeoutMs: 10_000 });
      expect(answer).toMatchObject({ instanceId: "i-1", version: "1.0.0" });
      expect(answer.payload.toString()).toBe("echo:two");
    } finally {
      caller.close();
    }
  });
});
