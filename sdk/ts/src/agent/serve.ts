import { type ClientDuplexStream, Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { Backoff } from "../core/backoff.js";
import { FrameBatcher } from "../core/dataplane/frame-batcher.js";
import { dataFrame, endFrame, pongFrame } from "../core/dataplane/frames.js";
import { MeshError } from "../core/mesh-error.js";
import { type AttachRequest, type AttachResponse, type CallFrame, CallFrame_Kind, type Invocation, SidecarServiceClient } from "../gen/agentmesh/v1/agent.js";

/** What a handler returns: bytes (or a string, sent as UTF-8) for unary calls. */
export type HandlerResult = Uint8Array | string;

export interface InvocationContext {
  invocation: Invocation;
  /** Aborted when the caller cancels or its deadline passes. */
  signal: AbortSignal;
}

export type UnaryHandler = (payload: Buffer, context: InvocationContext) => Promise<HandlerResult> | HandlerResult;
export type StreamHandler = (payload: Buffer, context: InvocationContext) => AsyncIterable<HandlerResult>;

export interface ServeOptions {
  /** Handlers by capability name. */
  handlers?: Record<string, UnaryHandler>;
  streamHandlers?: Record<string, StreamHandler>;
  /** Defaults to AGENTMESH_SIDECAR_ADDR. */
  sidecarAddress?: string;
  /** Defaults to AGENTMESH_INSTANCE_ID. */
  instanceId?: string;
  onError?: (error: unknown) => void;
  /**
   * Without a sidecar for this long (it died, or no longer knows this instance),
   * the agent is an orphan: `onOrphaned` runs, by default exiting the process so
   * a SIGKILLed sidecar leaves no agents behind. Default 15 s; 0 disables.
   */
  orphanTimeoutMs?: number;
  onOrphaned?: () => void;
}

export interface Serving {
  /** Resolves once the sidecar welcomed the stream. */
  ready: Promise<void>;
  close(): void;
}

/**
 * Serves an agent's capabilities over ONE stream to its sidecar (SidecarService.Attach):
 * no listening port, and the sidecar sees the agent's death the moment the stream
 * breaks. Reconnects with backoff if the sidecar restarts. Answers the sidecar's
 * PINGs, so a frozen process (its event loop blocked or stopped) is found hung
 * and routed around; a handler that blocks the event loop for more than 1.5
 * heartbeat intervals looks the same.
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
