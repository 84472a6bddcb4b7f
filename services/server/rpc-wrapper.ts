import type {
  ServerUnaryCall,
  ServerWritableStream,
  sendUnaryData,
  handleServerStreamingCall,
  handleUnaryCall,
} from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { type Authenticator, type CallContext, newRequestId } from "./call-context.js";
import { toGrpcStatus, toServiceError } from "./errors.js";
import type { ServerMetrics } from "./metrics.js";

/** Open server streams and the certificate serial of who opened them (revocation ends them). */
export type StreamRegistry = Map<{ end(): void; emit(event: "error", error: unknown): boolean }, string>;

export interface RpcPlumbing {
  authenticate: Authenticator;
  log: Logger;
  metrics: ServerMetrics;
  streams: StreamRegistry;
  /** Called when a handler refuses a call (denied, unauthenticated, over a limit): audit and count. */
  onRejected?: (context: CallContext, error: MeshError) => void;
}

const auditedKinds = new Set(["denied", "unauthenticated", "overLimit"]);

function reportRejection(plumbing: RpcPlumbing, context: CallContext, error: unknown): void {
  if (error instanceof MeshError && auditedKinds.has(error.kind)) plumbing.onRejected?.(context, error);
}

/**
 * Wraps a unary handler: request id, caller identity, error mapping and timing.
 * Handlers stay plain async functions from request to response.
 */
export function unary<Request, Response>(
  plumbing: RpcPlumbing,
  method: string,
  handler: (request: Request, context: CallContext) => Promise<Response> | Response,
): handleUnaryCall<Request, Response> {
  return (call: ServerUnaryCall<Request, Response>, callback: sendUnaryData<Response>) => {
    const startedAt = process.hrtime.bigint();
    const requestId = newRequestId(call.metadata);
    const finish = (code: status) =>
      plumbing.metrics.rpcDuration.observe({ method, code: status[code] ?? String(code) }, Number(process.hrtime.bigint() - startedAt) / 1e9);
    let context: CallContext;
    try {
      context = { requestId, caller: plumbing.authenticate(call, method), method };
    } catch (error) {
      const grpcStatus = toGrpcStatus(error, requestId, plumbing.log);
      finish(grpcStatus.code);
      callback(toServiceError(grpcStatus));
      return;
    }
    Promise.resolve()
      .then(() => handler(call.request, context))
      .then(
        (response) => {
          finish(status.OK);
          callback(null, response);
        },
        (error: unknown) => {
          reportRejection(plumbing, context, error);
          const grpcStatus = toGrpcStatus(error, requestId, plumbing.log);
          finish(grpcStatus.code);
          callback(toServiceError(grpcStatus));
        },
      );
  };
}

/** Wraps a server-streaming handler with the same identity and error mapping. */
export function serverStream<Request, Response>(
  plumbing: RpcPlumbing,
  method: string,
  handler: (call: ServerWritableStream<Request, Response>, context: CallContext) => Promise<void> | void,
): handleServerStreamingCall<Request, Response> {
  return (call) => {
    const requestId = newRequestId(call.metadata);
    const fail = (error: unknown) => {
      const grpcStatus = toGrpcStatus(error, requestId, plumbing.log);
      call.emit("error", toServiceError(grpcStatus));
    };
    try {
      const context = { requestId, caller: plumbing.authenticate(call, method), method };
      plumbing.streams.set(call, context.caller.serial ?? "");
      const forget = () => plumbing.streams.delete(call);
      call.on("close", forget);
      call.on("cancelled", forget);
      call.on("finish", forget);
      Promise.resolve(handler(call, context)).catch((error: unknown) => {
        reportRejection(plumbing, context, error);
        fail(error);
      });
    } catch (error) {
      fail(error);
    }
  };
}
