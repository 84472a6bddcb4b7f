import { EventEmitter } from "node:events";
import { type ChannelCredentials, type ChannelOptions, type ClientDuplexStream, Metadata, connectivityState } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type Clock, type RandomSource, systemClock } from "../clock.js";
import { type ClientKeyShare, type FrameSealer, isReplyFrame, keyShareMetadataKey } from "../frame-auth.js";
import { normalizeSerial } from "../tls/peer-verifier.js";
import { MeshError } from "../mesh-error.js";
import {
  type CallFrame,
  CallFrame_Kind,
  PeerServiceClient,
  SidecarServiceClient,
  type TunnelRequest,
  type TunnelResponse,
} from "../../gen/agentmesh/v1/agent.js";
import { type BackoffOptions, backoffDelayMs } from "../backoff.js";
import { refusedBeforeDelivery } from "./call-status.js";
import { CallMultiplexer, type CallOptions } from "./call-multiplexer.js";
import { ChunkQueue } from "./chunk-queue.js";
import { FrameBatcher, type FrameBatcherOptions } from "./frame-batcher.js";
import { type CallReply, type OpenFrameFields, pingFrame } from "./frames.js";
import { silentLogger } from "./silent-logger.js";
import { type TimerHandle, type Timers, systemTimers } from "./timers.js";

/** Reopening a broken tunnel: ±20 % around the schedule, so tunnels that broke together do not reconnect in lockstep. */
export const defaultTunnelBackoff: BackoffOptions = { initialMs: 100, maxMs: 5_000, multiplier: 2, jitter: { ratio: 0.2 } };

/**
 * idle: no stream yet (opened by the first call or connect()); connecting: stream
 * created, peer not heard from; ready: peer answered the stream open;
 * unresponsive: the stream is open but the peer stopped answering pings (a frozen
 * process); backoff: the stream broke and a reopen is scheduled; closed: close()
 * was called.
 */
export type TunnelState = "idle" | "connecting" | "ready" | "unresponsive" | "backoff" | "closed";

/** Liveness pings (CallFrame PING/PONG): how often, and how long a peer may stay silent. */
export interface LivenessPolicy {
  /** Ping interval while calls are in flight (or the peer is unresponsive). */
  pingIntervalMs: number;
  /** Ping interval on an idle stream, so a dead peer is known before the next call. */
  idlePingIntervalMs: number;
  /** A peer silent this long after a ping is unresponsive; also the limit for a new stream to be accepted. */
  timeoutMs: number;
  /** Unresponsive this long: the stream is given up and reopened on a new connection. */
  abandonAfterMs: number;
}

export const defaultLivenessPolicy: LivenessPolicy = { pingIntervalMs: 500, idlePingIntervalMs: 10_000, timeoutMs: 2_000, abandonAfterMs: 30_000 };

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
  backoff?: Partial<BackoffOptions>;
  /**
   * Fires when the local certificate (or trust bundle) changes: the tunnel moves to
   * a new connection, so the peer sees the renewed certificate (CertificateSource).
   */
  renewals?: { onChange(listener: () => void): () => void };
  liveness?: Partial<LivenessPolicy>;
  /** Liveness pings, new-stream deadlines and rotations (default: the system's). */
  streamTimers?: Timers;
  /** Sent when the stream opens (e.g. identity hints); fixed for the life of the client. */
  metadata?: Metadata;
  batcher?: FrameBatcherOptions;
  clock?: Clock;
  /** Reopen backoff and call deadlines. */
  timers?: Timers;
  random?: RandomSource;
  logger?: Logger;
  /**
   * A fresh key share per stream (docs/signing.md §8): the peer answers with its
   * own in the response headers, and OPEN frames on that stream carry a MAC
   * instead of a signature. Without it (or when the peer sends none) frames are signed.
   */
  keyAgreement?: () => ClientKeyShare;
  /** With keyAgreement: the tunnel moves to a new stream (new keys) this often, make-before-break. */
  rekeyIntervalMs?: number;
}

