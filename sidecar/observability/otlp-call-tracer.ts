import { type Context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, defaultTextMapGetter, defaultTextMapSetter, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { statusOfError } from "../../sdk/ts/src/core/dataplane/index.js";
import type { CallSpan, CallTracer } from "./call-tracer.js";
import { statusLabel } from "./sidecar-metrics.js";

// The span names of the OpenTelemetry RPC conventions: $package.$service/$method of the hop.
const spanName = { server: "agentmesh.v1.AgentService/Invoke", client: "agentmesh.v1.SidecarService/Invoke" } as const;

/**
 * Spans over OTLP/HTTP (the exporter reads the standard OTEL_EXPORTER_OTLP_* and
 * OTEL_BSP_* variables), batched off the call path. Loaded only when tracing is on.
 */
export class OtlpCallTracer implements CallTracer {
  private readonly provider: BasicTracerProvider;
  private readonly tracer;
  private readonly propagator = new W3CTraceContextPropagator();

  constructor(serviceName: string) {
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ "service.name": serviceName }),
      spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
    });
    this.tracer = this.provider.getTracer("agentmesh-sidecar");
  }

  start(kind: "server" | "client", capability: string, traceparent: string): CallSpan {
    const parent = traceparent === "" ? ROOT_CONTEXT : this.propagator.extract(ROOT_CONTEXT, { traceparent }, defaultTextMapGetter);
    const span = this.tracer.startSpan(
      spanName[kind],
      {
        kind: kind === "server" ? SpanKind.SERVER : SpanKind.CLIENT,
        attributes: { "rpc.system": "grpc", "rpc.service": spanName[kind].split("/")[0], "rpc.method": "Invoke", "agentmesh.capability": capability },
      },
      parent,
    );
    return new OtlpCallSpan(span, this.traceparentOf(trace.setSpan(parent, span)));
  }

  async close(): Promise<void> {
    await this.provider.shutdown();
  }

  private traceparentOf(context: Context): string {
    const carrier: Record<string, string> = {};
    this.propagator.inject(context, carrier, defaultTextMapSetter);
    return carrier.traceparent ?? "";
  }
}

class OtlpCallSpan implements CallSpan {
  private ended = false;

  constructor(
    private readonly span: Span,
    readonly traceparent: string,
  ) {}

  end(version: string, error?: unknown, instanceId?: string): void {
    if (this.ended) return;
    this.ended = true;
    const span = this.span;
    span.setAttribute("agentmesh.capability.version", version);
    if (instanceId) span.setAttribute("agentmesh.instance_id", instanceId);
    span.setAttribute("rpc.grpc.status_code", error === undefined ? 0 : (statusOfError(error)?.code ?? 2));
    if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: statusLabel(error) });
    span.end();
  }
}
