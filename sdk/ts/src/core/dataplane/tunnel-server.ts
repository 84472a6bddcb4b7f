import { Metadata, type Server, type ServerDuplexStream, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type FrameOpener, isReplyFrame, keyShareMetadataKey } from "../frame-auth.js";
import { normalizeSerial } from "../tls/peer-verifier.js";
import { MeshError } from "../mesh-error.js";
import {
  type CallFrame,
  CallFrame_Kind,
  type Invocation,
  type PeerServiceServer,
  PeerServiceService,
  type TunnelRequest,
  type TunnelResponse,
} from "../../gen/agentmesh/v1/agent.js";
import { statusOfError } from "./call-status.js";
import { CallCancellation, type CallSignal } from "./call-signal.js";
import { type DispatchOptions, type DispatchOutcome, collectChunks, isAsyncIterable } from "./dispatch.js";
import { FrameBatcher, type FrameBatcherOptions } from "./frame-batcher.js";
import { type CallReply, dataFrame, decodeOpenInvocation, endFrame, pongFrame } from "./frames.js";
import { silentLogger } from "./silent-logger.js";

type TunnelCall = ServerDuplexStream<TunnelRequest, TunnelResponse>;

/** Who is at the other end of a tunnel; the identity layer reads the SPIFFE ID from the TLS peer certificate. */
export interface PeerInfo {
  address: string;
  authContext: ReturnType<TunnelCall["getAuthContext"]>;
  /** The stream's frame key, when the caller opened it with a key share (docs/signing.md §8). */
  frames?: FrameOpener;
}

/** Answers a caller's key share (the receiver's half of docs/signing.md §8). */
export type TunnelKeyAgreement = (clientKeyShare: Uint8Array, authContext: PeerInfo["authContext"]) => Promise<{ bytes: Buffer; opener: FrameOpener }>;

/** What the sidecar plugs into the tunnel server: admission of a call, then handing it to the local agent. */
export interface InboundHandler {
  /**
   * Checks an OPEN frame and returns its invocation: signature, timestamp,
   * nonce, allow rules, rate limits. Throw a MeshError to refuse. Without it
   * the envelope's payload is decoded unchecked (decodeOpenInvocation).
   */
  verify?(open: CallFrame, peer: PeerInfo): Promise<Invocation> | Invocation;
  dispatch(invocation: Invocation, instanceId: string, options: DispatchOptions): DispatchOutcome;
}

export interface TunnelServerOptions {
  handler: InboundHandler;
  /** Calls running at once on one tunnel; beyond it OPENs are answered RESOURCE_EXHAUSTED. */
  maxConcurrentCallsPerTunnel?: number;
  batcher?: FrameBatcherOptions;
  logger?: Logger;
  /** Streams that open with a key share get a frame key; without this option key shares are ignored. */
  keyAgreement?: TunnelKeyAgreement;
}

const defaultMaxConcurrentCallsPerTunnel = 1024;

/**
 * The PeerService implementation: runs each OPEN frame of each tunnel through
 * the handler and writes DATA/END frames back under the same call id. Errors
 * the caller may see (MeshError, CallStatusError) travel as END frames with
 * their code and message; anything else is logged with the call id and
 * answered INTERNAL with a generic message.
 */
export class TunnelServer {
  readonly implementation: PeerServiceServer;
  private readonly tunnels = new Set<InboundTunnel>();
  private readonly logger: Logger;
  private draining = false;

  constructor(private readonly options: TunnelServerOptions) {
    this.logger = (options.logger ?? silentLogger).child({ component: "tunnel-server" });
    this.implementation = { tunnel: (call) => this.accept(call) };
  }

  addTo(server: Server): void {
    server.addService(PeerServiceService, this.implementation);
  }

  get activeTunnels(): number {
    return this.tunnels.size;
  }

  get activeCalls(): number {
    let calls = 0;
    for (const tunnel of this.tunnels) calls += tunnel.activeCalls;
    return calls;
  }

  /** Refuses new calls (UNAVAILABLE, so callers go elsewhere), lets running ones finish, then ends every tunnel. */
  async drain(): Promise<void> {
    this.draining = true;
    await Promise.all([...this.tunnels].map((tunnel) => tunnel.finish()));
  }

  /**
   * Ends the tunnels whose caller showed a certificate `isRevoked` names (at the
   * handshake, or in its key share), with UNAUTHENTICATED and `reason`; their
   * calls are aborted. Answers how many were closed.
   */
  closePeers(isRevoked: (serial: string) => boolean, reason: string): number {
    let closed = 0;
    for (const tunnel of [...this.tunnels]) {
      if (!tunnel.peerSerials.some(isRevoked)) continue;
      tunnel.refuse(reason);
      closed += 1;
    }
    return closed;
  }

