import { performance } from "node:perf_hooks";
import { status } from "@grpc/grpc-js";
import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics } from "prom-client";
import { statusOfError } from "../../sdk/ts/src/core/dataplane/index.js";
import { frameFailure } from "../../sdk/ts/src/core/frame-auth.js";

/** Which side of a call this sidecar was on: `server` for calls it delivered to a local agent, `client` for calls a local agent made. */
export type CallDirection = "server" | "client";

/** Why a frame or tunnel failed authentication; the label values of agentmesh_sidecar_frame_auth_failures_total. */
export type FrameAuthFailureReason = "mac" | "sequence" | "key" | "handshake" | "signature" | "certificate";

const failureReasonByMessage = new Map<string, FrameAuthFailureReason>([
  [frameFailure.badMac, "mac"],
  [frameFailure.replyNotAuthenticated, "mac"],
  [frameFailure.sequenceReplayed, "sequence"],
  [frameFailure.noSession, "key"],
  [frameFailure.otherTunnel, "key"],
  [frameFailure.badNonce, "key"],
  [frameFailure.badKeyShare, "handshake"],
  [frameFailure.transcriptMismatch, "handshake"],
  ["signature invalid", "signature"],
  ["nonce replayed", "signature"],
  [frameFailure.peerCertificateExpired, "certificate"],
  [frameFailure.peerCertificateRevoked, "certificate"],
  ["signer certificate revoked", "certificate"],
]);

/** The label of a refusal's reason (a MeshError message of frame-auth or signing), undefined for refusals that are not about authentication. */
export function frameAuthFailureReason(message: string): FrameAuthFailureReason | undefined {
  return failureReasonByMessage.get(message);
}

// OpenTelemetry's recommended boundaries for rpc.*.call.duration, in seconds, with finer steps under 10 ms where the mesh's budget lives.
const durationBucketsSeconds = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

const statusNames = new Map<number, string>(Object.entries(status).filter(([, value]) => typeof value === "number").map(([name, value]) => [value as number, name]));

/** The gRPC status name of an outcome ("OK" when error is undefined), the `code` label. */
export function statusLabel(error: unknown): string {
  if (error === undefined) return "OK";
  const code = statusOfError(error)?.code ?? (error as { code?: unknown }).code;
  return typeof code === "number" ? (statusNames.get(code) ?? "UNKNOWN") : "UNKNOWN";
}

/** Ends one observed call: pass the error it failed with, or nothing. */
export type CallEnd = (error?: unknown) => void;

/**
 * The sidecar's data-plane metrics, on a registry of its own (several sidecars share a
 * process in tests). Names follow the OpenTelemetry RPC conventions
 * (`rpc.server.call.duration`, `rpc.client.call.duration`, seconds) in Prometheus form.
 */
export class SidecarMetrics {
  readonly registry = new PromRegistry();
  readonly calls: Counter<"direction" | "capability" | "version" | "code">;
  readonly serverDuration: Histogram<"capability" | "version" | "code">;
  readonly clientDuration: Histogram<"capability" | "version" | "code">;
  readonly inFlight: Gauge<"direction">;
  readonly tunnels: Gauge<"state">;
  readonly tunnelReconnects: Counter;
  readonly windowFullRejections: Counter;
  /** Frames or tunnel openings that failed authentication (forged MAC, replayed or reordered sequence, foreign key...), by reason. */
  readonly frameAuthFailures: Counter<"reason">;

  constructor(private readonly nowSeconds: () => number = () => performance.now() / 1000) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "agentmesh_sidecar_" });
    this.calls = new Counter({
      name: "agentmesh_sidecar_calls_total",
      help: "Calls by direction (server: delivered to a local agent; client: made by a local agent), capability, version and gRPC status.",
      labelNames: ["direction", "capability", "version", "code"],
      registers,
    });
    this.serverDuration = new Histogram({
      name: "agentmesh_sidecar_rpc_server_call_duration_seconds",
      help: "rpc.server.call.duration: calls from other sidecars, from admission to the local agent's answer.",
      labelNames: ["capability", "version", "code"],
      buckets: durationBucketsSeconds,
      registers,
    });
    this.clientDuration = new Histogram({
      name: "agentmesh_sidecar_rpc_client_call_duration_seconds",
      help: "rpc.client.call.duration: calls of local agents, from the pick to the answer (retries included).",
      labelNames: ["capability", "version", "code"],
      buckets: durationBucketsSeconds,
      registers,
    });
    this.inFlight = new Gauge({ name: "agentmesh_sidecar_calls_in_flight", help: "Calls running now, by direction.", labelNames: ["direction"], registers });
    this.tunnels = new Gauge({ name: "agentmesh_sidecar_tunnels", help: "Outgoing tunnels to other sidecars, by state.", labelNames: ["state"], registers });
    this.tunnelReconnects = new Counter({ name: "agentmesh_sidecar_tunnel_reconnects_total", help: "Outgoing tunnels that became ready again after losing their stream.", registers });
    this.windowFullRejections = new Counter({
      name: "agentmesh_sidecar_window_full_rejections_total",
      help: "Outgoing calls refused because a tunnel's in-flight window (ours or the peer's concurrency limit) was full.",
      registers,
    });
    this.frameAuthFailures = new Counter({
      name: "agentmesh_sidecar_frame_auth_failures_total",
      help: "Tunnel frames or openings that failed authentication, by reason (mac, sequence, key, handshake, signature, certificate).",
      labelNames: ["reason"],
      registers,
    });
    for (const direction of ["server", "client"] as const) this.inFlight.labels(direction).set(0);
    this.tunnelReconnects.inc(0);
    this.windowFullRejections.inc(0);
  }

  /** Starts timing one call; the returned function records its end once (later calls are ignored). */
  begin(direction: CallDirection, capability: string): (version: string, error?: unknown) => void {
    const startedAt = this.nowSeconds();
    const inFlight = this.inFlight.labels(direction);
    inFlight.inc();
    let ended = false;
    return (version, error) => {
      if (ended) return;
      ended = true;
      inFlight.dec();
      const code = statusLabel(error);
      this.calls.labels(direction, capability, version, code).inc();
      (direction === "server" ? this.serverDuration : this.clientDuration).labels(capability, version, code).observe(this.nowSeconds() - startedAt);
    };
  }

  /** Counts one authentication failure of a tunnel frame or opening. */
  recordFrameAuthFailure(reason: FrameAuthFailureReason): void {
    this.frameAuthFailures.labels(reason).inc();
  }
}
