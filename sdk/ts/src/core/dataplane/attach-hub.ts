import { EventEmitter } from "node:events";
import { type ServerDuplexStream, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type Clock, systemClock } from "../clock.js";
import { type LivenessTiming, LivenessTracker } from "../liveness.js";
import { MeshError, invalidArgument } from "../mesh-error.js";
import { type AttachHello, type AttachRequest, type AttachResponse, type CallFrame, CallFrame_Kind, type Invocation } from "../../gen/agentmesh/v1/agent.js";
import { CallMultiplexer, type CallOptions } from "./call-multiplexer.js";
import { statusOfError } from "./call-status.js";
import { ChunkQueue } from "./chunk-queue.js";
import { FrameBatcher } from "./frame-batcher.js";
import { type CallReply, pingFrame } from "./frames.js";
import { silentLogger } from "./silent-logger.js";
import { type TimerHandle, type Timers, systemTimers } from "./timers.js";

type AttachCall = ServerDuplexStream<AttachRequest, AttachResponse>;

export interface AttachHubOptions {
  /** Calls in flight to one agent at most; beyond it dispatch fails with overLimit. */
  maxInFlightPerAgent?: number;
  maxBufferedChunks?: number;
  /**
   * Decides whether a hello may attach (for example: is this an instance the
   * supervisor started?). Throw a MeshError to refuse; the agent's stream ends with its code.
   */
  admit?(hello: AttachHello, peerAddress: string): Promise<void> | void;
  /**
   * How to ping this agent (docs/protocol.md, "Attach stream"); undefined sends no
   * pings and never finds it hung. Asked once per attachment, after admit.
   */
  liveness?(instanceId: string): LivenessTiming | undefined;
  clock?: Clock;
  timers?: Timers;
  logger?: Logger;
}

const defaultMaxInFlightPerAgent = 1024;
const defaultMaxBufferedChunks = 1024;

interface AttachSession {
  readonly call: AttachCall;
  helloSeen: boolean;
  gone: boolean;
  attachment: Attachment | undefined;
  batcher?: FrameBatcher<AttachResponse>;
}

interface Attachment {
  readonly instanceId: string;
  readonly call: AttachCall;
  readonly calls: CallMultiplexer;
  readonly batcher: FrameBatcher<AttachResponse>;
  liveness: Liveness | undefined;
}

interface Liveness {
  readonly tracker: LivenessTracker;
  timer: TimerHandle | undefined;
  sequence: number;
}

/**
 * The sidecar's side of SidecarService.Attach: each SDK agent holds one stream,
 * says hello with its instance id, and receives its invocations as `call`
 * frames, answering with `reply` frames under the same call id. The stream is
 * also the agent's liveness: it breaks the moment the process dies, which is
 * the sidecar's crash signal. A process that is alive but frozen keeps its
 * stream open, so the hub also pings each agent (`liveness` option) and says
 * when one stops answering and when it answers again.
 *
 * Events: 'attached' (instanceId: string, hello: AttachHello);
 *         'detached' (instanceId: string);
 *         'hung' (instanceId: string, silentMs: number): nothing from the agent for the deadline;
 *         'responsive' (instanceId: string): a hung agent answered again.
 */
export class AttachHub extends EventEmitter {
  /** The Attach handler, for the SidecarService implementation on the local port. */
  readonly attach: (call: AttachCall) => void;
  private readonly attachments = new Map<string, Attachment>();
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly timers: Timers;

  constructor(private readonly options: AttachHubOptions = {}) {
    super();
    this.logger = (options.logger ?? silentLogger).child({ component: "attach-hub" });
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.attach = (call) => this.accept(call);
  }

  isAttached(instanceId: string): boolean {
    return this.attachments.has(instanceId);
  }

  attachedInstances(): string[] {
    return [...this.attachments.keys()];
  }

  inFlight(instanceId: string): number {
    return this.attachments.get(instanceId)?.calls.inFlight ?? 0;
  }

  /** True while an attached agent is past its ping deadline. */
  isHung(instanceId: string): boolean {
    return this.attachments.get(instanceId)?.liveness?.tracker.hung ?? false;
  }

  /** Hands an invocation to an attached agent; fails fast with `unavailable` when it is not attached. */
  dispatch(instanceId: string, invocation: Invocation, options: CallOptions = {}): Promise<CallReply> {
    const attachment = this.attachments.get(instanceId);
    if (attachment === undefined) return Promise.reject(notAttached());
    return attachment.calls.unary({ instanceId, invocation }, options);
  }

  /** Like dispatch, for a streamed reply. */
  dispatchStream(instanceId: string, invocation: Invocation, options: CallOptions = {}): AsyncIterableIterator<Buffer> {
    const attachment = this.attachments.get(instanceId);
    if (attachment === undefined) return ChunkQueue.failed(notAttached());
    return attachment.calls.stream({ instanceId, invocation }, options);
  }

  /** Ends an agent's stream (it is being stopped); its calls in flight fail with `unavailable`. */
  detach(instanceId: string): void {
    const attachment = this.attachments.get(instanceId);
    if (attachment === undefined) return;
    this.remove(attachment);
    attachment.call.end();
  }

  close(): void {
    for (const instanceId of [...this.attachments.keys()]) this.detach(instanceId);
  }

