import { AsyncLocalStorage } from "node:async_hooks";
import { type KeyObject, randomBytes } from "node:crypto";
import type { Metadata, ServerUnaryCall } from "@grpc/grpc-js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";

/** Who is calling, as proven by the transport. */
export interface CallerIdentity {
  /** Empty for an anonymous caller (only the bootstrap RPCs allow one). */
  spiffeId: string;
  /** Serial of the verified client certificate (mTLS), for revocation. */
  serial?: string;
  /** Public key of the client certificate, to verify envelopes the caller signs. */
  publicKey?: KeyObject;
  /** Holds an `/admin/` identity (or the dev-mode stand-in). */
  isAdmin: boolean;
  /** Agent names this caller may register and speak for; `*` = any. */
  allowedAgentNames: ReadonlySet<string>;
}

export interface CallContext {
  requestId: string;
  caller: CallerIdentity;
  method: string;
}

/**
 * Resolves the caller of a call. Plaintext dev mode trusts everyone on loopback;
 * the mTLS authenticator reads the SPIFFE ID from the peer certificate.
 * Throws MeshError("unauthenticated") when the caller cannot be identified.
 */
export type Authenticator = (call: AuthenticatableCall, method: string) => CallerIdentity;

/** What every kind of server call offers for authentication. */
export type AuthenticatableCall = Pick<ServerUnaryCall<unknown, unknown>, "metadata" | "getPeer" | "getAuthContext">;

export function devAuthenticator(trustDomain: string): Authenticator {
  const identity: CallerIdentity = {
    spiffeId: `spiffe://${trustDomain}/admin/insecure-dev`,
    isAdmin: true,
    allowedAgentNames: new Set(["*"]),
  };
  return () => identity;
}

export function newRequestId(metadata?: Metadata): string {
  const given = metadata?.get("x-request-id")[0];
  if (typeof given === "string" && /^[A-Za-z0-9._-]{1,64}$/.test(given)) return given;
  return randomBytes(8).toString("hex");
}

export function mayActForAgent(caller: CallerIdentity, agentName: string): boolean {
  return caller.isAdmin || caller.allowedAgentNames.has("*") || caller.allowedAgentNames.has(agentName);
}

export function requireAdmin(caller: CallerIdentity): void {
  if (!caller.isAdmin) throw new MeshError("denied", "requires an admin identity");
}

const callScope = new AsyncLocalStorage<CallContext>();

/** Runs `work` (and everything it awaits) as part of the call `context`. */
export function runInCall<T>(context: CallContext, work: () => T): T {
  return callScope.run(context, work);
}

/**
 * The RPC the current code runs for, if any: lets hooks deep below a handler (the
 * registry's, the orchestrator's) audit who asked, without every layer passing it.
 * Undefined for what the server does by itself (reconciling, detecting failures).
 */
export function currentCall(): CallContext | undefined {
  return callScope.getStore();
}
