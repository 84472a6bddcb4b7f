import type { Deployment, Rollout } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";

/**
 * Durable home of deployments (the desired state). Memory by default; PostgreSQL
 * when the server runs replicas, so any replica's reconciler sees every apply.
 * Implementations return copies: a caller changing what it got must not change
 * what is stored.
 */
export interface DeploymentStore {
  /** Inserts or replaces the deployment with this name. */
  put(deployment: Deployment): Promise<void>;
  get(name: string): Promise<Deployment | undefined>;
  /** All deployments, ordered by name. */
  list(): Promise<Deployment[]>;
  /** Returns false when no deployment had this name. Its rollout goes with it. */
  remove(name: string): Promise<boolean>;
  /** Records a deployment's rollout progress (keyed by `rollout.deployment`), so `rollout status` survives a restart. */
  putRollout(rollout: Rollout): Promise<void>;
  /** Every recorded rollout, ordered by deployment name. */
  listRollouts(): Promise<Rollout[]>;
}