  private accept(call: AttachCall): void {
    const session: AttachSession = { call, helloSeen: false, gone: false, attachment: undefined };
    call.on("data", (request: AttachRequest) => this.receive(session, request));
    const onGone = (): void => {
      session.gone = true;
      session.batcher?.close();
      if (session.attachment !== undefined) this.remove(session.attachment);
    };
    call.on("cancelled", onGone);
    call.on("error", onGone);
    call.on("close", onGone);
    // The agent half-closed: it is leaving. Finish our side too.
    call.on("end", () => {
      onGone();
      call.end();
    });
  }

  private receive(session: AttachSession, request: AttachRequest): void {
    const message = request.msg;
    const attachment = session.attachment;
    if (attachment !== undefined) {
      // Any message proves the agent's loop runs: a PONG, or replies to calls.
      if (attachment.liveness?.tracker.heard(this.clock.nowMs())) {
        this.logger.info({ instanceId: attachment.instanceId }, "agent answers again");
        this.emit("responsive", attachment.instanceId);
      }
      if (message?.$case === "reply") receiveReply(attachment, message.value);
      for (const frame of request.replies) receiveReply(attachment, frame);
      return;
    }
    if (session.helloSeen) return;
    session.helloSeen = true;
    if (message?.$case !== "hello" || message.value.instanceId === "") {
      endWithError(session.call, invalidArgument("first attach message must be a hello with an instance id"));
      return;
    }
    void this.admit(session, message.value);
  }

  private async admit(session: AttachSession, hello: AttachHello): Promise<void> {
    const { call } = session;
    const { instanceId } = hello;
    try {
      await this.options.admit?.(hello, call.getPeer());
    } catch (error) {
      this.logger.warn({ err: error, instanceId }, "attach refused");
      endWithError(call, error);
      return;
    }
    if (session.gone) return;
    if (this.attachments.has(instanceId)) {
      endWithError(call, new MeshError("alreadyExists", "instance already attached"));
      return;
    }
    // Frames written in the same tick go to the agent in one message.
    const batcher = new FrameBatcher<AttachResponse>(call, (frames) => ({ msg: undefined, calls: frames }));
    session.batcher = batcher;
    const attachment: Attachment = {
      instanceId,
      call,
      batcher,
      liveness: undefined,
      calls: new CallMultiplexer({
        send: (frame) => batcher.push(frame),
        windowSize: this.options.maxInFlightPerAgent ?? defaultMaxInFlightPerAgent,
        windowFullMessage: "agent in-flight limit reached",
        maxBufferedChunks: this.options.maxBufferedChunks ?? defaultMaxBufferedChunks,
        clock: this.clock,
        timers: this.timers,
      }),
    };
    session.attachment = attachment;
    this.attachments.set(instanceId, attachment);
    call.write({ msg: { $case: "welcome", value: { instanceId } }, calls: [] });
    this.logger.info({ instanceId }, "agent attached");
    this.startPinging(attachment);
    this.emit("attached", instanceId, hello);
  }

  private startPinging(attachment: Attachment): void {
    const timing = this.options.liveness?.(attachment.instanceId);
    if (timing === undefined) return;
    const liveness: Liveness = { tracker: new LivenessTracker(timing, this.clock.nowMs()), timer: undefined, sequence: 0 };
    attachment.liveness = liveness;
    const tick = (): void => {
      if (this.attachments.get(attachment.instanceId) !== attachment) return;
      const verdict = liveness.tracker.tick(this.clock.nowMs());
      // A stream the agent does not read is already full: more pings would only queue.
      if (verdict.probe && !attachment.batcher.isBlocked) {
        liveness.sequence += 1;
        attachment.batcher.push(pingFrame(liveness.sequence));
      }
      if (verdict.becameHung) {
        this.logger.warn({ instanceId: attachment.instanceId, silentMs: verdict.silentMs, inFlight: attachment.calls.inFlight }, "agent stopped answering pings");
        this.emit("hung", attachment.instanceId, verdict.silentMs);
      }
      liveness.timer = this.timers.setTimeout(tick, timing.probeIntervalMs);
    };
    liveness.timer = this.timers.setTimeout(tick, timing.probeIntervalMs);
  }

  private remove(attachment: Attachment): void {
    if (this.attachments.get(attachment.instanceId) !== attachment) return;
    this.attachments.delete(attachment.instanceId);
    if (attachment.liveness?.timer !== undefined) this.timers.clearTimeout(attachment.liveness.timer);
    attachment.calls.failAll(new MeshError("unavailable", "agent detached"));
    this.logger.info({ instanceId: attachment.instanceId }, "agent detached");
    this.emit("detached", attachment.instanceId);
  }
}

/** PONGs end here (the tracker has seen the message); everything else belongs to a call. */
function receiveReply(attachment: Attachment, frame: CallFrame): void {
  if (frame.kind === CallFrame_Kind.KIND_PONG || frame.kind === CallFrame_Kind.KIND_PING) return;
  attachment.calls.receive(frame);
}

function notAttached(): MeshError {
  return new MeshError("unavailable", "agent not attached");
}

/** Ends a server stream with the error's status (MeshError) or INTERNAL. */
function endWithError(call: AttachCall, error: unknown): void {
  const known = statusOfError(error) ?? { code: status.INTERNAL, message: "attach failed" };
  call.emit("error", Object.assign(new Error(known.message), { code: known.code, details: known.message }));
}