export const defaultWindowSize = 1024;
export const defaultRekeyIntervalMs = 5 * 60_000;
const defaultMaxBufferedChunks = 1024;
// After half-closing a replaced stream, how long the peer has to end it.
const halfCloseGraceMs = 5_000;

type TunnelStream = ClientDuplexStream<TunnelRequest, TunnelResponse>;

/**
 * One stream on its own connection. A tunnel has one current link; while it moves
 * to a new connection it also has the next one (opening) and replaced ones
 * finishing their calls.
 */
interface Link {
  readonly id: number;
  readonly client: PeerServiceClient | SidecarServiceClient;
  readonly stream: TunnelStream;
  readonly batcher: FrameBatcher<TunnelRequest>;
  readonly calls: CallMultiplexer;
  phase: "opening" | "ready" | "draining" | "done";
  openedAtMs: number;
  lastHeardAtMs: number;
  /** The peer answered a PING on this stream: it speaks liveness, so its silence means something. */
  answersPings: boolean;
  unresponsiveSinceMs: number | undefined;
  pingSequence: number;
  pingSentAtMs: number | undefined;
  livenessTimer: TimerHandle | undefined;
  livenessDueAtMs: number;
  halfCloseTimer: TimerHandle | undefined;
  keyShare: ClientKeyShare | undefined;
  /** The frame key agreed on this stream; undefined until the peer's key share is verified, or for peers without one. */
  sealer: FrameSealer | undefined;
  /** Frames that arrived while the peer's key share was being verified: they are checked with its key once it is. */
  awaitingKeys: TunnelResponse[] | undefined;
}

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
 * Liveness: a peer whose connection is open but who stopped answering PINGs (a
 * frozen process) is `unresponsive`: its calls fail with `unavailable` at once,
 * new calls are refused, and it is used again as soon as it answers.
 *
 * Rotation, make-before-break (docs/adr/0006-tunnel-rotation.md): when the local
 * certificate is renewed, or the connection is being retired (GOAWAY), a new
 * stream opens on a new connection; once the peer accepts it, new calls go
 * there, and the old stream finishes its calls in flight and half-closes. No call
 * fails because of it.
 *
 * Reply frames: on a stream that agreed a frame key, every DATA and END frame must
 * carry the peer's MAC and the next reply sequence (docs/signing.md §8.5); a frame
 * that does not fails its call with `unauthenticated` and the reason, and is not
 * delivered.
 *
 * Events: 'stateChange' (state: TunnelState), 'rotated' (reason: string),
 * 'frameRefused' (reason: string).
 */
export class TunnelClient extends EventEmitter {
  readonly address: string;
  private readonly backoff: BackoffOptions;
  private readonly liveness: LivenessPolicy;
  private readonly streamTimers: Timers;
  private readonly timers: Timers;
  private readonly clock: Clock;
  private readonly random: RandomSource;
  private readonly logger: Logger;
  private readonly callWindow: number;
  private currentState: TunnelState = "idle";
  private current: Link | undefined;
  private next: Link | undefined;
  private readonly retiring = new Set<Link>();
  private reopenTimer: TimerHandle | undefined;
  private rotationTimer: TimerHandle | undefined;
  private rekeyTimer: TimerHandle | undefined;
  private rotationReason = "";
  private rotationRestartsPending = false;
  private rotateWhenReady = false;
  private failedAttempts = 0;
  private failedRotations = 0;
  private linkIds = 0;
  private rotationCount = 0;
  private readonly stopRenewals: (() => void) | undefined;

