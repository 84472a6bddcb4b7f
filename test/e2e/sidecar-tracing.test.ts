// W3C trace context through both sidecars, with spans over OTLP/HTTP: the caller's
// traceparent → the calling sidecar's client span → the tunnel → the serving sidecar's
// server span → the agent, which sees the server span as its parent. The OTLP receiver
// is an HTTP server in this test that decodes what the sidecars export.
import { type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { MeshCluster, echoDeploymentYaml, waitFor } from "../helpers/mesh-cluster.js";

interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
  service: string;
}

let cluster: MeshCluster | undefined;
let receiver: Server | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
  await new Promise((resolve) => (receiver ? receiver.close(resolve) : resolve(undefined)));
  receiver = undefined;
});

/** An OTLP/HTTP (JSON) trace receiver on port 0. */
async function startReceiver(spans: ReceivedSpan[]): Promise<string> {
  receiver = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      expect(request.url).toBe("/v1/traces");
      expect(request.headers["content-type"]).toContain("application/json");
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
        resourceSpans: Array<{ resource: { attributes: ReceivedSpan["attributes"] }; scopeSpans: Array<{ spans: Omit<ReceivedSpan, "service">[] }> }>;
      };
      for (const resourceSpans of body.resourceSpans) {
        const service = String(resourceSpans.resource.attributes.find((attribute) => attribute.key === "service.name")?.value.stringValue);
        for (const scope of resourceSpans.scopeSpans) for (const span of scope.spans) spans.push({ ...span, service });
      }
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => receiver?.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
}

const attribute = (span: ReceivedSpan, key: string) => span.attributes.find((entry) => entry.key === key)?.value;

describe("trace context through the mesh (real processes)", () => {
  it("propagates traceparent caller → sidecar → sidecar → agent and exports both spans over OTLP", async () => {
    const spans: ReceivedSpan[] = [];
    const endpoint = await startReceiver(spans);
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: "50" };
    cluster = await MeshCluster.start();
    await cluster.startSidecar({ host: "host-a", env, manifests: [cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 }))] });
    const calling = await cluster.startSidecar({ host: "host-b", env });
    await cluster.waitForReady("echo", 1);

    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const callerSpanId = "00f067aa0ba902b7";
    const result = await calling.caller.invoke("test.echo", "{}", { timeoutMs: 5000, metadata: { traceparent: `00-${traceId}-${callerSpanId}-01` } });
    const agentSaw = String((JSON.parse(result.payload.toString("utf8")) as { traceparent: string }).traceparent);

    await waitFor("both spans exported", () => (spans.filter((span) => span.traceId === traceId).length >= 2 ? true : undefined), 10_000);
    const client = spans.find((span) => span.traceId === traceId && span.kind === 3);
    const server = spans.find((span) => span.traceId === traceId && span.kind === 2);
    expect(client).toMatchObject({ name: "agentmesh.v1.SidecarService/Invoke", parentSpanId: callerSpanId, service: "agentmesh-sidecar/host-b" });
    expect(server).toMatchObject({ name: "agentmesh.v1.AgentService/Invoke", parentSpanId: client?.spanId, service: "agentmesh-sidecar/host-a" });
    expect(attribute(server as ReceivedSpan, "agentmesh.capability")).toEqual({ stringValue: "test.echo" });
    expect(attribute(client as ReceivedSpan, "agentmesh.capability.version")).toEqual({ stringValue: "1.0.0" });
    expect(attribute(client as ReceivedSpan, "rpc.grpc.status_code")).toEqual({ intValue: 0 });
    // The agent's parent is the serving sidecar's span, in the caller's trace.
    expect(agentSaw).toBe(`00-${traceId}-${server?.spanId}-01`);
  }, 60_000);

  it("passes traceparent through unchanged when tracing is off", async () => {
    cluster = await MeshCluster.start();
    await cluster.startSidecar({ host: "host-a", manifests: [cluster.writeFile("echo.yaml", echoDeploymentYaml({ replicas: 1 }))] });
    const calling = await cluster.startSidecar({ host: "host-b" });
    await cluster.waitForReady("echo", 1);
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const result = await calling.caller.invoke("test.echo", "{}", { timeoutMs: 5000, metadata: { traceparent } });
    expect((JSON.parse(result.payload.toString("utf8")) as { traceparent: string }).traceparent).toBe(traceparent);
    expect(calling.process.lines.some((line) => line.msg === "tracing on: spans go over OTLP")).toBe(false);
  }, 60_000);
});
