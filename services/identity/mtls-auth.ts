import { type Metadata, type ServerInterceptingCallInterface, type ServerInterceptor, ServerInterceptingCall, status } from "@grpc/grpc-js";
import type { PeerCertificate } from "node:tls";
import type { Logger } from "pino";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import type { PeerVerifier } from "../../sdk/ts/src/core/tls/peer-verifier.js";
import type { AuthenticatableCall, Authenticator, CallerIdentity } from "../server/call-context.js";
import type { RevocationList } from "./domain/revocations.js";
import type { CallKind, IdentityLimits, LimitRefusal } from "./identity-limits.js";
import type { RefusalAuditor } from "./refusal-auditor.js";

/** RPCs a caller without a certificate may make: joining and fetching the roots. */
export const bootstrapMethods: ReadonlySet<string> = new Set([
  "/agentmesh.v1.IdentityService/IssueCertificate",
  "/agentmesh.v1.IdentityService/GetTrustBundle",
]);

/** RPCs only an `/admin/` identity may make. Owner-or-admin checks live in the handlers. */
export const adminMethods: ReadonlySet<string> = new Set([
  "/agentmesh.v1.IdentityService/CreateJoinToken",
  "/agentmesh.v1.IdentityService/RevokeCertificate",
  "/agentmesh.v1.IdentityService/ListAuditEvents",
  "/agentmesh.v1.OrchestratorService/ApplyDeployment",
  "/agentmesh.v1.OrchestratorService/DeleteDeployment",
  "/agentmesh.v1.OrchestratorService/ScaleDeployment",
]);

const anonymous: CallerIdentity = { spiffeId: "", isAdmin: false, allowedAgentNames: new Set() };

export interface MtlsAuthOptions {
  verifier: PeerVerifier;
  revocations: RevocationList;
  clock: Clock;
  /** Refusals are audited through it: sampled, so a flood cannot fill the disk. */
  refusals: RefusalAuditor;
  log: Logger;
  /** Per-identity rate, in-flight and open-stream limits on every call. */
  limits: IdentityLimits;
  onLimitRejected: (limit: string) => void;
}

export interface MtlsAuth {
  /** Runs first on every call of every service (health and reflection too). */
  interceptor: ServerInterceptor;
  /** Identity for our handlers: what the interceptor established for this call. */
  authenticate: Authenticator;
}

/**
 * The one place that turns a TLS peer into a CallerIdentity. Mesh ports request a
 * client certificate without letting TLS reject its absence (a joining sidecar
 * has none), so this interceptor enforces, on every call: a certificate chained
 * to the trust bundle, within its validity, not revoked, with exactly one SPIFFE
 * ID of our trust domain; admin RPCs need an `/admin/` identity; and the
 * per-identity rate and in-flight limits.
 */
export function createMtlsAuth(options: MtlsAuthOptions): MtlsAuth {
  const identities = new WeakMap<Metadata, CallerIdentity>();

  const identify = (peer: PeerCertificate | undefined, method: string): CallerIdentity => {
    const hasCertificate = peer !== undefined && peer.raw !== undefined;
    if (!hasCertificate && bootstrapMethods.has(method)) return anonymous;
    const verified = options.verifier.verify(peer, options.clock.nowMs());
    if (options.revocations.isRevoked({ serial: verified.serial })) throw new RevokedPeer(verified.spiffeId.uri);
    const kind = verified.spiffeId.kind;
    const allowedAgentNames = new Set(kind === "agent" ? [verified.spiffeId.name] : kind === "admin" ? ["*"] : verified.allowedAgentNames);
    return {
      spiffeId: verified.spiffeId.uri,
      serial: verified.serial,
      publicKey: verified.publicKey,
      isAdmin: kind === "admin",
      allowedAgentNames,
    };
  };

  const interceptor: ServerInterceptor = (methodDescriptor, call: ServerInterceptingCallInterface) => {
    const method = methodDescriptor.path;
    const kind: CallKind = methodDescriptor.requestStream || methodDescriptor.responseStream ? "stream" : "unary";
    let limiterKey: string | undefined;
    let cancelled = false;
    const release = () => {
      if (limiterKey === undefined) return;
      options.limits.release(limiterKey, kind);
      limiterKey = undefined;
    };
    return new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            let identity: CallerIdentity;
            // The SPIFFE ID once the certificate checks out; until then only the address is known.
            let actor = call.getPeer();
            let authenticated = false;
            try {
              identity = identify(call.getAuthContext().sslPeerCertificate, method);
              actor = identity.spiffeId || actor;
              authenticated = identity.spiffeId !== "";
              if (adminMethods.has(method) && !identity.isAdmin) throw new MeshError("denied", "requires an admin identity");
            } catch (error) {
              const meshError = error instanceof MeshError ? error : new MeshError("unauthenticated", "client certificate invalid");
              if (!(error instanceof MeshError)) options.log.warn({ err: error, method }, "peer verification failed");
              // A revoked certificate still proves who holds it: sample by that identity, not by address.
              if (error instanceof RevokedPeer) {
                actor = error.spiffeId;
                authenticated = true;
              }
              const action = meshError.kind === "denied" ? "call.denied" : "call.unauthenticated";
              options.refusals.record({ actor, authenticated, action, target: method, reason: meshError.message, requestId: "" });
              call.sendStatus({ code: meshError.code, details: meshError.message });
              return;
            }
            if (identity.spiffeId === "") {
              identities.set(metadata, identity);
              nextMetadata(metadata);
              return;
            }
            const proceed = (refused: LimitRefusal | undefined): void => {
              if (refused) {
                options.onLimitRejected(`identity_${refused}`);
                options.refusals.record({ actor: identity.spiffeId, authenticated: true, action: "limit.breach", target: method, reason: refused, requestId: "" });
                call.sendStatus({ code: status.RESOURCE_EXHAUSTED, details: `limit exceeded: ${limitMessages[refused]} per identity` });
                return;
              }
              limiterKey = identity.spiffeId;
              // Cancelled while a shared rate limit answered: give the slot back, go no further.
              if (cancelled) {
                release();
                return;
              }
              identities.set(metadata, identity);
              nextMetadata(metadata);
            };
            // Synchronous unless replicas share the rate (then grpc-js holds the call's messages until nextMetadata).
            const admitted = options.limits.admit(identity.spiffeId, kind);
            if (admitted instanceof Promise) void admitted.then(proceed);
            else proceed(admitted);
          },
          onCancel: () => {
            cancelled = true;
            release();
          },
        });
      },
      sendStatus: (statusObject, next) => {
        release();
        next(statusObject);
      },
    });
  };

  const authenticate: Authenticator = (call: AuthenticatableCall, method: string) => {
    const known = identities.get(call.metadata);
    if (known) return known;
    // Not seen by the interceptor (should not happen): establish it the same way.
    return identify(call.getAuthContext().sslPeerCertificate, method);
  };

  return { interceptor, authenticate };
}

/** A chain that verified, of a revoked certificate. */
class RevokedPeer extends MeshError {
  constructor(readonly spiffeId: string) {
    super("unauthenticated", "client certificate revoked");
  }
}

const limitMessages: Record<LimitRefusal, string> = { rate: "request rate", in_flight: "in-flight calls", streams: "open streams" };