  constructor(private readonly options: TunnelClientOptions) {
    super();
    this.address = options.address;
    this.backoff = { ...defaultTunnelBackoff, ...options.backoff };
    this.liveness = { ...defaultLivenessPolicy, ...options.liveness };
    this.streamTimers = options.streamTimers ?? systemTimers;
    this.timers = options.timers ?? systemTimers;
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.callWindow = options.windowSize ?? defaultWindowSize;
    this.logger = (options.logger ?? silentLogger).child({ component: "tunnel-client", peerAddress: options.address });
    this.stopRenewals = options.renewals?.onChange(() => this.requestRotation("certificate renewed", true));
  }

  get state(): TunnelState {
    return this.currentState;
  }

  get inFlight(): number {
    let calls = (this.current?.calls.inFlight ?? 0) + (this.next?.calls.inFlight ?? 0);
    for (const link of this.retiring) calls += link.calls.inFlight;
    return calls;
  }

  get windowSize(): number {
    return this.callWindow;
  }

  /** Times the tunnel moved to a new connection without a break. */
  get rotations(): number {
    return this.rotationCount;
  }

  /** Opens the stream now rather than on the first call (warms the connection). */
  connect(): void {
    if (this.currentState === "idle") this.openCurrent();
  }

  /** One request, one reply. Rejects with MeshError (or CallStatusError) carrying the gRPC code. */
  unary(open: OpenFrameFields, options: CallOptions = {}): Promise<CallReply> {
    const link = this.linkForCall();
    if (link instanceof MeshError) return Promise.reject(link);
    const reply = link.calls.unary(authenticated(open, link), options);
    this.callStarted(link);
    return reply;
  }

  /** One request, a stream of reply chunks; errors surface from the iteration. Leaving the loop early cancels the call. */
  stream(open: OpenFrameFields, options: CallOptions = {}): AsyncIterableIterator<Buffer> {
    const link = this.linkForCall();
    if (link instanceof MeshError) return ChunkQueue.failed(link);
    const chunks = link.calls.stream(authenticated(open, link), options);
    this.callStarted(link);
    return chunks;
  }

  /**
   * Moves the tunnel to a new connection, make-before-break. Called on certificate
   * renewal and when the connection is being retired; harmless at any time.
   */
  rotate(reason: string): void {
    this.requestRotation(reason, false);
  }

  /**
   * Gives up the streams whose peer showed a certificate `isRevoked` names (in TLS
   * or in its key share): their calls fail with `unavailable` at once and the
   * tunnel reopens with backoff, where the key agreement refuses that certificate.
   * Answers how many streams were dropped.
   */
  dropPeers(isRevoked: (serial: string) => boolean, reason: string): number {
    let dropped = 0;
    for (const link of [this.current, this.next, ...this.retiring]) {
      if (!link || link.phase === "done" || !linkPeerSerials(link).some(isRevoked)) continue;
      this.onLinkBroken(link, new Error(reason));
      dropped += 1;
    }
    return dropped;
  }

  /** Fails calls in flight with `unavailable`, ends the stream and the channel. Idempotent. */
  close(): void {
    if (this.currentState === "closed") return;
    this.setState("closed");
    this.stopRenewals?.();
    this.clearTimer(this.reopenTimer);
    this.reopenTimer = undefined;
    this.clearStreamTimer(this.rotationTimer);
    this.rotationTimer = undefined;
    this.clearStreamTimer(this.rekeyTimer);
    this.rekeyTimer = undefined;
    const error = new MeshError("unavailable", "tunnel closed");
    for (const link of [this.current, this.next, ...this.retiring]) if (link) this.dropLink(link, error);
    this.current = undefined;
    this.next = undefined;
    this.retiring.clear();
  }

  private linkForCall(): Link | MeshError {
    switch (this.currentState) {
      case "idle":
        this.openCurrent();
        break;
      case "connecting":
      case "ready":
        break;
      // Refused here, never sent: the caller may send it elsewhere even when not idempotent.
      case "unresponsive":
        return refusedBeforeDelivery(new MeshError("unavailable", "peer sidecar not answering"));
      case "backoff":
        return refusedBeforeDelivery(new MeshError("unavailable", "tunnel to peer is reconnecting"));
      case "closed":
        return refusedBeforeDelivery(new MeshError("unavailable", "tunnel closed"));
    }
    return this.current as Link;
  }

