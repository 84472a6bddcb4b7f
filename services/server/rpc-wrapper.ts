import type {
  ServerUnaryCall,
  ServerWritableStream,
  sendUnaryData,
  handleServerStreamingCall,
  handleUnaryCall,
} from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { AuditMark } from "../../sdk/ts/src/core/audit-log.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { type Authenticator, type CallContext, newRequestId, runInCall } from "./call-context.js";
import { toGrpcStatus, toServiceError } from "./errors.js";
import type { ServerMetrics } from "./metrics.js";

/** Open server streams and the certificate serial of who opened them (revocation ends them). */
export type StreamRegistry = Map<{ end(): void; emit(event: "error", error: unknown): boolean }, string>;

/** What the wrapper needs of the audit log to hold audited RPCs to it. */
export interface AuditGate {
  readonly writable: boolean;
  mark(): AuditMark;
  flushed(mark: AuditMark): Promise<void>;
}

export interface RpcPlumbing {
  authenticate: Authenticator;
  log: Logger;
  metrics: ServerMetrics;
  streams: StreamRegistry;
  /** Called when a handler refuses a call (denied, unauthenticated, over a limit): audit and count. */
  onRejected?: (context: CallContext, error: MeshError) => void;
  /** Audited RPCs are refused while it cannot be written, and answer OK only once their entries are. */
  audit?: AuditGate;
}

/**
 * RPCs whose effect is audited (their handlers and the hooks below them append the
 * entries). An OK answer means the entries are written, so none of these acts while
 * the audit log cannot record it: they answer UNAVAILABLE instead.
 */
export const auditedMethods: ReadonlySet<string> = new Set([
  "/agentmesh.v1.RegistryService/Register",
  "/agentmesh.v1.RegistryService/RegisterBatch",
  "/agentmesh.v1.RegistryService/Deregister",
  "/agentmesh.v1.OrchestratorService/ApplyDeployment",
  "/agentmesh.v1.OrchestratorService/DeleteDeployment",
  "/agentmesh.v1.OrchestratorService/ScaleDeployment",
  "/agentmesh.v1.OrchestratorService/RestartAgent",
  "/agentmesh.v1.OrchestratorService/DrainAgent",
  "/agentmesh.v1.OrchestratorService/StopAgent",
  "/agentmesh.v1.IdentityService/IssueCertificate",
  "/agentmesh.v1.IdentityService/CreateJoinToken",
  "/agentmesh.v1.IdentityService/RevokeCertificate",
]);

const auditUnavailable = () => new MeshError("unavailable", "audit log unavailable: audited actions are refused");

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
    const audit = auditedMethods.has(method) ? plumbing.audit : undefined;
    try {
      context = { requestId, caller: plumbing.authenticate(call, method), method };
      if (audit && !audit.writable) throw auditUnavailable();
    } catch (error) {
      const grpcStatus = toGrpcStatus(error, requestId, plumbing.log);
      finish(grpcStatus.code);
      callback(toServiceError(grpcStatus));
      return;
    }
    const mark = audit?.mark();
    Promise.resolve()
      .then(() => runInCall(context, () => handler(call.request, context)))
      .then(async (response) => {
        // Entries are appended while the handler runs; OK only once they are on file.
        if (audit && mark) await audit.flushed(mark).catch(() => Promise.reject(auditUnavailable()));
        return response;
      })
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
      Promise.resolve(runInCall(context, () => handler(call, context))).catch((error: unknown) => {
        reportRejection(plumbing, context, error);
        fail(error);
      });
    } catch (error) {
      fail(error);
    }
  };
}
