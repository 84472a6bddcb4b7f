import { Server, ServerCredentials } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { type Serving, serve } from "../../sdk/ts/src/agent/serve.js";
import { SidecarServiceService } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";
import { AttachHub } from "../../sdk/ts/src/core/dataplane/index.js";

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
