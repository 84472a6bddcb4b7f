import { status } from "@grpc/grpc-js";
import { invalidArgument } from "../mesh-error.js";
import { type CallFrame, CallFrame_Kind, Invocation } from "../../gen/agentmesh/v1/agent.js";
import type { SignedEnvelope } from "../../gen/agentmesh/v1/types.js";
import type { FrameSealer } from "../frame-auth.js";

/** What the caller puts in an OPEN frame; the transport adds the call id. */
export type OpenFrameFields = Pick<CallFrame, "instanceId"> &
  Partial<Pick<CallFrame, "envelope" | "invocation" | "contentType" | "payload" | "request">> & {
    /**
     * Builds the envelope once the stream that carries the frame is known: with
     * that stream's frame key when it has one (docs/signing.md §8), else signed.
     * Called just before the frame is queued, so sequence numbers follow the wire order.
     */
    authenticate?: (frames: FrameSealer | undefined) => SignedEnvelope;
  };

/** A finished unary reply. */
export interface CallReply {
  payload: Buffer;
  contentType: string;
  /** Who answered, when the replier says (SidecarService.Call replies do). */
  instanceId?: string;
  version?: string;
}

const emptyBytes = Buffer.alloc(0);

// Object literals with every field instead of CallFrame.fromPartial: this runs
// several times per call on the hot path.
function frame(callId: number, kind: CallFrame_Kind): CallFrame {
  return {
    callId,
    kind,
    envelope: undefined,
    instanceId: "",
    payload: emptyBytes,
    sequence: 0,
    end: false,
    streaming: false,
    statusCode: 0,
    statusMessage: "",
    contentType: "",
    invocation: undefined,
    request: undefined,
    version: "",
    refusedBeforeDelivery: false,
    macSequence: 0,
    mac: emptyBytes,
  };
}

export function openFrame(callId: number, fields: OpenFrameFields, streaming: boolean): CallFrame {
  const open = frame(callId, CallFrame_Kind.KIND_OPEN);
  open.instanceId = fields.instanceId;
  open.envelope = fields.envelope;
  open.invocation = fields.invocation;
  open.request = fields.request;
  open.contentType = fields.contentType ?? "";
  open.payload = fields.payload ?? emptyBytes;
  open.streaming = streaming;
  return open;
}

/** One chunk of a reply; `end` marks a unary reply complete in a single frame. */
export function dataFrame(
  callId: number,
  payload: Buffer,
  options: { sequence?: number; end?: boolean; contentType?: string; instanceId?: string; version?: string } = {},
): CallFrame {
  const data = frame(callId, CallFrame_Kind.KIND_DATA);
  data.payload = payload;
  data.sequence = options.sequence ?? 0;
  data.end = options.end ?? false;
  data.contentType = options.contentType ?? "";
  data.instanceId = options.instanceId ?? "";
  data.version = options.version ?? "";
  return data;
}

/** `refused`: the call never reached an agent (CallFrame.refused_before_delivery). */
export function endFrame(callId: number, code: number = status.OK, message = "", refused = false): CallFrame {
  const end = frame(callId, CallFrame_Kind.KIND_END);
  end.statusCode = code;
  end.statusMessage = message;
  end.refusedBeforeDelivery = refused;
  return end;
}

export function cancelFrame(callId: number): CallFrame {
  return frame(callId, CallFrame_Kind.KIND_CANCEL);
}

/** A liveness probe: call id 0, `sequence` numbers it (docs/protocol.md). */
export function pingFrame(sequence: number): CallFrame {
  const ping = frame(0, CallFrame_Kind.KIND_PING);
  ping.sequence = sequence;
  return ping;
}

/** The answer to a PING, with its sequence. */
export function pongFrame(sequence: number): CallFrame {
  const pong = frame(0, CallFrame_Kind.KIND_PONG);
  pong.sequence = sequence;
  return pong;
}

/**
 * The invocation an OPEN frame carries, without checking any signature: the
 * envelope's payload decoded, or the bare invocation (Attach). The invocation's
 * own payload stays opaque bytes.
 */
export function decodeOpenInvocation(open: CallFrame): Invocation {
  if (open.envelope !== undefined) {
    try {
      return Invocation.decode(open.envelope.payload);
    } catch {
      throw invalidArgument("malformed invocation in envelope");
    }
  }
  if (open.invocation !== undefined) return open.invocation;
  throw invalidArgument("open frame carries no invocation");
}
