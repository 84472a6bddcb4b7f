import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { RegisterRequest, type RegistryServiceServer } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { EnvelopeOpener } from "../identity/envelope-opener.js";
import { mayActForAgent } from "../server/call-context.js";
import type { ServerMetrics } from "../server/metrics.js";
import { type RpcPlumbing, serverStream, unary } from "../server/rpc-wrapper.js";
import type { Registry } from "./registry.js";

const service = "/agentmesh.v1.RegistryService";

/** Decodes RegistryService calls, checks who may do what, calls the registry, encodes. */
export function registryHandlers(
  registry: Registry,
  plumbing: RpcPlumbing,
  metrics: ServerMetrics,
  opener: EnvelopeOpener,
): RegistryServiceServer {
  return {
    register: unary(plumbing, `${service}/Register`, async (outer, { caller }) => {
      try {
        // With mTLS the request is what was signed, decoded only after the signature checks out.
        const signed = await opener.open(outer.envelope, caller, `${service}/Register`, "agentmesh.v1.RegisterRequest");
        const request = signed ? decodeSigned(signed) : outer;
        const agentName = request.manifest?.name ?? "";
        if (agentName !== "" && !mayActForAgent(caller, agentName)) {
          throw new MeshError("denied", "identity may not register this agent name");
        }
        const result = await registry.register({
          manifest: request.manifest,
          instanceId: request.instanceId,
          endpoint: request.endpoint,
          host: request.host,
          owner: caller.spiffeId,
          deployment: request.deployment,
        });
        metrics.registrations.inc({ outcome: "ok" });
        return { instance: result.instance, revision: result.revision };
      } catch (error) {
        metrics.registrations.inc({ outcome: outcomeOf(error) });
        throw error;
      }
    }),

    deregister: unary(plumbing, `${service}/Deregister`, async (request, { caller }) => {
      const instance = registry.require(request.instanceId);
      if (instance.spiffeId !== caller.spiffeId && !caller.isAdmin) {
        throw new MeshError("denied", "only the owner or an admin may deregister an instance");
      }
      if (request.reason.length > 200) throw new MeshError("invalidArgument", "reason: longer than 200 characters");
      const revision = await registry.deregister(request.instanceId, request.reason === "" ? "deregistered" : request.reason);
      metrics.deregistrations.inc({ reason: "request" });
      return { revision };
    }),

    getAgent: unary(plumbing, `${service}/GetAgent`, (request) => ({ instance: registry.require(request.instanceId) })),

    listAgents: unary(plumbing, `${service}/ListAgents`, (request) =>
      registry.list({
        name: request.name,
        labelSelector: request.labelSelector,
        states: request.states,
        pageSize: request.pageSize,
        pageToken: request.pageToken,
      }),
    ),

    discover: unary(plumbing, `${service}/Discover`, (request) => ({
      instances: registry.discover({
        capability: request.capability,
        versionRange: request.versionRange,
        labelSelector: request.labelSelector,
        limit: request.limit,
        includeUnhealthy: request.includeUnhealthy,
      }),
      revision: registry.currentRevision,
    })),

    watch: serverStream(plumbing, `${service}/Watch`, (call) => {
      const subscription = registry.watch(call.request.sinceRevision, call.request.capability, (event) => {
        call.write({ type: event.type, instance: event.instance, revision: event.revision, previousState: event.previousState });
      });
      metrics.watchStreams.inc();
      let open = true;
      const close = () => {
        if (!open) return;
        open = false;
        subscription.close();
        metrics.watchStreams.dec();
      };
      call.on("cancelled", close);
      call.on("close", close);
      call.on("error", close);
      call.on("finish", close);
    }),
  };
}

function decodeSigned(payload: Uint8Array): RegisterRequest {
  try {
    return RegisterRequest.decode(payload);
  } catch {
    throw new MeshError("invalidArgument", "envelope.payload: not a RegisterRequest");
  }
}

function outcomeOf(error: unknown): string {
  if (!(error instanceof MeshError)) return "error";
  if (error.kind === "invalidArgument") return "invalid";
  if (error.kind === "denied") return "denied";
  return error.kind;
}
