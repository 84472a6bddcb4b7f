import { EventEmitter } from "node:events";
import { type ChannelCredentials, type ChannelOptions, type ClientDuplexStream, Metadata } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type Clock, type RandomSource, systemClock } from "../clock.js";
import { MeshError } from "../mesh-error.js";
import {
  type CallFrame,
  PeerServiceClient,
  SidecarServiceClient,
  type TunnelRequest,
  type TunnelResponse,
} from "../../gen/agentmesh/v1/agent.js";
import { type BackoffPolicy, backoffDelayMs, defaultBackoffPolicy } from "./backoff.js";
import { CallMultiplexer, type CallOptions } from "./call-multiplexer.js";
import { ChunkQueue } from "./chunk-queue.js";
import { FrameBatcher, type FrameBatcherOptions } from "./frame-batcher.js";
import type { CallReply, OpenFrameFields } from "./frames.js";
import { silentLogger } from "./silent-logger.js";
import { type TimerHandle, type Timers, systemTimers } from "./timers.js";

/**
 * idle: no stream yet (opened by the first call or connect()); connecting: stream
 * created, peer not heard from; ready: peer answered the stream open; backoff:
 * the stream broke and a reopen is scheduled; closed: close() was called.
 */
export type TunnelState = "idle" | "connecting" | "ready" | "backoff" | "closed";

export interface TunnelClientOptions {
  /** host:port of the peer sidecar's inbound port. */
  address: string;
  /** mTLS in production; plaintext in tests and benches. */
  credentials: ChannelCredentials;
  /** `peer` (default): PeerService.Tunnel to another sidecar; `sidecar`: SidecarService.Call to the local sidecar. */
  service?: "peer" | "sidecar";
  channelOptions?: ChannelOptions;
  /** Calls in flight on the tunnel at most; further calls fail with overLimit. */
  windowSize?: number;
  /** Unread chunks a streamed reply may buffer before the call is cancelled. */
  maxBufferedChunks?: number;
  backoff?: Partial<BackoffPolicy>;
  /** Sent when the stream opens (e.g. identity hints); fixed for the life of the client. */
  metadata?: Metadata;
  batcher?: FrameBatcherOptions;
  clock?: Clock;
  timers?: Timers;
  random?: RandomSource;
  logger?: Logger;
}

export const defaultWindowSize = 1024;
const defaultMaxBufferedChunks = 1024;
// A peer that vanishes without a FIN (host lost, partition) is noticed by
// HTTP/2 pings within keepalive time + timeout rather than the OS TCP timeout.
const defaultKeepaliveTimeMs = 10_000;
const defaultKeepaliveTimeoutMs = 5_000;

/**
 * One long-lived, multiplexed Tunnel stream to one peer sidecar (DESIGN §5.1).
 * Bytes pass through: the client never decodes envelopes or payloads.
 *
 * Failure model: when the stream breaks, every call in flight on it fails at
 * once with `unavailable` (the router retries idempotent ones on another
 * instance), and calls made while the reopen is pending fail the same way
 * instead of queueing, so a dead peer costs callers no time. The stream is
 * reopened with jittered exponential backoff, reset once the peer answers.
 *
 * Events: 'stateChange' (state: TunnelState).
 */
export class TunnelClient extends EventEmitter {
  readonly address: string;
  private readonly client: PeerServiceClient | SidecarServiceClient;
  private readonly calls: CallMultiplexer;
  private readonly backoff: BackoffPolicy;
  private readonly timers: Timers;
  private readonly random: RandomSource;
  private readonly logger: Logger;
  private currentState: TunnelState = "idle";
  private tunnelStream: ClientDuplexStream<TunnelRequest, TunnelResponse> | undefined;
  private batcher: FrameBatcher<TunnelRequest> | undefined;
  private reopenTimer: TimerHandle | undefined;
  private failedAttempts = 0;

  constructor(private readonly options: TunnelClientOptions) {
    super();
    this.address = options.address;
    this.backoff = { ...defaultBackoffPolicy, ...options.backoff };
    this.timers = options.timers ?? systemTimers;
    this.random = options.random ?? Math.random;
    this.logger = (options.logger ?? silentLogger).child({ component: "tunnel-client", peerAddress: options.address });
    const ClientClass = options.service === "sidecar" ? SidecarServiceClient : PeerServiceClient;
    this.client = new ClientClass(options.address, options.credentials, {
      // Let the channel's own reconnects keep pace with ours instead of grpc-js' 1 s..120 s default.
      "grpc.initial_reconnect_backoff_ms": this.backoff.initialMs,
      "grpc.max_reconnect_backoff_ms": this.backoff.maxMs,
      "grpc.keepalive_time_ms": defaultKeepaliveTimeMs,
      "grpc.keepalive_timeout_ms": defaultKeepaliveTimeoutMs,
      "grpc.keepalive_permit_without_calls": 1,
      ...options.channelOptions,
    });
    this.calls = new CallMultiplexer({
      send: (frame: CallFrame) => this.batcher?.push(frame),
      windowSize: options.windowSize ?? defaultWindowSize,
      maxBufferedChunks: options.maxBufferedChunks ?? defaultMaxBufferedChunks,
      clock: options.clock ?? systemClock,
      timers: this.timers,
    });
  }

