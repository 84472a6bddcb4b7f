import { status } from "@grpc/grpc-js";
import { MeshError, type MeshErrorKind } from "../mesh-error.js";

/**
 * A call ended with a gRPC code that has no MeshError kind (INTERNAL,
 * UNIMPLEMENTED, ABORTED, ...). Its message came from the peer's own safe
 * status message, so it may be passed on as is.
 */
export class CallStatusError extends Error {
  override readonly name = "CallStatusError";
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }
}

// UNAVAILABLE maps to "unavailable" (not "noHealthyInstance"): the peer or agent
// went away, which is what makes an idempotent call retryable elsewhere.
const kindByCode: Partial<Record<status, MeshErrorKind>> = {
  [status.INVALID_ARGUMENT]: "invalidArgument",
  [status.NOT_FOUND]: "notFound",
  [status.ALREADY_EXISTS]: "alreadyExists",
  [status.UNAUTHENTICATED]: "unauthenticated",
  [status.PERMISSION_DENIED]: "denied",
  [status.RESOURCE_EXHAUSTED]: "overLimit",
  [status.FAILED_PRECONDITION]: "failedPrecondition",
  [status.UNAVAILABLE]: "unavailable",
  [status.DEADLINE_EXCEEDED]: "deadlineExceeded",
  [status.CANCELLED]: "cancelled",
};

/**
 * Marks an error as answered before any agent saw the call (instance gone or
 * draining, a limit at the receiver, a tunnel that never sent it): the call cannot
 * have run, so a caller may send it to another instance even when it is not
 * idempotent. It travels as `CallFrame.refused_before_delivery` on the END frame.
 */
export function refusedBeforeDelivery<E extends MeshError | CallStatusError>(error: E): E {
  // Not enumerable: a flag about delivery, not part of what the error says (equality, logs).
  return Object.defineProperty(error, "refusedBeforeDelivery", { value: true, enumerable: false });
}

/** True for an error marked with refusedBeforeDelivery (here or by the peer that answered). */
export function isRefusedBeforeDelivery(error: unknown): boolean {
  return typeof error === "object" && error !== null && (error as { refusedBeforeDelivery?: unknown }).refusedBeforeDelivery === true;
}

/** The error a caller sees for a non-OK status from a peer or an agent; it always carries the gRPC code as `.code`. */
export function errorFromStatus(code: number, message: string, refused = false): MeshError | CallStatusError {
  const safeMessage = message === "" ? `call failed with ${status[code] ?? `code ${code}`}` : message;
  const kind = kindByCode[code as status];
  const error = kind !== undefined ? new MeshError(kind, safeMessage) : new CallStatusError(code as status, safeMessage);
  return refused ? refusedBeforeDelivery(error) : error;
}

/** The status to send for an error we may show the caller; undefined for anything else (log it, answer INTERNAL). */
export function statusOfError(error: unknown): { code: status; message: string; refusedBeforeDelivery: boolean } | undefined {
  if (error instanceof MeshError || error instanceof CallStatusError) {
    return { code: error.code, message: error.message, refusedBeforeDelivery: isRefusedBeforeDelivery(error) };
  }
  return undefined;
}
