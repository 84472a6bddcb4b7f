import type { AgentHandle } from "../sdk/ts/src/client/mesh-client.js";
import type { Clock } from "../sdk/ts/src/core/clock.js";
import { KeyedLimiter } from "../sdk/ts/src/core/token-bucket.js";
import type { AgentManifest } from "../sdk/ts/src/gen/agentmesh/v1/types.js";

/**
 * Why a live agent is kept out of routing although its process runs: it stopped
 * answering (Attach pings, health checks) or says it is NOT_SERVING
 * (unresponsive), or its calls keep timing out (outlier). Each maps to the
 * reason reported with UNHEALTHY.
 */
export type HealthCondition = "unresponsive" | "outlier";

/** One agent instance this sidecar speaks for. */
export interface LocalAgent {
  instanceId: string;
  manifest: AgentManifest;
  deployment: string;
  /** host:port the agent serves AgentService on (non-SDK agents); the supervisor assigned it. */
  agentAddr: string;
  /** Its registration and heartbeats on the Connect stream. */
  handle: AgentHandle | undefined;
  /** Started and supervised by this sidecar (false: an SDK agent that attached on its own). */
  supervised: boolean;
  draining: boolean;
  /** Empty while routable; see HealthCondition. */
  conditions: Map<HealthCondition, string>;
  inFlight: number;
  /** Resolves waiters when inFlight reaches zero (drain). */
  idleWaiters: Array<() => void>;
  limiter: KeyedLimiter | undefined;
  maxMessageBytes: number;
}

const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export function newLocalAgent(input: { instanceId: string; manifest: AgentManifest; deployment: string; agentAddr: string; supervised: boolean }, clock: Clock): LocalAgent {
  const resources = input.manifest.resources;
  const rate = resources?.invokeRatePerSecond ?? 0;
  const maxInFlight = resources?.maxInFlight ?? 0;
  return {
    ...input,
    handle: undefined,
    draining: false,
    conditions: new Map(),
    inFlight: 0,
    idleWaiters: [],
    limiter: rate > 0 || maxInFlight > 0 ? new KeyedLimiter({ ratePerSecond: rate, burst: resources?.invokeBurst || Math.max(1, Math.ceil(rate)), maxInFlight }, clock) : undefined,
    maxMessageBytes: resources?.maxMessageBytes || DEFAULT_MAX_MESSAGE_BYTES,
  };
}

/** Waits until the agent has no call in flight (or at once when it has none). */
export function whenIdle(agent: LocalAgent): Promise<void> {
  if (agent.inFlight === 0) return Promise.resolve();
  return new Promise((resolve) => agent.idleWaiters.push(resolve));
}

export function callFinished(agent: LocalAgent): void {
  agent.inFlight -= 1;
  if (agent.inFlight === 0) for (const resolve of agent.idleWaiters.splice(0)) resolve();
}