  get state(): TunnelState {
    return this.currentState;
  }

  get inFlight(): number {
    return this.calls.inFlight;
  }

  get windowSize(): number {
    return this.calls.windowSize;
  }

  /** Opens the stream now rather than on the first call (warms the connection). */
  connect(): void {
    if (this.currentState === "idle") this.openStream();
  }

  /** One request, one reply. Rejects with MeshError (or CallStatusError) carrying the gRPC code. */
  unary(open: OpenFrameFields, options: CallOptions = {}): Promise<CallReply> {
    const refusal = this.refusal();
    if (refusal !== undefined) return Promise.reject(refusal);
    return this.calls.unary(open, options);
  }

  /** One request, a stream of reply chunks; errors surface from the iteration. Leaving the loop early cancels the call. */
  stream(open: OpenFrameFields, options: CallOptions = {}): AsyncIterableIterator<Buffer> {
    const refusal = this.refusal();
    if (refusal !== undefined) return ChunkQueue.failed(refusal);
    return this.calls.stream(open, options);
  }

  /** Fails calls in flight with `unavailable`, ends the stream and the channel. Idempotent. */
  close(): void {
    if (this.currentState === "closed") return;
    this.setState("closed");
    if (this.reopenTimer !== undefined) this.timers.clearTimeout(this.reopenTimer);
    this.reopenTimer = undefined;
    const stream = this.tunnelStream;
    this.tunnelStream = undefined;
    this.batcher?.close();
    this.batcher = undefined;
    this.calls.failAll(new MeshError("unavailable", "tunnel closed"));
    stream?.cancel();
    this.client.close();
  }

  private refusal(): MeshError | undefined {
    switch (this.currentState) {
      case "idle":
        this.openStream();
        return undefined;
      case "connecting":
      case "ready":
        return undefined;
      case "backoff":
        return new MeshError("unavailable", "tunnel to peer is reconnecting");
      case "closed":
        return new MeshError("unavailable", "tunnel closed");
    }
  }

  private openStream(): void {
    const metadata = this.options.metadata ?? new Metadata();
    // Both services carry the same frames: {repeated CallFrame frames} each way.
    const stream = (this.client instanceof SidecarServiceClient ? this.client.call(metadata) : this.client.tunnel(metadata)) as ClientDuplexStream<TunnelRequest, TunnelResponse>;
    this.tunnelStream = stream;
    this.batcher = new FrameBatcher<TunnelRequest>(stream, (frames) => ({ frames }), this.options.batcher);
    this.setState("connecting");
    // The tunnel server sends headers as soon as it accepts the stream, so this is the peer saying "ready".
    stream.on("metadata", () => {
      if (this.tunnelStream !== stream) return;
      this.failedAttempts = 0;
      this.setState("ready");
    });
    stream.on("data", (message: TunnelResponse) => {
      if (this.tunnelStream !== stream) return;
      for (const frame of message.frames) this.calls.receive(frame);
    });
    stream.on("error", (error: Error) => this.onBroken(stream, error));
    stream.on("end", () => this.onBroken(stream, undefined));
  }

  private onBroken(stream: ClientDuplexStream<TunnelRequest, TunnelResponse>, error: Error | undefined): void {
    if (this.tunnelStream !== stream) return;
    this.tunnelStream = undefined;
    this.batcher?.close();
    this.batcher = undefined;
    const lostCalls = this.calls.inFlight;
    this.calls.failAll(new MeshError("unavailable", "tunnel to peer broke"));
    const delayMs = backoffDelayMs(this.failedAttempts, this.backoff, this.random);
    this.failedAttempts += 1;
    this.logger.warn({ err: error, lostCalls, reopenInMs: delayMs }, "tunnel stream broke");
    this.setState("backoff");
    this.reopenTimer = this.timers.setTimeout(() => {
      this.reopenTimer = undefined;
      if (this.currentState === "backoff") this.openStream();
    }, delayMs);
  }

  private setState(state: TunnelState): void {
    if (this.currentState === state) return;
    this.currentState = state;
    this.logger.debug({ state }, "tunnel state");
    this.emit("stateChange", state);
  }
}
