import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { Deployment, type DeploymentStatus, Rollout } from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { stateKeys, type ChangeLog, type FencingToken, type TxnOp, type TxnResult } from "../../state/index.js";
import type { DeploymentStore } from "../ports.js";

export interface ChangeLogDeploymentStoreOptions {
  /**
   * The leader's current fencing token, for the reconciler's instance of this store:
   * its writes are refused once a newer leader has written. API writes carry none.
   */
  fence?: () => FencingToken | undefined;
}

const maxStatusAttempts = 5;

/** Deployments as protobuf values under /deployments/<name> in the change log. */
export class ChangeLogDeploymentStore implements DeploymentStore {
  constructor(
    private readonly log: ChangeLog,
    private readonly options: ChangeLogDeploymentStoreOptions = {},
  ) {}

  async put(deployment: Deployment): Promise<void> {
    await this.write([{ type: "put", key: stateKeys.deployment(deployment.name), value: Deployment.encode(deployment).finish() }]);
  }

  async get(name: string): Promise<Deployment | undefined> {
    const { item } = await this.log.get(stateKeys.deployment(name));
    return item && Deployment.decode(item.value);
  }

  async list(): Promise<Deployment[]> {
    const { items } = await this.log.range(stateKeys.deployments);
    // Keys are /deployments/<name>, so key order is name order.
    return items.map((item) => Deployment.decode(item.value));
  }

  async putStatus(name: string, status: DeploymentStatus): Promise<boolean> {
    const key = stateKeys.deployment(name);
    // Compare-and-swap on the key's revision: a spec written meanwhile (by any replica) is kept.
    for (let attempt = 0; attempt < maxStatusAttempts; attempt += 1) {
      const { item } = await this.log.get(key);
      if (!item) return false;
      const stored = Deployment.decode(item.value);
      const fence = this.options.fence?.();
      const result = await this.log.txn(
        [{ type: "put", key, value: Deployment.encode({ ...stored, status }).finish(), expectRevision: item.modRevision }],
        fence ? { fence } : {},
      );
      if (result.ok) return true;
      if (result.reason === "fenced") throw new MeshError("failedPrecondition", "no longer the leader");
    }
    throw new MeshError("unavailable", "deployment changed too often to record its status");
  }

  async remove(name: string): Promise<boolean> {
    const result = await this.write([
      { type: "delete", key: stateKeys.deployment(name) },
      { type: "delete", key: stateKeys.rollout(name) },
    ]);
    return result.previousRevisions[0] !== 0;
  }

  async putRollout(rollout: Rollout): Promise<void> {
    await this.write([{ type: "put", key: stateKeys.rollout(rollout.deployment), value: Rollout.encode(rollout).finish() }]);
  }

  async listRollouts(): Promise<Rollout[]> {
    const { items } = await this.log.range(stateKeys.rollouts);
    return items.map((item) => Rollout.decode(item.value));
  }

  private async write(ops: TxnOp[]): Promise<Extract<TxnResult, { ok: true }>> {
    const fence = this.options.fence?.();
    const result = await this.log.txn(ops, fence ? { fence } : {});
    if (result.ok) return result;
    if (result.reason === "fenced") throw new MeshError("failedPrecondition", "no longer the leader");
    // Unconditional ops cannot conflict; reaching here is a bug, not a user error.
    throw new Error(`unexpected conflict on ${result.key}`);
  }
}
