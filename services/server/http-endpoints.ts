// The server and the sidecar serve /metrics, /healthz and /readyz alike: one implementation, in the core.
export { type HttpEndpointsOptions, startHttpEndpoints } from "../../sdk/ts/src/core/http-endpoints.js";
