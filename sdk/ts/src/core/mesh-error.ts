import { status } from "@grpc/grpc-js";

/** What went wrong, in terms a caller can act on. Each kind maps to one gRPC code. */
export type MeshErrorKind =
  | "invalidArgument"
  | "notFound"
  | "alreadyExists"
  | "unauthenticated"
  | "denied"
  | "overLimit"
  | "noHealthyInstance"
  | "failedPrecondition"
  | "unavailable"
  | "deadlineExceeded"
  | "cancelled";

/** The gRPC status code of each MeshError kind (`error.code`). */
export const codeByKind: Record<MeshErrorKind, status> = {
  invalidArgument: status.INVALID_ARGUMENT,
  notFound: status.NOT_FOUND,
  alreadyExists: status.ALREADY_EXISTS,
  unauthenticated: status.UNAUTHENTICATED,
  denied: status.PERMISSION_DENIED,
  overLimit: status.RESOURCE_EXHAUSTED,
  noHealthyInstance: status.UNAVAILABLE,
  failedPrecondition: status.FAILED_PRECONDITION,
  unavailable: status.UNAVAILABLE,
  deadlineExceeded: status.DEADLINE_EXCEEDED,
  cancelled: status.CANCELLED,
};

/**
 * An expected failure. Its message goes to the caller as is, so it must be short,
 * safe and name the problem (a field, a limit), never internals.
 */
export class MeshError extends Error {
  override readonly name = "MeshError";
  constructor(
    readonly kind: MeshErrorKind,
    message: string,
  ) {
    super(message);
  }

  get code(): status {
    return codeByKind[this.kind];
  }
}

export const invalidArgument = (message: string): MeshError => new MeshError("invalidArgument", message);
