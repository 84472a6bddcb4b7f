/**
 * The agentmesh TypeScript SDK (`import … from "agentmesh/sdk"`).
 *
 * An agent serves its capabilities with {@link serve} over one stream to its sidecar
 * and calls other agents with {@link MeshCaller}; failures carry gRPC codes as
 * {@link MeshError}. The wire protocol both follow is docs/protocol.md.
 *
 * The user API comes first; integrator hooks (control-plane client, identity,
 * envelope signing) follow for tools that talk to the server themselves.
 *
 * @example
 * ```ts
 * import { serve, MeshCaller } from "agentmesh/sdk";
 *
 * const caller = new MeshCaller();
 * serve({
 *   handlers: {
 *     "text.shout": (payload) => payload.toString().toUpperCase(),
 *     "text.summarize": async (payload) => (await caller.invoke("text.word-stats", payload, { versionRange: "^1" })).payload,
 *   },
 * });
 * ```
 * @packageDocumentation
 */

// ---- Serving an agent ----------------------------------------------------------------
export { serve } from "./agent/serve.js";
export type { HandlerResult, InvocationContext, ServeOptions, Serving, StreamHandler, UnaryHandler } from "./agent/serve.js";

// ---- Calling other agents --------------------------------------------------------------
export { MeshCaller } from "./agent/invoke.js";
export type { InvokeOptions, InvokeResult } from "./agent/invoke.js";
export { parseLabelSelector } from "./core/label-selector.js";

// ---- Errors ------------------------------------------------------------------------------
export { MeshError, codeByKind } from "./core/mesh-error.js";
export type { MeshErrorKind } from "./core/mesh-error.js";
export { CallStatusError } from "./core/dataplane/call-status.js";
/** gRPC status codes (grpc-js's `status`), to compare with an error's `code`. */
export { status } from "@grpc/grpc-js";

// ---- Types of the mesh -----------------------------------------------------------------
export { HealthState } from "./gen/agentmesh/v1/types.js";
export type { AgentInstance, AgentManifest, Capability, HealthPolicy, Load, Resources } from "./gen/agentmesh/v1/types.js";
export type { Invocation } from "./gen/agentmesh/v1/agent.js";
export type { LabelRequirement, LabelSelector } from "./gen/agentmesh/v1/registry.js";

// ---- Integrator hooks: the control plane, identities and signatures --------------------
export { AgentHandle, MeshClient } from "./client/mesh-client.js";
export type { MeshClientEvent, MeshClientOptions, RegisterOptions } from "./client/mesh-client.js";
export { MeshIdentity } from "./client/mesh-identity.js";
export type { EnvelopeSigner, JoinOptions } from "./client/mesh-identity.js";
export { canonicalBytes, signEnvelope, signatureDomain, verifyEnvelope, verifyFailure } from "./core/signing.js";
export type { CanonicalFields, SignEnvelopeInput, SignatureAlg, VerifyEnvelopeOptions, VerifyFailureReason } from "./core/signing.js";
export { MemoryNonceCache } from "./core/nonce-cache.js";
export type { NonceCache } from "./core/nonce-cache.js";
export { generateKeyAndCsr } from "./core/csr.js";
export type { KeyAndCsr } from "./core/csr.js";
export { formatSpiffeId, parseSpiffeId } from "./core/spiffe-id.js";
export type { SpiffeId, SpiffeKind } from "./core/spiffe-id.js";
export { ManualClock, systemClock } from "./core/clock.js";
export type { Clock } from "./core/clock.js";
