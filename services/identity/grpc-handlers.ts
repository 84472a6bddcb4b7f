import type { IdentityServiceServer } from "../../sdk/ts/src/gen/agentmesh/v1/identity.js";
import { invalidArgument } from "../../sdk/ts/src/core/mesh-error.js";
import { type RpcPlumbing, unary } from "../server/rpc-wrapper.js";
import type { IdentityAuthority } from "./identity-authority.js";

const service = "/agentmesh.v1.IdentityService";

/** Decodes IdentityService calls; who may call what is enforced by the mTLS interceptor. */
export function identityHandlers(authority: IdentityAuthority, audit: { tail(limit: number): Promise<string[]> }, plumbing: RpcPlumbing): IdentityServiceServer {
  return {
    issueCertificate: unary(plumbing, `${service}/IssueCertificate`, (request, { caller, requestId }) =>
      authority.issueCertificate(request, caller, requestId),
    ),
    getTrustBundle: unary(plumbing, `${service}/GetTrustBundle`, () => ({
      trustBundlePem: authority.trustBundle(),
      trustDomain: authority.trustDomain,
    })),
    createJoinToken: unary(plumbing, `${service}/CreateJoinToken`, (request, { caller, requestId }) =>
      authority.createJoinToken(request, caller, requestId),
    ),
    revokeCertificate: unary(plumbing, `${service}/RevokeCertificate`, async (request, { caller, requestId }) => ({
      revoked: await authority.revoke(request.target, request.reason, caller, requestId),
    })),
    listAuditEvents: unary(plumbing, `${service}/ListAuditEvents`, async (request) => {
      if (request.limit > 1000) throw invalidArgument("limit: at most 1000");
      return { entriesJson: await audit.tail(request.limit === 0 ? 50 : request.limit) };
    }),
  };
}
