import { Metadata, type ServiceError, credentials } from "@grpc/grpc-js";
import { parseLabelSelector } from "../core/label-selector.js";
import { SidecarServiceClient, type SidecarServiceInvokeResponse, type SidecarServiceDiscoverResponse } from "../gen/agentmesh/v1/agent.js";
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
}

export interface InvokeResult {
  payload: Buffer;
  contentType: string;
  instanceId: string;
  version: string;
}

/** Calls other agents through the local sidecar (AGENTMESH_SIDECAR_ADDR). */
export class MeshCaller {
  private readonly client: SidecarServiceClient;

  constructor(sidecarAddress = process.env.AGENTMESH_SIDECAR_ADDR ?? "") {
    if (!sidecarAddress) throw new Error("AGENTMESH_SIDECAR_ADDR is not set: run the agent under an agentmesh sidecar");
    this.client = new SidecarServiceClient(sidecarAddress, credentials.createInsecure());
  }

  invoke(capability: string, payload: Uint8Array | string, options: InvokeOptions = {}): Promise<InvokeResult> {
    const selector = typeof options.labelSelector === "string" ? parseLabelSelector(options.labelSelector) : options.labelSelector;
    const deadline = new Date(Date.now() + (options.timeoutMs ?? 30_000));
    return new Promise((resolve, reject) =>
      this.client.invoke(
        {
          capability,
          versionRange: options.versionRange ?? "",
          labelSelector: selector,
          payload: typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload),
          contentType: options.contentType ?? "",
          idempotent: options.idempotent ?? false,
          metadata: options.metadata ?? {},
          timeoutMs: options.timeoutMs ?? 0,
        },
        new Metadata(),
        { deadline },
        (error: ServiceError | null, response: SidecarServiceInvokeResponse) =>
          error ? reject(error) : resolve({ ...response, payload: Buffer.from(response.payload) }),
      ),
    );
  }

  async discover(capability: string, versionRange = "", labelSelector?: LabelSelector | string): Promise<AgentInstance[]> {
    const selector = typeof labelSelector === "string" ? parseLabelSelector(labelSelector) : labelSelector;
    const response = await new Promise<SidecarServiceDiscoverResponse>((resolve, reject) =>
      this.client.discover({ capability, versionRange, labelSelector: selector }, (error: ServiceError | null, result: SidecarServiceDiscoverResponse) =>
        error ? reject(error) : resolve(result),
      ),
    );
    return response.instances;
  }

  close(): void {
    this.client.close();
  }
}