  /** Aborts running calls and ends every tunnel now. */
  close(): void {
    this.draining = true;
    for (const tunnel of this.tunnels) tunnel.abort();
  }

  /**
   * Serves one stream of frames. PeerService.Tunnel streams come here, and so do
   * SidecarService.Call streams of local SDK clients (the same frames, another service).
   */
  accept(call: TunnelCall): void {
    if (this.draining) {
      // Refused before the headers, so the client does not take it for a healthy peer and reset its backoff.
      call.emit("error", Object.assign(new Error("peer sidecar draining"), { code: status.UNAVAILABLE, details: "peer sidecar draining" }));
      return;
    }
    const keyShare = this.options.keyAgreement ? call.metadata.get(keyShareMetadataKey)[0] : undefined;
    if (this.options.keyAgreement && Buffer.isBuffer(keyShare)) {
      this.options.keyAgreement(keyShare, call.getAuthContext()).then(
        ({ bytes, opener }) => {
          // The caller gave up while we checked its key share: nothing to serve.
          if (call.cancelled) return;
          const headers = new Metadata();
          headers.set(keyShareMetadataKey, bytes);
          this.open(call, headers, opener);
        },
        (error: unknown) => {
          const details = error instanceof MeshError ? error.message : "key share refused";
          if (!(error instanceof MeshError)) this.logger.error({ err: error }, "key agreement failed");
          call.emit("error", Object.assign(new Error(details), { code: status.UNAUTHENTICATED, details }));
        },
      );
      return;
    }
    this.open(call, new Metadata(), undefined);
  }

  private open(call: TunnelCall, headers: Metadata, frames: FrameOpener | undefined): void {
    const tunnel = new InboundTunnel(call, headers, frames, {
      handler: this.options.handler,
      maxConcurrentCalls: this.options.maxConcurrentCallsPerTunnel ?? defaultMaxConcurrentCallsPerTunnel,
      batcher: this.options.batcher,
      logger: this.logger.child({ peerAddress: call.getPeer() }),
      isDraining: () => this.draining,
      onClosed: () => this.tunnels.delete(tunnel),
    });
    this.tunnels.add(tunnel);
  }
}

interface InboundTunnelOptions {
  handler: InboundHandler;
  maxConcurrentCalls: number;
  batcher: FrameBatcherOptions | undefined;
  logger: Logger;
  isDraining(): boolean;
  onClosed(): void;
}

/** One accepted Tunnel stream and the calls running on it. */
class InboundTunnel {
  private readonly running = new Map<number, CallCancellation>();
  private readonly batcher: FrameBatcher<TunnelResponse>;
  private readonly peer: PeerInfo;
  private finishing = false;
  private closed = false;
  private readonly finishedWaiters: Array<() => void> = [];
  /** The caller's certificate serials: its TLS one and, when it differs, the one its key share was checked with. */
  readonly peerSerials: string[];

  constructor(
    private readonly call: TunnelCall,
    headers: Metadata,
    frames: FrameOpener | undefined,
    private readonly options: InboundTunnelOptions,
  ) {
    this.peer = { address: call.getPeer(), authContext: call.getAuthContext(), ...(frames ? { frames } : {}) };
    const tlsSerial = this.peer.authContext.sslPeerCertificate?.serialNumber;
    this.peerSerials = [...(tlsSerial ? [normalizeSerial(tlsSerial)] : []), ...(frames && frames.peerSerial !== "" ? [frames.peerSerial] : [])];
    this.batcher = new FrameBatcher(call, (frames) => ({ frames }), options.batcher);
    // Headers now, not with the first reply: the client takes them as "tunnel ready".
    call.sendMetadata(headers);
    call.on("data", (message: TunnelRequest) => {
      for (const frame of message.frames) this.receive(frame);
    });
    // The client half-closed: no more OPENs will come, answer what is running.
    call.on("end", () => void this.finish());
    call.on("cancelled", () => this.onGone());
    call.on("error", () => this.onGone());
    call.on("close", () => this.onGone());
  }

  get activeCalls(): number {
    return this.running.size;
  }

