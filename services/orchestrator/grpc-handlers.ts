
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type {
  ConnectRequest,
  ConnectResponse,
  OrchestratorServiceServer,
} from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { newRequestId } from "../server/call-context.js";
import { toGrpcStatus, toServiceError } from "../server/errors.js";
import type { ServerMetrics } from "../server/metrics.js";
import { type RpcPlumbing, unary } from "../server/rpc-wrapper.js";
import type { ConnectHub } from "./connect-hub.js";
import type { Resolver } from "./resolver.js";
import { validateCapabilityName, validateLabelSelector } from "../registry/domain/validate.js";

const service = "/agentmesh.v1.OrchestratorService";

export type LifecycleHandlers = Pick<
  OrchestratorServiceServer,
  | "invoke"
  | "applyDeployment"
  | "getDeployment"
  | "listDeployments"
  | "deleteDeployment"
  | "scaleDeployment"
  | "restartAgent"
  | "drainAgent"
  | "stopAgent"
  | "getRollout"
>;

/** Decodes OrchestratorService calls; lifecycle RPCs come from `lifecycle`. */
export function orchestratorHandlers(
  hub: ConnectHub,
  resolver: Resolver,
  plumbing: RpcPlumbing,
  metrics: ServerMetrics,
  lifecycle: LifecycleHandlers,
): OrchestratorServiceServer {
  return {
    ...lifecycle,
    connect: (call: ServerDuplexStream<ConnectRequest, ConnectResponse>) => {
      const requestId = newRequestId(call.metadata);
      try {
        const caller = plumbing.authenticate(call, `${service}/Connect`);
        hub.handle(call, caller, requestId);
      } catch (error) {
        call.emit("error", toServiceError(toGrpcStatus(error, requestId, plumbing.log)));
      }
    },

    resolve: unary(plumbing, `${service}/Resolve`, (request) => {
      validateCapabilityName(request.capability);
      validateLabelSelector(request.labelSelector);
      if (request.excludeInstanceIds.length > 100) throw new MeshError("invalidArgument", "exclude_instance_ids: more than 100");
      try {
        const instance = resolver.resolve({
          capability: request.capability,
          versionRange: request.versionRange,
          labelSelector: request.labelSelector,
          excludeInstanceIds: request.excludeInstanceIds,
        });
        metrics.resolves.inc({ outcome: "picked" });
        return { instance };
      } catch (error) {
        if (error instanceof MeshError && error.kind === "noHealthyInstance") metrics.resolves.inc({ outcome: "no_instance" });
        throw error;
      }
    }),
  };
}
