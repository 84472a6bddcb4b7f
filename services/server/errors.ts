import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";

export interface GrpcStatusObject {
  code: status;
  details: string;
  metadata?: Metadata;
}

/**
 * The one place where failures become gRPC statuses: MeshError messages are
 * written for callers; anything else is logged with the request id and replaced
 * by a generic message, so internals never leave the process.
 */
export function toGrpcStatus(error: unknown, requestId: string, log: Logger): GrpcStatusObject {
  if (error instanceof MeshError) return { code: error.code, details: error.message };
  log.error({ err: error, requestId }, "unexpected failure");
  return { code: status.INTERNAL, details: `internal error, request ${requestId}` };
}

export function toServiceError(grpcStatus: GrpcStatusObject): Partial<ServiceError> {
  const metadata = grpcStatus.metadata ?? new Metadata();
  return { code: grpcStatus.code, details: grpcStatus.details, message: grpcStatus.details, metadata };
}