  private callStarted(link: Link): void {
    // A call on an idle stream: probe at the in-flight pace from now on.
    if (link.phase === "ready") this.scheduleLiveness(link, this.liveness.pingIntervalMs);
  }

  private openCurrent(): void {
    this.current = this.openLink();
    this.updateState();
  }

  private openLink(): Link {
    const ClientClass = this.options.service === "sidecar" ? SidecarServiceClient : PeerServiceClient;
    // Its own subchannel pool: grpc-js would otherwise hand an equal channel the
    // connection already open, the one (and the certificate) being replaced.
    const client = new ClientClass(this.options.address, this.options.credentials, {
      // Let the channel's own reconnects keep pace with ours instead of grpc-js' 1 s..120 s default.
      "grpc.initial_reconnect_backoff_ms": this.backoff.initialMs,
      "grpc.max_reconnect_backoff_ms": this.backoff.maxMs,
      ...this.options.channelOptions,
      "grpc.use_local_subchannel_pool": 1,
    });
    const keyShare = this.options.keyAgreement?.();
    let metadata = this.options.metadata ?? new Metadata();
    if (keyShare) {
      metadata = metadata.clone();
      metadata.set(keyShareMetadataKey, keyShare.bytes);
    }
    // Both services carry the same frames: {repeated CallFrame frames} each way.
    const stream = (client instanceof SidecarServiceClient ? client.call(metadata) : client.tunnel(metadata)) as TunnelStream;
    const batcher = new FrameBatcher<TunnelRequest>(stream, (frames) => ({ frames }), this.options.batcher);
    const nowMs = this.clock.nowMs();
    this.linkIds += 1;
    const link: Link = {
      id: this.linkIds,
      client,
      stream,
      batcher,
      calls: new CallMultiplexer({
        send: (frame: CallFrame) => batcher.push(frame),
        windowSize: this.callWindow,
        maxBufferedChunks: this.options.maxBufferedChunks ?? defaultMaxBufferedChunks,
        clock: this.clock,
        timers: this.timers,
        onIdle: () => this.onLinkIdle(link),
      }),
      phase: "opening",
      openedAtMs: nowMs,
      lastHeardAtMs: nowMs,
      answersPings: false,
      unresponsiveSinceMs: undefined,
      pingSequence: 0,
      pingSentAtMs: undefined,
      livenessTimer: undefined,
      livenessDueAtMs: Number.POSITIVE_INFINITY,
      halfCloseTimer: undefined,
      keyShare,
      sealer: undefined,
      awaitingKeys: undefined,
    };
    // The tunnel server sends headers as soon as it accepts the stream, so this is the peer saying "ready".
    stream.on("metadata", (headers: Metadata) => this.onLinkHeaders(link, headers));
    stream.on("data", (message: TunnelResponse) => this.onLinkData(link, message));
    stream.on("error", (error: Error) => this.onLinkBroken(link, error));
    stream.on("end", () => this.onLinkBroken(link, undefined));
    // A peer that accepts TCP but never the stream (a frozen process) must not hold calls until their deadlines.
    this.scheduleLiveness(link, this.liveness.timeoutMs);
    return link;
  }

  /** With a key share sent, the peer's answer must verify before the stream counts as ready. */
  private onLinkHeaders(link: Link, headers: Metadata): void {
    const answer = headers.get(keyShareMetadataKey)[0];
    if (!link.keyShare || !Buffer.isBuffer(answer)) return this.onLinkReady(link);
    link.awaitingKeys = [];
    link.keyShare.finish(answer, link.stream.getAuthContext()?.sslPeerCertificate).then(
      (sealer) => {
        link.sealer = sealer;
        const early = link.awaitingKeys ?? [];
        link.awaitingKeys = undefined;
        this.onLinkReady(link);
        for (const message of early) this.onLinkData(link, message);
      },
      (error: unknown) => {
        this.logger.warn({ err: error, linkId: link.id }, "peer's key share refused");
        this.onLinkBroken(link, error instanceof Error ? error : new Error("key share refused"));
      },
    );
  }

