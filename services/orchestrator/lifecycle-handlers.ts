import { MeshError, invalidArgument } from "../../sdk/ts/src/core/mesh-error.js";
import type { RpcPlumbing } from "../server/rpc-wrapper.js";
import { unary } from "../server/rpc-wrapper.js";
import { validateCapabilityName, validateLabelSelector, validateMetadata } from "../registry/domain/validate.js";
import type { LifecycleHandlers } from "./grpc-handlers.js";
import type { ServerInvoker } from "./invoker.js";
import type { Lifecycle } from "./lifecycle.js";

const service = "/agentmesh.v1.OrchestratorService";
const MAX_GRACE_MS = 600_000;
const DEFAULT_INVOKE_TIMEOUT_MS = 30_000;

/** The lifecycle and Invoke RPCs; admin-only ones are enforced by the mTLS interceptor. */
export function lifecycleHandlers(lifecycle: Lifecycle, invoker: ServerInvoker, plumbing: RpcPlumbing, nowMs: () => number): LifecycleHandlers {
  const grace = (graceMs: number) => {
    if (graceMs > MAX_GRACE_MS) throw invalidArgument(`grace_ms: at most ${MAX_GRACE_MS}`);
    return graceMs === 0 ? 5000 : graceMs;
  };
  return {
    applyDeployment: unary(plumbing, `${service}/ApplyDeployment`, (request, { caller, requestId }) => lifecycle.apply(request.deployment, caller, requestId)),
    getDeployment: unary(plumbing, `${service}/GetDeployment`, (request) => lifecycle.get(request.name)),
    listDeployments: unary(plumbing, `${service}/ListDeployments`, async () => ({ deployments: await lifecycle.list() })),
    deleteDeployment: unary(plumbing, `${service}/DeleteDeployment`, (request, { caller, requestId }) => lifecycle.remove(request.name, caller, requestId)),
    scaleDeployment: unary(plumbing, `${service}/ScaleDeployment`, async (request, { caller, requestId }) => ({
      deployment: await lifecycle.scale(request.name, request.replicas, caller, requestId),
    })),
    restartAgent: unary(plumbing, `${service}/RestartAgent`, async (request, { caller, requestId }) => {
      await lifecycle.command("restart", request.instanceId, 0, caller, requestId);
      return {};
    }),
    drainAgent: unary(plumbing, `${service}/DrainAgent`, async (request, { caller, requestId }) => {
      await lifecycle.command("drain", request.instanceId, grace(request.graceMs), caller, requestId);
      return {};
    }),
    stopAgent: unary(plumbing, `${service}/StopAgent`, async (request, { caller, requestId }) => {
      await lifecycle.command("stop", request.instanceId, grace(request.graceMs), caller, requestId);
      return {};
    }),
    getRollout: unary(plumbing, `${service}/GetRollout`, (request) => ({ rollout: lifecycle.rollout(request.deployment) })),
    invoke: unary(plumbing, `${service}/Invoke`, (request, { caller }) => {
      validateCapabilityName(request.capability);
      validateLabelSelector(request.labelSelector);
      validateMetadata(request.metadata);
      if (caller.spiffeId === "") throw new MeshError("unauthenticated", "client certificate required");
      return invoker.invoke(request, caller.spiffeId, nowMs() + DEFAULT_INVOKE_TIMEOUT_MS);
    }),
  };
}
