import { type ClientDuplexStream, Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { Backoff } from "../core/backoff.js";
import { FrameBatcher } from "../core/dataplane/frame-batcher.js";
import { dataFrame, endFrame, pongFrame } from "../core/dataplane/frames.js";
import { MeshError } from "../core/mesh-error.js";
import { type AttachRequest, type AttachResponse, type CallFrame, CallFrame_Kind, type Invocation, SidecarServiceClient } from "../gen/agentmesh/v1/agent.js";

/** What a handler returns: bytes (or a string, sent as UTF-8) for unary calls. */
export type HandlerResult = Uint8Array | string;

/** What a handler knows about the call besides its payload. */
export interface InvocationContext {
  /**
   * The call as the sidecar delivered it: `capability`, the `version` it was routed
   * to, `caller` (the SPIFFE ID the sidecar verified), `deadlineMs` (Unix epoch ms,
   * 0 = none), `metadata` and `traceparent`.
   */
  invocation: Invocation;
  /** Aborted when the caller cancels or its deadline passes: stop the work. */
  signal: AbortSignal;
}

/**
 * Answers one call. Return bytes or a string (sent as UTF-8). Throw a
 * {@link MeshError} to answer its gRPC code and message; anything else thrown
 * answers `INTERNAL` "agent failed" and goes to {@link ServeOptions.onError}.
 */
export type UnaryHandler = (payload: Buffer, context: InvocationContext) => Promise<HandlerResult> | HandlerResult;

/** Answers one call with a stream of chunks (for example tokens as they are produced). */
export type StreamHandler = (payload: Buffer, context: InvocationContext) => AsyncIterable<HandlerResult>;

/** What {@link serve} serves and where. */
export interface ServeOptions {
  /** Unary handlers by capability name (`text.word-stats`). */
  handlers?: Record<string, UnaryHandler>;
  /** Streaming handlers by capability name; used when the caller asks for a stream. */
  streamHandlers?: Record<string, StreamHandler>;
  /** The sidecar's local address. Defaults to AGENTMESH_SIDECAR_ADDR. */
  sidecarAddress?: string;
  /** The instance id the sidecar gave this process. Defaults to AGENTMESH_INSTANCE_ID. */
  instanceId?: string;
  /** Unexpected handler failures and stream errors, for logging; never answered to callers. */
  onError?: (error: unknown) => void;
  /**
   * Without a sidecar for this long (it died, or no longer knows this instance),
   * the agent is an orphan: `onOrphaned` runs, by default exiting the process so
   * a SIGKILLed sidecar leaves no agents behind. Default 15 s; 0 disables.
   */
  orphanTimeoutMs?: number;
  onOrphaned?: () => void;
}

/** A running {@link serve}. */
export interface Serving {
  /** Resolves once the sidecar welcomed the stream: the agent is READY and routed to. */
  ready: Promise<void>;
  /** Closes the stream to the sidecar; calls still running are cancelled. */
  close(): void;
}

/**
 * Serves an agent's capabilities over ONE stream to its sidecar (SidecarService.Attach,
 * docs/protocol.md):
 * no listening port, and the sidecar sees the agent's death the moment the stream
 * breaks. Reconnects with backoff if the sidecar restarts. Answers the sidecar's
 * PINGs, so a frozen process (its event loop blocked or stopped) is found hung
 * and routed around; a handler that blocks the event loop for more than 1.5
 * heartbeat intervals looks the same.
 *
 * @example
 * ```ts
 * import { serve, MeshError } from "agentmesh/sdk";
 *
 * serve({
 *   handlers: {
 *     "text.shout": (payload) => payload.toString().toUpperCase(),
 *     "text.check": (payload) => {
 *       if (payload.length === 0) throw new MeshError("invalidArgument", "payload: required");
 *       return "ok";
 *     },
 *   },
 * });
 * ```
 * @throws Error when AGENTMESH_SIDECAR_ADDR or AGENTMESH_INSTANCE_ID is missing (not run by a sidecar).
 */
export function serve(options: ServeOptions): Serving {
  const address = options.sidecarAddress ?? process.env.AGENTMESH_SIDECAR_ADDR;
  const instanceId = options.instanceId ?? process.env.AGENTMESH_INSTANCE_ID ?? "";
  if (!address) throw new Error("AGENTMESH_SIDECAR_ADDR is not set: run the agent under an agentmesh sidecar");
  if (!instanceId) throw new Error("AGENTMESH_INSTANCE_ID is not set: run the agent under an agentmesh sidecar");
  const client = new SidecarServiceClient(address, credentials.createInsecure());
  const backoff = new Backoff({ initialMs: 50, maxMs: 2000, multiplier: 2 });
  const running = new Map<string, AbortController>();
  let stream: ClientDuplexStream<AttachRequest, AttachResponse> | undefined;
  let closed = false;
  const orphanTimeoutMs = options.orphanTimeoutMs ?? 15_000;
  let orphanTimer: NodeJS.Timeout | undefined;
  const armOrphanTimer = () => {
    if (orphanTimeoutMs <= 0 || orphanTimer || closed) return;
    orphanTimer = setTimeout(() => {
      orphanTimer = undefined;
      if (closed) return;
      (options.onOrphaned ?? (() => process.exit(1)))();
    }, orphanTimeoutMs);
    orphanTimer.unref();
  };
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });

  let batcher: FrameBatcher<AttachRequest> | undefined;
  // Replies ready in the same tick travel to the sidecar in one message.
  const reply = (frame: CallFrame) => batcher?.push(frame);

  const handle = async (frame: CallFrame): Promise<void> => {
    const invocation = frame.invocation;
    if (!invocation) return;
    const controller = new AbortController();
    running.set(String(frame.callId), controller);
    const context = { invocation, signal: controller.signal };
    try {
      const streamHandler = options.streamHandlers?.[invocation.capability];
      if (frame.streaming && streamHandler) {
        let sequence = 0;
        for await (const chunk of streamHandler(Buffer.from(invocation.payload), context)) {
          if (controller.signal.aborted) return;
          sequence += 1;
          reply(dataFrame(frame.callId, toBytes(chunk), { sequence }));
        }
        reply(endFrame(frame.callId, status.OK));
        return;
      }
      const handler = options.handlers?.[invocation.capability];
      if (!handler) throw new MeshError("notFound", `capability ${invocation.capability} not served here`);
      const result = await handler(Buffer.from(invocation.payload), context);
      if (!controller.signal.aborted) reply(dataFrame(frame.callId, toBytes(result), { end: true }));
    } catch (error) {
      if (controller.signal.aborted) return;
      // Agents choose what callers see through MeshError; anything else stays inside.
      const code = error instanceof MeshError ? error.code : status.INTERNAL;
      const message = error instanceof MeshError ? error.message : "agent failed";
      if (!(error instanceof MeshError)) options.onError?.(error);
      reply(endFrame(frame.callId, code, message));
    } finally {
      running.delete(String(frame.callId));
    }
  };

  const onFrame = (frame: CallFrame) => {
    // Liveness (docs/protocol.md): answered from this loop at once, whatever the handlers are doing.
    if (frame.kind === CallFrame_Kind.KIND_PING) {
      reply(pongFrame(frame.sequence));
      return;
    }
    if (frame.kind === CallFrame_Kind.KIND_CANCEL) {
      running.get(String(frame.callId))?.abort();
      return;
    }
    if (frame.kind === CallFrame_Kind.KIND_OPEN) void handle(frame);
  };

  const open = () => {
    if (closed) return;
    const current = client.attach(new Metadata());
    stream = current;
    batcher = new FrameBatcher<AttachRequest>(current, (frames) => ({ msg: undefined, replies: frames }));
    current.on("data", (response: AttachResponse) => {
      for (const frame of response.calls) onFrame(frame);
      const message = response.msg;
      if (!message) return;
      if (message.$case === "welcome") {
        backoff.reset();
        clearTimeout(orphanTimer);
        orphanTimer = undefined;
        markReady();
        return;
      }
      onFrame(message.value);
    });
    const reopen = (error?: ServiceError) => {
      if (stream !== current) return;
      stream = undefined;
      batcher?.close();
      batcher = undefined;
      for (const controller of running.values()) controller.abort();
      running.clear();
      if (closed) return;
      if (error) options.onError?.(error);
      armOrphanTimer();
      setTimeout(open, backoff.nextDelayMs());
    };
    current.on("error", reopen);
    current.on("end", () => reopen());
    current.write({ msg: { $case: "hello", value: { instanceId, manifest: undefined } }, replies: [] });
  };
  open();
  armOrphanTimer();

  return {
    ready,
    close: () => {
      closed = true;
      clearTimeout(orphanTimer);
      stream?.end();
      stream = undefined;
      client.close();
    },
  };
}

function toBytes(result: HandlerResult): Buffer {
  return typeof result === "string" ? Buffer.from(result, "utf8") : Buffer.from(result);
}