  /**
   * Rekeys every rekeyIntervalMs, and sooner when the peer's certificate would expire
   * first: at 3/4 of its remaining validity, so the new stream's handshake shows the
   * certificate the peer renewed meanwhile (at its half-life) and its replies are not
   * refused as `peer certificate expired`.
   */
  private scheduleRekey(link: Link): void {
    if (!this.options.keyAgreement) return;
    this.clearStreamTimer(this.rekeyTimer);
    const intervalMs = this.options.rekeyIntervalMs ?? defaultRekeyIntervalMs;
    const peerNotAfterMs = link.sealer?.peerCertificate?.notAfterMs;
    const beforePeerExpiryMs = peerNotAfterMs === undefined ? intervalMs : Math.max(0, Math.floor(((peerNotAfterMs - this.clock.nowMs()) * 3) / 4));
    const reason = beforePeerExpiryMs < intervalMs ? "peer certificate ageing" : "rekey";
    this.rekeyTimer = this.streamTimers.setTimeout(() => {
      this.rekeyTimer = undefined;
      this.requestRotation(reason, false);
    }, Math.min(intervalMs, beforePeerExpiryMs));
  }

  private onLinkReady(link: Link): void {
    if (link.phase !== "opening") return;
    link.phase = "ready";
    link.lastHeardAtMs = this.clock.nowMs();
    this.watchConnection(link);
    this.sendPing(link);
    if (link === this.next) {
      const previous = this.current;
      this.current = link;
      this.next = undefined;
      this.failedRotations = 0;
      this.rotationCount += 1;
      if (previous) this.retire(previous);
      this.scheduleRekey(link);
      this.logger.info({ reason: this.rotationReason, linkId: link.id }, "tunnel moved to a new connection");
      this.emit("rotated", this.rotationReason);
    } else if (link === this.current) {
      this.failedAttempts = 0;
      this.scheduleRekey(link);
      if (this.rotateWhenReady) {
        this.rotateWhenReady = false;
        this.requestRotation(this.rotationReason, true);
      }
    }
    this.updateState();
  }

  private onLinkData(link: Link, message: TunnelResponse): void {
    link.lastHeardAtMs = this.clock.nowMs();
    if (link.awaitingKeys) {
      link.awaitingKeys.push(message);
      return;
    }
    const sealer = link.sealer;
    for (const frame of message.frames) {
      if (frame.kind === CallFrame_Kind.KIND_PONG) {
        link.answersPings = true;
        if (frame.sequence === link.pingSequence) link.pingSentAtMs = undefined;
        continue;
      }
      if (sealer && isReplyFrame(frame)) {
        try {
          sealer.openReply(frame);
        } catch (error) {
          this.refuseReply(link, frame, error as MeshError);
          continue;
        }
      }
      link.calls.receive(frame);
    }
    if (link.unresponsiveSinceMs !== undefined) {
      link.unresponsiveSinceMs = undefined;
      this.logger.info({ linkId: link.id }, "peer answers again");
      this.updateState();
    }
  }

  /** A reply frame that failed its MAC or sequence check: its call fails (CANCEL goes out), nothing of it is delivered. */
  private refuseReply(link: Link, frame: CallFrame, error: MeshError): void {
    this.logger.warn({ linkId: link.id, callId: frame.callId, reason: error.message }, "reply frame refused");
    link.calls.refuse(frame.callId, error);
    this.emit("frameRefused", error.message);
  }

