import type { AgentManifest } from "../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { RestartPolicy as SupervisorRestartPolicy } from "./supervisor/process-spec.js";

/** An agent the sidecar starts and supervises (from --manifest, or a Start command). */
export interface LocalAgentSpec {
  manifest: AgentManifest;
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  restartPolicy: SupervisorRestartPolicy;
  memoryLimitBytes?: number;
  readinessTimeoutMs: number;
  gracefulStopMs: number;
  /** Empty for unmanaged agents. */
  deployment: string;
  /** Chosen by the orchestrator for managed agents; generated otherwise. */
  instanceId?: string;
}

export interface SidecarConfig {
  /** Control-plane addresses; the sidecar uses the first (failover between replicas comes with the shared store). */
  servers: string[];
  /** Host name: the sidecar's identity is spiffe://<td>/sidecar/<host>. */
  host: string;
  trustDomain: string;
  /** Join token for the first certificate (with caCertFile), or certFile+keyFile. */
  joinToken?: string;
  caCertFile?: string;
  certFile?: string;
  keyFile?: string;
  /** Plaintext everywhere, loopback only, no signatures (development). */
  insecureDev: boolean;
  /**
   * Capabilities whose calls carry a per-call ES256/Ed25519 signature (non-repudiation:
   * the receiver records it in its audit log) instead of the tunnel's frame MAC.
   */
  signedCapabilities: string[];
  inboundHost: string;
  inboundPort: number;
  /** Address other sidecars dial (defaults to inboundHost:port, or 127.0.0.1 when bound to all). */
  advertiseAddress?: string;
  localPort: number;
  /** Bind address of the HTTP port (/metrics, /healthz, /readyz); loopback unless asked otherwise. */
  httpHost: string;
  /** 0 = an ephemeral port (logged as httpAddress). */
  httpPort: number;
  /** Managed agents it accepts from the orchestrator (0 = only --manifest agents). */
  capacity: number;
  dataDir: string;
  agents: LocalAgentSpec[];
  defaultDeny: boolean;
  allowRules: string[];
  /** Time given to in-flight calls when draining before the process is stopped. */
  drainTimeoutMs: number;
}

export const defaultSidecarConfig: Omit<SidecarConfig, "servers" | "host"> = {
  trustDomain: "agentmesh.local",
  insecureDev: false,
  signedCapabilities: [],
  inboundHost: "0.0.0.0",
  inboundPort: 7430,
  localPort: 7431,
  httpHost: "127.0.0.1",
  httpPort: 7432,
  capacity: 0,
  dataDir: ".agentmesh-sidecar",
  agents: [],
  defaultDeny: false,
  allowRules: [],
  drainTimeoutMs: 10_000,
};
