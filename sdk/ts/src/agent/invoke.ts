import { Metadata, type ServiceError, credentials } from "@grpc/grpc-js";
import { TunnelClient } from "../core/dataplane/tunnel-client.js";
import { parseLabelSelector } from "../core/label-selector.js";
import { SidecarServiceClient, type SidecarServiceDiscoverResponse, type SidecarServiceInvokeRequest } from "../gen/agentmesh/v1/agent.js";
import type { LabelSelector } from "../gen/agentmesh/v1/registry.js";
import type { AgentInstance } from "../gen/agentmesh/v1/types.js";

export interface InvokeOptions {
  versionRange?: string;
  labelSelector?: LabelSelector | string;
  /** Safe to retry on another instance when one is unavailable. */
  idempotent?: boolean;
  timeoutMs?: number;
  contentType?: string;
  metadata?: Record<string, string>;
  signal?: AbortSignal;
}

export interface InvokeResult {
  payload: Buffer;
  contentType: string;
  instanceId: string;
  version: string;
}

const DEFAULT_TIMEOUT_MS = 30_000;

function asServiceError(error: unknown): Error {
  if (error instanceof Error && typeof (error as { code?: unknown }).code === "number") {
    return Object.assign(error, { details: (error as { details?: string }).details ?? error.message });
  }
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * Calls other agents through the local sidecar (AGENTMESH_SIDECAR_ADDR). Calls
 * travel as frames on ONE multiplexed stream (SidecarService.Call), not one
 * unary RPC each: DESIGN §5.1 measured that at a third of the CPU.
 */
export class MeshCaller {
  private readonly calls: TunnelClient;
  private readonly client: SidecarServiceClient;

  constructor(sidecarAddress = process.env.AGENTMESH_SIDECAR_ADDR ?? "") {
    if (!sidecarAddress) throw new Error("AGENTMESH_SIDECAR_ADDR is not set: run the agent under an agentmesh sidecar");
    this.client = new SidecarServiceClient(sidecarAddress, credentials.createInsecure());
    this.calls = new TunnelClient({ address: sidecarAddress, credentials: credentials.createInsecure(), service: "sidecar", backoff: { initialMs: 20, maxMs: 1000 } });
    this.calls.connect();
  }

  /** Rejects with an error carrying the gRPC `code` and `details`, like a grpc-js ServiceError. */
  async invoke(capability: string, payload: Uint8Array | string, options: InvokeOptions = {}): Promise<InvokeResult> {
    try {
      await this.whenConnected(Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS));
      const reply = await this.calls.unary({ instanceId: "", request: this.request(capability, payload, options, options.idempotent ?? false) }, this.callOptions(options));
      return { payload: reply.payload, contentType: reply.contentType, instanceId: reply.instanceId ?? "", version: reply.version ?? "" };
    } catch (error) {
      throw asServiceError(error);
    }
  }

  /** A streamed answer (for example tokens as they are produced). */
  invokeStream(capability: string, payload: Uint8Array | string, options: InvokeOptions = {}): AsyncIterable<Buffer> {
    return this.calls.stream({ instanceId: "", request: this.request(capability, payload, options, false) }, this.callOptions(options));
  }

  async discover(capability: string, versionRange = "", labelSelector?: LabelSelector | string): Promise<AgentInstance[]> {
    const selector = typeof labelSelector === "string" ? parseLabelSelector(labelSelector) : labelSelector;
    const response = await new Promise<SidecarServiceDiscoverResponse>((resolve, reject) =>
      this.client.discover({ capability, versionRange, labelSelector: selector }, new Metadata(), (error: ServiceError | null, result: SidecarServiceDiscoverResponse) =>
        error ? reject(error) : resolve(result),
      ),
    );
    return response.instances;
  }

  /**
   * The local sidecar is the only way out, so while its stream reconnects a call
   * waits for it (until its deadline) instead of failing at once, as a call to
   * one of many peers would. It has not been sent, so waiting is always safe.
   */
  private whenConnected(deadlineMs: number): Promise<void> {
    if (this.calls.state !== "backoff") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.calls.off("stateChange", onState);
        resolve();
      };
      const onState = (state: string) => {
        if (state === "connecting" || state === "ready" || state === "closed") done();
      };
      const timer = setTimeout(done, Math.max(0, deadlineMs - Date.now()));
      this.calls.on("stateChange", onState);
    });
  }

  close(): void {
    this.calls.close();
    this.client.close();
  }

  private request(capability: string, payload: Uint8Array | string, options: InvokeOptions, idempotent: boolean): SidecarServiceInvokeRequest {
    return {
      capability,
      versionRange: options.versionRange ?? "",
      labelSelector: typeof options.labelSelector === "string" ? parseLabelSelector(options.labelSelector) : options.labelSelector,
      payload: typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload),
      contentType: options.contentType ?? "",
      idempotent,
      metadata: options.metadata ?? {},
      timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    };
  }

  private callOptions(options: InvokeOptions) {
    return { deadlineMs: Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS), signal: options.signal };
  }
}