  /**
   * The channel leaves READY while our stream is still open: the server is
   * retiring the connection (GOAWAY, max connection age), or it is going down.
   * Either way a new connection is wanted; the stream's own end says which.
   */
  private watchConnection(link: Link): void {
    const channel = link.client.getChannel();
    const watch = (state: connectivityState): void => {
      try {
        channel.watchConnectivityState(state, Number.POSITIVE_INFINITY, () => {
          if (link.phase === "done") return;
          const now = channel.getConnectivityState(false);
          if (now === connectivityState.READY) return watch(now);
          if (link === this.current && now !== connectivityState.SHUTDOWN) this.requestRotation("connection retiring", false);
        });
      } catch {
        // The channel was closed meanwhile: nothing to watch.
      }
    };
    watch(channel.getConnectivityState(false));
  }

  private requestRotation(reason: string, restartPending: boolean): void {
    if (this.currentState === "closed") return;
    // Both the trust bundle and the certificate change in one renewal: one rotation, on the next tick.
    this.rotationReason = reason;
    this.rotationRestartsPending ||= restartPending;
    if (this.rotationTimer !== undefined) return;
    this.rotationTimer = this.streamTimers.setTimeout(() => {
      this.rotationTimer = undefined;
      const restart = this.rotationRestartsPending;
      this.rotationRestartsPending = false;
      this.startRotation(restart);
    }, 0);
  }

  private startRotation(restartPending: boolean): void {
    const current = this.current;
    // No stream: the next one opened uses the new certificate anyway.
    if (this.currentState === "closed" || !current) return;
    if (current.phase === "opening") {
      // It may be shaking hands with the old certificate: move once it is up.
      this.rotateWhenReady = true;
      return;
    }
    if (current.phase !== "ready") return;
    if (this.next) {
      // A renewal while a new stream opens: it may have shaken hands with the old certificate.
      if (!restartPending) return;
      this.dropLink(this.next, new MeshError("unavailable", "tunnel rotation restarted"));
    }
    this.next = this.openLink();
  }

  /** A replaced link: no new calls; its calls in flight finish, then it half-closes. */
  private retire(link: Link): void {
    link.phase = "draining";
    this.retiring.add(link);
    this.onLinkIdle(link);
  }

  private onLinkIdle(link: Link): void {
    if (link.phase !== "draining" || link.calls.inFlight > 0) return;
    this.stopLiveness(link);
    link.batcher.flush();
    // Half-close: the peer answers what is running (nothing) and ends the stream.
    link.stream.end();
    link.halfCloseTimer = this.streamTimers.setTimeout(() => this.dropLink(link, new MeshError("unavailable", "tunnel retired")), halfCloseGraceMs);
  }

  private onLinkBroken(link: Link, error: Error | undefined): void {
    if (link.phase === "done") return;
    const draining = link.phase === "draining";
    const lostCalls = link.calls.inFlight;
    this.dropLink(link, new MeshError("unavailable", "tunnel to peer broke"));
    if (draining) {
      if (lostCalls > 0) this.logger.warn({ err: error, lostCalls, linkId: link.id }, "replaced tunnel stream broke before its calls finished");
      return;
    }
    if (link === this.next) {
      this.next = undefined;
      this.retryRotation(error);
      return;
    }
    if (link !== this.current) return;
    this.current = undefined;
    if (this.next) {
      // The connection went while its successor was opening: carry on with that one.
      this.current = this.next;
      this.next = undefined;
      if (lostCalls > 0) this.logger.warn({ err: error, lostCalls }, "tunnel stream broke during rotation");
      this.updateState();
      return;
    }
    const delayMs = backoffDelayMs(this.failedAttempts, this.backoff, this.random);
    this.failedAttempts += 1;
    this.logger.warn({ err: error, lostCalls, reopenInMs: delayMs }, "tunnel stream broke");
    this.updateState();
    this.reopenTimer = this.timers.setTimeout(() => {
      this.reopenTimer = undefined;
      if (this.currentState === "backoff") this.openCurrent();
    }, delayMs);
  }