  /** Stops taking calls; resolves once running calls have answered and the stream is ended. */
  finish(): Promise<void> {
    this.finishing = true;
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.finishedWaiters.push(resolve);
      this.endWhenIdle();
    });
  }

  abort(): void {
    this.abortAll("tunnel closed");
    this.endStream();
  }

  /** Ends the stream with UNAUTHENTICATED at once (the caller's certificate was revoked); running calls are aborted. */
  refuse(reason: string): void {
    if (this.closed) return;
    this.options.logger.warn({ reason }, "closing tunnel");
    this.batcher.close();
    this.call.emit("error", Object.assign(new Error(reason), { code: status.UNAUTHENTICATED, details: reason }));
    this.onGone();
  }

  /**
   * Every frame to the caller goes through here, in the order it is written: on a
   * stream with a frame key, DATA and END frames get the next reply sequence and a MAC.
   */
  private send(frame: CallFrame): void {
    if (this.peer.frames && isReplyFrame(frame)) this.peer.frames.sealReply(frame);
    this.batcher.push(frame);
  }

  private receive(frame: CallFrame): void {
    switch (frame.kind) {
      case CallFrame_Kind.KIND_OPEN:
        this.open(frame);
        return;
      case CallFrame_Kind.KIND_CANCEL:
        this.running.get(frame.callId)?.abort(new MeshError("cancelled", "call cancelled by caller"));
        return;
      case CallFrame_Kind.KIND_PING:
        // At once, whatever else is queued: the caller measures our event loop, not our agents.
        this.send(pongFrame(frame.sequence));
        return;
      default:
        this.options.logger.debug({ callId: frame.callId, kind: frame.kind }, "ignored frame");
    }
  }

  private open(frame: CallFrame): void {
    const callId = frame.callId;
    if (this.running.has(callId)) {
      this.options.logger.warn({ callId }, "duplicate call id on tunnel");
      return;
    }
    if (this.finishing || this.options.isDraining()) {
      this.send(endFrame(callId, status.UNAVAILABLE, "peer sidecar draining", true));
      return;
    }
    if (this.running.size >= this.options.maxConcurrentCalls) {
      this.send(endFrame(callId, status.RESOURCE_EXHAUSTED, "tunnel concurrency limit reached", true));
      return;
    }
    const cancellation = new CallCancellation();
    this.running.set(callId, cancellation);
    void this.run(frame, cancellation).finally(() => {
      this.running.delete(callId);
      if (this.finishing) this.endWhenIdle();
    });
  }

  private async run(open: CallFrame, signal: CallSignal): Promise<void> {
    const callId = open.callId;
    try {
      const { handler } = this.options;
      const invocation = handler.verify === undefined ? decodeOpenInvocation(open) : await handler.verify(open, this.peer);
      if (signal.aborted) return;
      const outcome = handler.dispatch(invocation, open.instanceId, { signal, streaming: open.streaming });
      if (isAsyncIterable(outcome)) {
        if (open.streaming) await this.sendChunks(callId, outcome, signal);
        else this.sendReply(callId, false, { payload: await collectChunks(outcome, signal), contentType: "" }, signal);
        return;
      }
      const reply = await outcome;
      this.sendReply(callId, open.streaming, reply, signal);
    } catch (error) {
      // A cancelled call has nobody waiting for its END.
      if (signal.aborted) return;
      this.send(this.endFrameFor(callId, error));
    }
  }

  private sendReply(callId: number, streaming: boolean, reply: CallReply, signal: CallSignal): void {
    if (signal.aborted) return;
    const { payload, contentType } = reply;
    if (streaming) {
      this.send(dataFrame(callId, payload, { sequence: 1, contentType }));
      this.send(endFrame(callId));
    } else {
      this.send(dataFrame(callId, payload, { end: true, contentType, instanceId: reply.instanceId, version: reply.version }));
    }
  }

  private async sendChunks(callId: number, chunks: AsyncIterable<Buffer>, signal: CallSignal): Promise<void> {
    let sequence = 0;
    for await (const chunk of chunks) {
      if (signal.aborted) return;
      sequence += 1;
      this.send(dataFrame(callId, chunk, { sequence }));
      // A fast producer waits for the peer to read instead of growing our queue.
      if (this.batcher.isBlocked) await this.batcher.whenWritable();
    }
    if (!signal.aborted) this.send(endFrame(callId));
  }

  private endFrameFor(callId: number, error: unknown): CallFrame {
    const known = statusOfError(error);
    if (known !== undefined) return endFrame(callId, known.code, known.message, known.refusedBeforeDelivery);
    this.options.logger.error({ err: error, callId }, "inbound call failed");
    return endFrame(callId, status.INTERNAL, `internal error, call ${callId}`);
  }

  private endWhenIdle(): void {
    if (this.running.size === 0) this.endStream();
  }

  private endStream(): void {
    if (this.closed) return;
    this.batcher.flush();
    if (this.batcher.queuedFrames > 0) {
      void this.batcher.whenWritable().then(() => this.endStream());
      return;
    }
    this.call.end();
    this.onGone();
  }

  private onGone(): void {
    if (this.closed) return;
    this.closed = true;
    this.batcher.close();
    this.abortAll("tunnel closed");
    this.options.onClosed();
    for (const resolve of this.finishedWaiters.splice(0)) resolve();
  }

  private abortAll(reason: string): void {
    for (const controller of this.running.values()) controller.abort(new MeshError("unavailable", reason));
  }
}
