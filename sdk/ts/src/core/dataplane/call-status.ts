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

/** The error a caller sees for a non-OK status from a peer or an agent; it always carries the gRPC code as `.code`. */
export function errorFromStatus(code: number, message: string): MeshError | CallStatusError {
  const safeMessage = message === "" ? `call failed with ${status[code] ?? `code ${code}`}` : message;
  const kind = kindByCode[code as status];
  if (kind !== undefined) return new MeshError(kind, safeMessage);
  return new CallStatusError(code as status, safeMessage);
}

/** The status to send for an error we may show the caller; undefined for anything else (log it, answer INTERNAL). */
export function statusOfError(error: unknown): { code: status; message: string } | undefined {
  if (error instanceof MeshError || error instanceof CallStatusError) return { code: error.code, message: error.message };
  return undefined;
}
