import type { RandomSource } from "../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { balance, balancedLoad } from "../../sdk/ts/src/core/balancer.js";
import { powerOfTwoChoicesShares } from "../../sdk/ts/src/core/p2c.js";
import type { LabelSelector } from "../../sdk/ts/src/gen/agentmesh/v1/registry.js";
import type { AgentInstance } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { Registry } from "../registry/registry.js";

/** One instance resolve() may pick, as the balancer sees it now. */
export interface RoutingCandidate {
  instance: AgentInstance;
  /** What power of two choices compares: reported in-flight + queue + picks since that report (+ the DEGRADED penalty). */
  load: number;
  /** Share of picks (0..1) these loads give it. */
  share: number;
}

export interface ResolveInput {
  capability: string;
  versionRange: string;
  labelSelector: LabelSelector | undefined;
  excludeInstanceIds: readonly string[];
  /** Sticky choice for a session (the `agentmesh-session-key` metadata entry); "" or absent = none. */
  sessionKey?: string;
}

/**
 * Picks one instance per call: newest matching version first (DESIGN §5), then
 * power of two choices on reported in-flight plus the picks handed out since that
 * report, so a burst of Resolves between two heartbeats still spreads out.
 */
export class Resolver {
  private readonly picksSinceHeartbeat = new Map<string, { count: number; heartbeatAtMs: number }>();

  constructor(
    private readonly registry: Registry,
    private readonly random: RandomSource = Math.random,
  ) {}

  resolve(input: ResolveInput): AgentInstance {
    const newest = this.registry.newestRoutable(input.capability, input.versionRange, input.labelSelector, new Set(input.excludeInstanceIds));
    const chosen = balance(newest, {
      load: (instance) => this.loadOf(instance),
      tieBreak: (instance) => instance.load?.p50Ms ?? 0,
      idOf: (instance) => instance.instanceId,
      random: this.random,
      sessionKey: input.sessionKey,
    });
    if (!chosen) throw new MeshError("noHealthyInstance", "no healthy instance for capability");
    this.recordPick(chosen);
    return chosen;
  }

  /** The routable set resolve() picks from for `capability` (newest routable version), with the load and share of each. */
  routingView(capability: string, versionRange = ""): RoutingCandidate[] {
    const newest = this.registry.newestRoutable(capability, versionRange, undefined, new Set());
    const shares = powerOfTwoChoicesShares(newest, (instance) => this.loadOf(instance), (instance) => instance.load?.p50Ms ?? 0);
    return newest.map((instance, index) => ({ instance, load: this.loadOf(instance), share: shares[index] ?? 0 }));
  }

  forget(instanceId: string): void {
    this.picksSinceHeartbeat.delete(instanceId);
  }

  private loadOf(instance: AgentInstance): number {
    const picks = this.picksSinceHeartbeat.get(instance.instanceId);
    const outstanding = picks && picks.heartbeatAtMs === instance.lastHeartbeatAtMs ? picks.count : 0;
    return balancedLoad(instance.state, (instance.load?.inFlight ?? 0) + (instance.load?.queueDepth ?? 0) + outstanding);
  }

  private recordPick(instance: AgentInstance): void {
    const picks = this.picksSinceHeartbeat.get(instance.instanceId);
    if (picks && picks.heartbeatAtMs === instance.lastHeartbeatAtMs) picks.count += 1;
    else this.picksSinceHeartbeat.set(instance.instanceId, { count: 1, heartbeatAtMs: instance.lastHeartbeatAtMs });
  }
}
