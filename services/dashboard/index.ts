// User API first: the dashboard the server mounts on its HTTP port, and its tokens.
export { type Dashboard, type DashboardOptions, createDashboard, dashboardNeedsAuthentication } from "./dashboard.js";
export {
  type DashboardSession,
  DashboardTokenVerifier,
  type DashboardTokenVerifierOptions,
  createDashboardToken,
  maxTokenTtlMs,
  validateTokenTtlMs,
} from "./dashboard-token.js";
// Integrator hooks: the ports the wiring fills in, and the views the page receives.
export type { DashboardSources, FiringAlert, InstanceChange, RoutingEntry } from "./read-model.js";
