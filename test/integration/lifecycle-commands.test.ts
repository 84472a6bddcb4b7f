// StopAgent / DrainAgent / RestartAgent answer with what the sidecar reported:
// a real server, and a scripted sidecar (MeshClient on a real Connect stream)
// that answers each command as the test says.
import { type ServiceError, credentials, status } from "@grpc/grpc-js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MeshClient } from "../../sdk/ts/src/client/mesh-client.js";
import { type Command, OrchestratorServiceClient } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type RunningServer, startServer } from "../../services/server/server.js";
import { EventLog } from "../helpers/events.js";
import { logSink } from "../helpers/log-sink.js";
import { manifest } from "../helpers/manifests.js";
import { tempDir } from "../helpers/processes.js";

type Answer = "ok" | "refuse" | "disconnect" | "silence";

let server: RunningServer;
let sidecar: MeshClient;
let orchestrator: OrchestratorServiceClient;
let answer: Answer;
let received: EventLog<Command>;

beforeEach(async () => {
  server = await startServer(
    { port: 0, httpPort: 0, insecureDev: true, dataDir: tempDir(), reconnectGraceMs: 200, commandResultSlackMs: 300 },
    { log: logSink("silent").log },
  );
  answer = "ok";
  received = new EventLog<Command>();
  sidecar = new MeshClient({
    address: server.address,
    sidecarId: "host-a",
    onCommand: (response) => {
      if (response.msg?.$case !== "command") return;
      const command = response.msg.value;
      received.push(command);
      if (answer === "ok") sidecar.sendCommandResult({ commandId: command.commandId, ok: true, message: "", instanceId: "" });
      if (answer === "refuse") sidecar.sendCommandResult({ commandId: command.commandId, ok: false, message: "instance not on this sidecar", instanceId: "" });
      if (answer === "disconnect") sidecar.close();
    },
  });
  orchestrator = new OrchestratorServiceClient(server.address, credentials.createInsecure());
});

afterEach(async () => {
  sidecar.close();
  orchestrator.close();
  await server.close();
});

function stop(instanceId: string, graceMs = 1): Promise<ServiceError | undefined> {
  return new Promise((resolve) => orchestrator.stopAgent({ instanceId, graceMs }, (error) => resolve(error ?? undefined)));
}

function restart(instanceId: string): Promise<ServiceError | undefined> {
  return new Promise((resolve) => orchestrator.restartAgent({ instanceId }, (error) => resolve(error ?? undefined)));
}

function drain(instanceId: string): Promise<ServiceError | undefined> {
  return new Promise((resolve) => orchestrator.drainAgent({ instanceId, graceMs: 1 }, (error) => resolve(error ?? undefined)));
}

async function registered(): Promise<string> {
  const handle = await sidecar.register(manifest());
  await sidecar.waitConnected();
  return handle.instanceId;
}

describe("lifecycle commands wait for the sidecar's result", () => {
  it("answers OK once the sidecar reports success", async () => {
    const instanceId = await registered();
    expect(await stop(instanceId)).toBeUndefined();
    const command = await received.next(() => true);
    expect(command.action).toEqual({ $case: "stop", value: { instanceId, graceMs: 1 } });
  });

  it.each([
    ["stop", stop],
    ["restart", restart],
    ["drain", drain],
  ] as const)("%s refused by the sidecar is FAILED_PRECONDITION with the sidecar's message", async (verb, send) => {
    const instanceId = await registered();
    answer = "refuse";
    const error = await send(instanceId);
    expect({ code: error?.code, details: error?.details }).toEqual({
      code: status.FAILED_PRECONDITION,
      details: `sidecar host-a refused ${verb}: instance not on this sidecar`,
    });
  });

  it("a sidecar that disconnects before answering is UNAVAILABLE", async () => {
    const instanceId = await registered();
    answer = "disconnect";
    const error = await stop(instanceId);
    expect({ code: error?.code, details: error?.details }).toEqual({
      code: status.UNAVAILABLE,
      details: "sidecar host-a disconnected before reporting the outcome",
    });
  });

  it("a sidecar that never answers is DEADLINE_EXCEEDED after the grace plus the slack, and says the command may still complete", async () => {
    const instanceId = await registered();
    answer = "silence";
    const error = await restart(instanceId);
    expect({ code: error?.code, details: error?.details }).toEqual({
      code: status.DEADLINE_EXCEEDED,
      details: "sidecar host-a reported no outcome within 300 ms; the command may still complete",
    });
  });

  it("a result for another command does not answer this one", async () => {
    const instanceId = await registered();
    answer = "silence";
    const pending = stop(instanceId);
    await received.next(() => true);
    sidecar.sendCommandResult({ commandId: "not-this-one", ok: true, message: "", instanceId });
    expect((await pending)?.code).toBe(status.DEADLINE_EXCEEDED);
  });
});
