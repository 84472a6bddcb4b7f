import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { Metadata, status } from "@grpc/grpc-js";
import { type RegisterBatchResult, RegisterRequest, type RegistryServiceServer } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { AgentInstance } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { CallContext } from "../server/call-context.js";
import { toGrpcStatus } from "../server/errors.js";
import type { EnvelopeOpener } from "../identity/envelope-opener.js";
import { mayActForAgent } from "../server/call-context.js";
import type { ServerMetrics } from "../server/metrics.js";
import { type RpcPlumbing, serverStream, unary } from "../server/rpc-wrapper.js";
import type { Registry } from "./registry.js";

const service = "/agentmesh.v1.RegistryService";
const MAX_BATCH = 1000;

/** Decodes RegistryService calls, checks who may do what, calls the registry, encodes. */
export function registryHandlers(
  registry: Registry,
  plumbing: RpcPlumbing,
  metrics: ServerMetrics,
  opener: EnvelopeOpener,
): RegistryServiceServer {
  /** One registration: verify its signature, check the caller may act for the name, store. */
  const registerOne = async (outer: RegisterRequest, { caller }: CallContext): Promise<{ instance: AgentInstance; revision: number }> => {
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
      return result;
    } catch (error) {
      metrics.registrations.inc({ outcome: outcomeOf(error) });
      throw error;
    }
  };

  return {
    register: unary(plumbing, `${service}/Register`, (outer, context) => registerOne(outer, context)),

    registerBatch: unary(plumbing, `${service}/RegisterBatch`, async (request, context) => {
      if (request.registrations.length === 0) throw new MeshError("invalidArgument", "registrations: at least one required");
      if (request.registrations.length > MAX_BATCH) throw new MeshError("invalidArgument", `registrations: at most ${MAX_BATCH}`);
      const registerAndReport = async (registration: RegisterRequest): Promise<RegisterBatchResult> => {
        try {
          const { instance } = await registerOne(registration, context);
          return { instance, code: status.OK, message: "" };
        } catch (error) {
          if (error instanceof MeshError && ["denied", "unauthenticated", "overLimit"].includes(error.kind)) plumbing.onRejected?.(context, error);
          const failure = toGrpcStatus(error, context.requestId, plumbing.log);
          return { instance: undefined, code: failure.code, message: failure.details };
        }
      };
      // Together, so a shared store commits the batch as a few group commits rather than
      // one round trip per item; one after another when an instance id repeats (the
      // second registration of an id must see the first).
      const ids = request.registrations.map((registration) => registration.instanceId).filter((id) => id !== "");
      const results: RegisterBatchResult[] =
        new Set(ids).size === ids.length
          ? await Promise.all(request.registrations.map(registerAndReport))
          : await request.registrations.reduce<Promise<RegisterBatchResult[]>>(async (done, registration) => [...(await done), await registerAndReport(registration)], Promise.resolve([]));
      return { results, revision: registry.currentRevision };
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
      epoch: registry.epoch,
    })),

    watch: serverStream(plumbing, `${service}/Watch`, (call) => {
      const { sinceRevision, capability, epoch } = call.request;
      if (sinceRevision > 0 && epoch === "") throw new MeshError("invalidArgument", "epoch: required with since_revision (from the Watch or Discover answer the revision came from)");
      const subscription = registry.watch(
        sinceRevision,
        capability,
        (event) => {
          call.write({ type: event.type, instance: event.instance, revision: event.revision, previousState: event.previousState, epoch: registry.epoch });
        },
        sinceRevision > 0 ? epoch : registry.epoch,
      );
      // Headers at once say "subscribed": a client moving its Watch to a new connection
      // (make-before-break) may drop the old stream then, even before any event.
      call.sendMetadata(new Metadata());
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
