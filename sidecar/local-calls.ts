import type { Clock } from "../sdk/ts/src/core/clock.js";
import { invalidArgument } from "../sdk/ts/src/core/mesh-error.js";
import type { Invocation, SidecarServiceInvokeRequest } from "../sdk/ts/src/gen/agentmesh/v1/agent.js";
import type { InboundHandler } from "../sdk/ts/src/core/dataplane/index.js";
import { type Outbound, toOutboundCall } from "./outbound.js";

/**
 * Outbound calls of local SDK clients arriving as frames on SidecarService.Call:
 * the same multiplexed framing as the tunnels, so a busy agent costs its sidecar
 * one stream instead of one unary RPC per call.
 */
export function createLocalCallHandler(outboundOf: () => Outbound, clock: Clock): InboundHandler {
  const requests = new WeakMap<Invocation, SidecarServiceInvokeRequest>();
  return {
    verify: (open) => {
      const request = open.request;
      if (!request) throw invalidArgument("open frame carries no request");
      // The tunnel machinery speaks in invocations; keep the routing request beside it.
      const invocation: Invocation = {
        callId: String(open.callId),
        capability: request.capability,
        version: request.versionRange,
        payload: request.payload,
        contentType: request.contentType,
        caller: "",
        deadlineMs: 0,
        metadata: request.metadata,
        traceparent: request.metadata.traceparent ?? "",
      };
      requests.set(invocation, request);
      return invocation;
    },
    dispatch: (invocation, _instanceId, options) => {
      const request = requests.get(invocation);
      if (!request) throw invalidArgument("unknown call");
      const outbound = outboundOf();
      if (options.streaming) return outbound.invokeStream(toOutboundCall({ ...request, idempotent: false }, clock, 0, options.signal));
      return outbound.invoke(toOutboundCall(request, clock, 0, options.signal)).then((response) => ({
        payload: Buffer.from(response.payload),
        contentType: response.contentType,
        instanceId: response.instanceId,
        version: response.version,
      }));
    },
  };
}
