import { randomUUID } from "node:crypto";
import { type ChannelCredentials, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { EnvelopeSigner } from "../sdk/ts/src/client/mesh-identity.js";
import type { Clock } from "../sdk/ts/src/core/clock.js";
import { MeshError, invalidArgument } from "../sdk/ts/src/core/mesh-error.js";
import { sessionKeyMetadata } from "../sdk/ts/src/core/session-affinity.js";
import { Invocation, type SidecarServiceInvokeRequest, type SidecarServiceInvokeResponse } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import type { LabelSelector } from "../sdk/ts/src/gen/agentmesh/v1/registry.js";
import { type CallSignal, TunnelClient, type OpenFrameFields, isRefusedBeforeDelivery } from "../sdk/ts/src/core/dataplane/index.js";
import { type KeyAgreementOptions, startKeyAgreement } from "../sdk/ts/src/core/frame-auth.js";
import { invocationType, invokeMethod } from "./inbound.js";
import type { EndpointCache, Pick } from "./routing/endpoint-cache.js";
import { type SidecarMetrics, frameAuthFailureReason } from "./observability/sidecar-metrics.js";
import type { CallTracer } from "./observability/call-tracer.js";

export interface OutboundOptions {
  cache: EndpointCache;
  credentials: ChannelCredentials;
  /** Signs every envelope; absent in dev mode (invocations travel unsigned). */
  signer: EnvelopeSigner | undefined;
  clock: Clock;
  log: Logger;
  /** Caller identity put into invocations (our SPIFFE ID, or the host in dev mode). */
  caller: string;
  /** Our certificate source: on renewal every tunnel moves to a connection showing the new certificate. */
  renewals?: { onChange(listener: () => void): () => void };
  /** Tunnels open with a signed key agreement and MAC their calls (docs/signing.md §8); absent in dev mode. */
  keyAgreement?: KeyAgreementOptions;
  /** Calls to these capabilities stay signed one by one, for non-repudiation. */
  signedCapabilities?: ReadonlySet<string>;
  /** Client-side call metrics, tunnel states and window-full refusals. */
  metrics?: SidecarMetrics;
  /** Client spans (tracing on); the call then carries our span's traceparent. */
  tracer?: CallTracer;
}

export interface OutboundCall {
  capability: string;
  versionRange: string;
  labelSelector: LabelSelector | undefined;
  payload: Uint8Array;
  contentType: string;
  idempotent: boolean;
  metadata: Record<string, string>;
  /** Absolute epoch ms, 0 = none. */
  deadlineMs: number;
  signal?: CallSignal;
  /** The W3C trace context to send on, when ours replaces the caller's (metadata.traceparent otherwise). */
  traceparent?: string;
}

/**
 * Calls from local agents to the mesh: pick from the Watch-fed cache (no control
 * plane round trip), sign, send on the multiplexed tunnel to the target's sidecar,
 * and retry once on another instance: any call the receiver refused before
 * delivering it (the END frame says so), and an idempotent call that was
 * unavailable. Instances behind a tunnel that broke or stopped answering are
 * routed around until it answers again.
 */
export class Outbound {
  private readonly tunnels = new Map<string, TunnelClient>();

  constructor(private readonly options: OutboundOptions) {}

  async invoke(call: OutboundCall): Promise<SidecarServiceInvokeResponse> {
    const end = this.options.metrics?.begin("client", call.capability);
    const span = this.options.tracer?.start("client", call.capability, call.metadata.traceparent ?? "");
    if (!end && !span) return this.invokeWithRetry(call, undefined);
    const picked = { version: "" };
    try {
      const response = await this.invokeWithRetry(span ? { ...call, traceparent: span.traceparent } : call, picked);
      end?.(response.version);
      span?.end(response.version, undefined, response.instanceId);
      return response;
    } catch (error) {
      end?.(picked.version, error);
      span?.end(picked.version, error);
      throw error;
    }
  }

  /** `picked` (when observed) learns the version of the last instance tried, for the metrics of a failed call. */
  private async invokeWithRetry(call: OutboundCall, picked: { version: string } | undefined): Promise<SidecarServiceInvokeResponse> {
    const tried = new Set<string>();
    let failure: unknown;
    for (let attempt = 0; ; attempt += 1) {
      let pick: Pick;
      try {
        pick = this.options.cache.pick(call.capability, call.versionRange, call.labelSelector, tried, call.metadata[sessionKeyMetadata] ?? "");
      } catch (error) {
        // Nowhere else to go: the caller hears why the first attempt failed.
        throw failure ?? error;
      }
      tried.add(pick.instance.instanceId);
      if (picked) picked.version = pick.version;
      try {
        return await this.invokeOn(pick, call);
      } catch (error) {
        const code = (error as { code?: number }).code;
        if (code === status.RESOURCE_EXHAUSTED && isRefusedBeforeDelivery(error)) this.options.metrics?.windowFullRejections.inc();
        // A tunnel that broke or stopped answering is routed around as a whole (avoidEndpoint);
        // an instance its healthy sidecar cannot serve leaves routing until the registry says more.
        if (code === status.UNAVAILABLE && this.tunnels.get(pick.instance.endpoint)?.state === "ready") this.options.cache.markUnroutable(pick.instance.instanceId, pick.instance);
        const retryable = isRefusedBeforeDelivery(error) || (call.idempotent && code === status.UNAVAILABLE);
        if (!retryable || attempt > 0 || call.signal?.aborted) throw error;
        failure = error;
        this.options.log.debug({ instanceId: pick.instance.instanceId, capability: call.capability }, "retrying call elsewhere");
      }
    }
  }

  async *invokeStream(observedCall: OutboundCall): AsyncIterable<Buffer> {
    const end = this.options.metrics?.begin("client", observedCall.capability);
    const span = this.options.tracer?.start("client", observedCall.capability, observedCall.metadata.traceparent ?? "");
    const call = span ? { ...observedCall, traceparent: span.traceparent } : observedCall;
    let version = "";
    let failure: unknown;
    try {
      const pick = this.options.cache.pick(call.capability, call.versionRange, call.labelSelector, undefined, call.metadata[sessionKeyMetadata] ?? "");
      version = pick.version;
      const tunnel = this.tunnelTo(pick);
      const done = this.options.cache.begin(pick.instance.instanceId);
      try {
        yield* tunnel.stream(this.openFrame(pick, call), { deadlineMs: call.deadlineMs || undefined, signal: call.signal });
      } finally {
        done();
      }
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      end?.(version, failure);
      span?.end(version, failure);
    }
  }

  /** Drops the tunnel streams to peers whose certificate `isRevoked` names; answers how many. */
  dropPeers(isRevoked: (serial: string) => boolean, reason: string): number {
    let dropped = 0;
    for (const tunnel of this.tunnels.values()) dropped += tunnel.dropPeers(isRevoked, reason);
    return dropped;
  }

  close(): void {
    for (const tunnel of this.tunnels.values()) tunnel.close();
    this.tunnels.clear();
  }

  private async invokeOn(pick: Pick, call: OutboundCall): Promise<SidecarServiceInvokeResponse> {
    const tunnel = this.tunnelTo(pick);
    const done = this.options.cache.begin(pick.instance.instanceId);
    try {
      const reply = await tunnel.unary(this.openFrame(pick, call), { deadlineMs: call.deadlineMs || undefined, signal: call.signal });
      return { payload: reply.payload, contentType: reply.contentType, instanceId: pick.instance.instanceId, version: pick.version };
    } finally {
      done();
    }
  }

  private openFrame(pick: Pick, call: OutboundCall): OpenFrameFields {
    const invocation: Invocation = {
      callId: randomUUID(),
      capability: call.capability,
      version: pick.version,
      // grpc-js hands us Buffers already; copy only what is not one.
      payload: Buffer.isBuffer(call.payload) ? call.payload : Buffer.from(call.payload),
      contentType: call.contentType,
      caller: this.options.caller,
      deadlineMs: call.deadlineMs,
      metadata: call.traceparent !== undefined && call.metadata.traceparent !== undefined ? { ...call.metadata, traceparent: call.traceparent } : call.metadata,
      traceparent: call.traceparent ?? call.metadata.traceparent ?? "",
    };
    const signer = this.options.signer;
    if (!signer) return { instanceId: pick.instance.instanceId, invocation };
    // The payload bytes travel exactly as signed or MACed; the receiver never re-encodes them.
    const bytes = Invocation.encode(invocation).finish();
    const signed = this.options.signedCapabilities?.has(call.capability) === true;
    return {
      instanceId: pick.instance.instanceId,
      authenticate: (frames) => (frames && !signed ? frames.seal(bytes, invokeMethod, invocationType) : signer.sign(bytes, invokeMethod, invocationType, pick.instance.spiffeId)),
    };
  }

  private tunnelTo(pick: Pick): TunnelClient {
    const address = pick.instance.endpoint;
    if (address === "") throw new MeshError("unavailable", "instance has no endpoint");
    let tunnel = this.tunnels.get(address);
    if (!tunnel) {
      const keyAgreement = this.options.keyAgreement;
      const peerId = pick.instance.spiffeId;
      tunnel = new TunnelClient({
        address,
        credentials: this.options.credentials,
        // Peers are verified by SPIFFE ID; a fixed TLS name avoids IP addresses as SNI.
        channelOptions: { "grpc.ssl_target_name_override": "agentmesh-sidecar" },
        renewals: this.options.renewals,
        logger: this.options.log,
        keyAgreement: keyAgreement ? () => startKeyAgreement(keyAgreement, peerId) : undefined,
      });
      tunnel.on("stateChange", (state: string) => this.options.cache.avoidEndpoint(address, state === "unresponsive" || state === "backoff"));
      const metrics = this.options.metrics;
      if (metrics) {
        observeTunnelStates(tunnel, metrics);
        tunnel.on("frameRefused", (reason: string) => metrics.recordFrameAuthFailure(frameAuthFailureReason(reason) ?? "mac"));
      }
      tunnel.connect();
      this.tunnels.set(address, tunnel);
    }
    return tunnel;
  }
}

/** Keeps agentmesh_sidecar_tunnels{state} and the reconnect count in step with one tunnel. */
function observeTunnelStates(tunnel: TunnelClient, metrics: SidecarMetrics): void {
  let current: string = tunnel.state;
  let wasReady = false;
  let lostStream = false;
  metrics.tunnels.labels(current).inc();
  tunnel.on("stateChange", (state: string) => {
    metrics.tunnels.labels(current).dec();
    if (state !== "closed") metrics.tunnels.labels(state).inc();
    current = state;
    // Back from unresponsive on the same stream is not a reconnect; ready after backoff or a new opening is.
    if (state === "backoff" || state === "connecting" || state === "idle") lostStream = wasReady;
    if (state === "ready") {
      if (lostStream) metrics.tunnelReconnects.inc();
      wasReady = true;
      lostStream = false;
    }
  });
}

export function toOutboundCall(request: SidecarServiceInvokeRequest, clock: Clock, callDeadline: number, signal?: CallSignal): OutboundCall {
  if (request.capability === "") throw invalidArgument("capability: required");
  // The earlier of the request's timeout and the gRPC deadline, 0 = none (no arrays: this runs per call).
  const fromTimeout = request.timeoutMs > 0 ? clock.nowMs() + request.timeoutMs : 0;
  const fromCall = callDeadline > 0 && Number.isFinite(callDeadline) ? callDeadline : 0;
  const deadlineMs = fromTimeout === 0 ? fromCall : fromCall === 0 ? fromTimeout : Math.min(fromTimeout, fromCall);
  return {
    capability: request.capability,
    versionRange: request.versionRange,
    labelSelector: request.labelSelector,
    payload: request.payload,
    contentType: request.contentType,
    idempotent: request.idempotent,
    metadata: request.metadata,
    deadlineMs,
    signal,
  };
}