  /** A new stream failed to open while the old one still works: try again later, the old one serves meanwhile. */
  private retryRotation(error: Error | undefined): void {
    const delayMs = backoffDelayMs(this.failedRotations, this.backoff, this.random);
    this.failedRotations += 1;
    this.logger.debug({ err: error, retryInMs: delayMs }, "new tunnel stream failed to open");
    this.clearStreamTimer(this.rotationTimer);
    this.rotationTimer = this.streamTimers.setTimeout(() => {
      this.rotationTimer = undefined;
      this.startRotation(false);
    }, delayMs);
  }

  /**
   * Ends a link for good: its calls fail with `error` (no CANCEL frames: cancelling
   * the stream tells the peer to stop them all), its stream and channel close.
   */
  private dropLink(link: Link, error: MeshError): void {
    if (link.phase === "done") return;
    link.phase = "done";
    this.stopLiveness(link);
    this.clearStreamTimer(link.halfCloseTimer);
    this.retiring.delete(link);
    link.calls.failAll(error);
    link.batcher.close();
    link.stream.cancel();
    link.client.close();
  }

  private sendPing(link: Link): void {
    link.pingSequence += 1;
    link.pingSentAtMs = this.clock.nowMs();
    link.batcher.push(pingFrame(link.pingSequence));
    this.scheduleLiveness(link, this.livenessInterval(link));
  }

  private livenessInterval(link: Link): number {
    const busy = link.calls.inFlight > 0 || link.unresponsiveSinceMs !== undefined;
    return busy ? this.liveness.pingIntervalMs : this.liveness.idlePingIntervalMs;
  }

  /** Runs the liveness check of `link` in `delayMs`, or sooner if one is already due sooner. */
  private scheduleLiveness(link: Link, delayMs: number): void {
    const dueAtMs = this.clock.nowMs() + delayMs;
    if (link.livenessTimer !== undefined && link.livenessDueAtMs <= dueAtMs) return;
    this.clearStreamTimer(link.livenessTimer);
    link.livenessDueAtMs = dueAtMs;
    link.livenessTimer = this.streamTimers.setTimeout(() => {
      link.livenessTimer = undefined;
      link.livenessDueAtMs = Number.POSITIVE_INFINITY;
      this.checkLiveness(link, this.clock.nowMs() - dueAtMs);
    }, delayMs);
  }

  /**
   * `lateMs`: how late this check runs. Later than a ping interval means our own
   * event loop stalled (a GC pause, a starved CPU): the peer's answer may be unread
   * or our ping unsent, so its silence proves nothing yet and the deadline starts over.
   */
  private checkLiveness(link: Link, lateMs: number): void {
    const nowMs = this.clock.nowMs();
    if (link.phase === "done") return;
    const stalled = lateMs > this.liveness.pingIntervalMs;
    if (link.phase === "opening") {
      if (stalled) link.openedAtMs = nowMs - this.liveness.timeoutMs + this.liveness.pingIntervalMs;
      if (nowMs - link.openedAtMs >= this.liveness.timeoutMs) this.onLinkBroken(link, new Error("peer did not accept the stream in time"));
      else this.scheduleLiveness(link, link.openedAtMs + this.liveness.timeoutMs - nowMs);
      return;
    }
    const sentAtMs = link.pingSentAtMs;
    if (sentAtMs !== undefined && link.lastHeardAtMs < sentAtMs) {
      if (stalled) link.pingSentAtMs = nowMs;
      const waitedMs = nowMs - (link.pingSentAtMs ?? nowMs);
      if (waitedMs < this.liveness.timeoutMs) {
        this.scheduleLiveness(link, Math.min(this.liveness.pingIntervalMs, this.liveness.timeoutMs - waitedMs));
        return;
      }
      if (!link.answersPings) {
        // A peer that never answered a ping may predate them: its silence proves nothing, only its stream breaking does.
        link.pingSentAtMs = undefined;
        this.scheduleLiveness(link, this.liveness.idlePingIntervalMs);
        return;
      }
      // Timers run before the loop reads sockets: let it read what arrived, then judge.
      setImmediate(() => this.judgeSilence(link, sentAtMs));
      return;
    }
    this.probe(link, nowMs);
  }

