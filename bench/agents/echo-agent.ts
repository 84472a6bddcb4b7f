/**
 * The lifecycle bench's trivial agent: answers every call with its own payload.
 *
 * ECHO_TRANSPORT=attach (default): TypeScript SDK serve() over the sidecar's
 *   Attach stream, for the capabilities listed in ECHO_CAPABILITIES.
 * ECHO_TRANSPORT=unary: plain agentmesh.v1.AgentService and grpc.health.v1 on
 *   AGENTMESH_AGENT_ADDR, as an agent without the SDK serves them. The bench
 *   also runs it this way on its own, as the "client → agent directly" baseline.
 *
 * It prints nothing per call, so the sidecar's log forwarding stays out of the figures.
 */
import { Server, ServerCredentials, status } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { serve } from "../../sdk/ts/src/agent/serve.js";
import { AgentServiceService, type AgentServiceServer } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";

function serveUnary(address: string): void {
  const implementation: AgentServiceServer = {
    invoke: (call, callback) => {
      const invocation = call.request.invocation;
      callback(null, { payload: invocation?.payload ?? Buffer.alloc(0), contentType: invocation?.contentType ?? "" });
    },
    invokeStream: (call) => {
      call.emit("error", { code: status.UNIMPLEMENTED, details: "echo has no streaming form" });
    },
  };
  const server = new Server();
  server.addService(AgentServiceService, implementation);
  const health = new HealthImplementation({ "": "NOT_SERVING" });
  health.addToServer(server);
  server.bindAsync(address, ServerCredentials.createInsecure(), (error, port) => {
    if (error) throw error;
    health.setStatus("", "SERVING");
    // One machine-readable line: the bench waits for it when it runs the agent itself.
    process.stdout.write(`${JSON.stringify({ msg: "echo agent listening", port })}\n`);
  });
  process.once("SIGTERM", () => {
    health.setStatus("", "NOT_SERVING");
    server.tryShutdown(() => process.exit(0));
  });
}

function serveAttached(capabilities: string[]): void {
  const echo = (payload: Buffer): Buffer => payload;
  const serving = serve({ handlers: Object.fromEntries(capabilities.map((capability) => [capability, echo])) });
  process.once("SIGTERM", () => {
    serving.close();
    process.exit(0);
  });
}

const transport = process.env.ECHO_TRANSPORT ?? "attach";
if (transport === "unary") {
  const address = process.env.AGENTMESH_AGENT_ADDR;
  if (!address) throw new Error("AGENTMESH_AGENT_ADDR is not set");
  serveUnary(address);
} else if (transport === "attach") {
  serveAttached((process.env.ECHO_CAPABILITIES ?? "bench.echo").split(",").filter((name) => name !== ""));
} else {
  throw new Error("ECHO_TRANSPORT must be attach or unary");
}
