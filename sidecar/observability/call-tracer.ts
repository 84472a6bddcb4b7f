/** One traced call: the traceparent to send on (our span's), and its end. */
export interface CallSpan {
  readonly traceparent: string;
  end(version: string, error?: unknown, instanceId?: string): void;
}

/**
 * Spans for calls through the sidecar (`server` for calls delivered to a local agent,
 * `client` for calls a local agent made), children of the W3C traceparent the call
 * arrived with. Only built when tracing is on; otherwise the traceparent travels as is.
 */
export interface CallTracer {
  start(kind: "server" | "client", capability: string, traceparent: string): CallSpan;
  /** Exports what is buffered and stops. */
  close(): Promise<void>;
}

/**
 * The OTLP tracer when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, else
 * undefined. The OpenTelemetry SDK is imported only then: with tracing off a sidecar loads
 * none of it and each call costs one `undefined` check.
 */
export async function tracerFromEnvironment(env: NodeJS.ProcessEnv, serviceName: string): Promise<CallTracer | undefined> {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint || env.OTEL_SDK_DISABLED === "true" || env.OTEL_TRACES_EXPORTER === "none") return undefined;
  const { OtlpCallTracer } = await import("./otlp-call-tracer.js");
  return new OtlpCallTracer(serviceName);
}