  private judgeSilence(link: Link, sentAtMs: number): void {
    if (link.phase === "done") return;
    const nowMs = this.clock.nowMs();
    if (link.pingSentAtMs === sentAtMs && link.lastHeardAtMs < sentAtMs) {
      this.markUnresponsive(link, nowMs);
      if (nowMs - (link.unresponsiveSinceMs ?? nowMs) >= this.liveness.abandonAfterMs) {
        this.onLinkBroken(link, new Error("peer unresponsive for too long"));
        return;
      }
    }
    this.probe(link, nowMs);
  }

  /** Pings a stream that has been quiet for an interval (frames from the peer prove it alive as well as a PONG). */
  private probe(link: Link, nowMs: number): void {
    if (link.phase === "done" || (link.phase === "draining" && link.calls.inFlight === 0)) return;
    const quietForMs = nowMs - link.lastHeardAtMs;
    const intervalMs = this.livenessInterval(link);
    if (link.unresponsiveSinceMs === undefined && quietForMs < intervalMs) {
      this.scheduleLiveness(link, intervalMs - quietForMs);
      return;
    }
    this.sendPing(link);
  }

  private markUnresponsive(link: Link, nowMs: number): void {
    if (link.unresponsiveSinceMs !== undefined) return;
    link.unresponsiveSinceMs = nowMs;
    const lostCalls = link.calls.inFlight;
    // CANCEL goes out too: should the peer wake up, it stops work nobody waits for.
    link.calls.abandonAll(new MeshError("unavailable", "peer sidecar not answering"));
    this.logger.warn({ lostCalls, silentForMs: nowMs - link.lastHeardAtMs, linkId: link.id }, "peer not answering pings; tunnel marked unresponsive");
    this.updateState();
  }

  private stopLiveness(link: Link): void {
    this.clearStreamTimer(link.livenessTimer);
    link.livenessTimer = undefined;
    link.livenessDueAtMs = Number.POSITIVE_INFINITY;
  }

  private updateState(): void {
    if (this.currentState === "closed") return;
    const link = this.current;
    if (!link) return this.setState(this.reopenTimer !== undefined || this.failedAttempts > 0 ? "backoff" : "idle");
    if (link.phase === "opening") return this.setState("connecting");
    this.setState(link.unresponsiveSinceMs !== undefined ? "unresponsive" : "ready");
  }

  private setState(state: TunnelState): void {
    if (this.currentState === state) return;
    this.currentState = state;
    this.logger.debug({ state }, "tunnel state");
    this.emit("stateChange", state);
  }

  private clearTimer(handle: TimerHandle | undefined): void {
    if (handle !== undefined) this.timers.clearTimeout(handle);
  }

  private clearStreamTimer(handle: TimerHandle | undefined): void {
    if (handle !== undefined) this.streamTimers.clearTimeout(handle);
  }
}

/** The peer's certificate serials on a link: its TLS one and the one its key share was checked with. */
function linkPeerSerials(link: Link): string[] {
  const serials: string[] = [];
  const tlsSerial = link.stream.getAuthContext()?.sslPeerCertificate?.serialNumber;
  if (tlsSerial) serials.push(normalizeSerial(tlsSerial));
  const keyed = link.sealer?.peerCertificate?.serial;
  if (keyed) serials.push(keyed);
  return serials;
}

function authenticated(open: OpenFrameFields, link: Link): OpenFrameFields {
  return open.authenticate === undefined ? open : { ...open, envelope: open.authenticate(link.sealer) };
}
