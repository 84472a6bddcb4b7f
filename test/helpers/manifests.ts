import type { AgentManifest } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";

export function manifest(overrides: Partial<AgentManifest> = {}): AgentManifest {
  return {
    name: "sql-agent",
    version: "1.0.0",
    capabilities: [{ name: "sql.query", version: "2.1.0", attributes: {} }],
    labels: { env: "test" },
    resources: undefined,
    healthPolicy: { heartbeatIntervalMs: 100, degradedErrorRate: 0, readinessTimeoutMs: 0, hungRestartAfterMs: 0 },
    agentCardJson: "",
    ...overrides,
  };
}
