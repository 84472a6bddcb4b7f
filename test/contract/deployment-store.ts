import { afterEach, describe, expect, it } from "vitest";
import { type Deployment, type Rollout, Rollout_Phase } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { DeploymentStore } from "../../services/orchestrator/ports.js";
import { manifest } from "../helpers/manifests.js";
import type { CreateHarness, StoreHarness } from "./store-harness.js";

function deployment(name: string, replicas = 1): Deployment {
  return {
    name,
    manifest: manifest({ name }),
    process: { command: "node", args: ["agent.mjs"], env: { LOG_LEVEL: "info" }, cwd: "", image: "" },
    replicas,
    restartPolicy: undefined,
    strategy: undefined,
    minReady: 0,
    generation: 1,
    status: undefined,
    createdAtMs: 1,
    updatedAtMs: 1,
  };
}

/** The DeploymentStore contract; every adapter runs it unchanged. */
export function describeDeploymentStore(adapterName: string, create: CreateHarness<DeploymentStore>): void {
  describe(`DeploymentStore contract: ${adapterName}`, () => {
    let harness: StoreHarness<DeploymentStore> | undefined;
    const open = async () => {
      harness = await create();
      return harness;
    };
    afterEach(async () => {
      await harness?.close();
      harness = undefined;
    });

    it("gets what was put and undefined for an unknown name", async () => {
      const { store } = await open();
      await store.put(deployment("word-stats", 3));
      expect(await store.get("word-stats")).toEqual(deployment("word-stats", 3));
      expect(await store.get("nope")).toBeUndefined();
    });

    it("replaces on put with the same name", async () => {
      const { store } = await open();
      await store.put(deployment("word-stats", 3));
      await store.put(deployment("word-stats", 5));
      expect((await store.get("word-stats"))?.replicas).toBe(5);
      expect(await store.list()).toHaveLength(1);
    });

    it("lists by name", async () => {
      const { store } = await open();
      for (const name of ["zeta", "alpha", "mid", "alpha-2"]) await store.put(deployment(name));
      expect((await store.list()).map((entry) => entry.name)).toEqual(["alpha", "alpha-2", "mid", "zeta"]);
    });

    it("removes and reports whether anything was removed", async () => {
      const { store } = await open();
      await store.put(deployment("word-stats"));
      expect(await store.remove("word-stats")).toBe(true);
      expect(await store.remove("word-stats")).toBe(false);
      expect(await store.get("word-stats")).toBeUndefined();
    });

    it("keeps each deployment's latest rollout, and drops it with the deployment", async () => {
      const { store, replica } = await open();
      const rollout = (deploymentName: string, updated: number): Rollout => ({
        deployment: deploymentName,
        fromVersion: "1.0.0",
        toVersion: "1.1.0",
        phase: Rollout_Phase.PHASE_PROGRESSING,
        updatedReplicas: updated,
        readyReplicas: updated,
        desiredReplicas: 3,
        message: "",
        startedAtMs: 5,
        generation: 2,
        fromRevision: "a",
        toRevision: "b",
        waitingForCapacity: 0,
      });
      await store.put(deployment("word-stats", 3));
      await store.put(deployment("alpha"));
      await store.putRollout(rollout("word-stats", 1));
      await store.putRollout(rollout("word-stats", 2));
      await store.putRollout(rollout("alpha", 0));
      expect((await replica.listRollouts()).map((entry) => [entry.deployment, entry.updatedReplicas])).toEqual([
        ["alpha", 0],
        ["word-stats", 2],
      ]);
      await store.remove("word-stats");
      expect((await store.listRollouts()).map((entry) => entry.deployment)).toEqual(["alpha"]);
    });

    it("hands out copies: changing a result does not change the store", async () => {
      const { store } = await open();
      const original = deployment("word-stats");
      await store.put(original);
      original.replicas = 99;
      const fetched = await store.get("word-stats");
      if (!fetched?.process) throw new Error("missing deployment");
      fetched.process.env.LOG_LEVEL = "debug";
      const listed = await store.list();
      expect(listed[0]?.replicas).toBe(1);
      expect(listed[0]?.process?.env.LOG_LEVEL).toBe("info");
    });

    it("records a status without undoing a spec written after the reconciler read it", async () => {
      const { store, replica } = await open();
      await store.put(deployment("word-stats", 2));
      // The reconciler read replicas 2; a scale to 5 lands (through either replica) before its status write.
      await replica.put(deployment("word-stats", 5));
      const status = { replicas: 2, readyReplicas: 2, updatedReplicas: 2, phase: "complete", message: "2 of 2 READY" };
      expect(await store.putStatus("word-stats", status)).toBe(true);
      expect(await replica.get("word-stats")).toEqual({ ...deployment("word-stats", 5), status });
      expect(await store.putStatus("nope", status)).toBe(false);
    });

    it("shows an apply through one replica on the other", async () => {
      const { store, replica } = await open();
      await store.put(deployment("word-stats", 2));
      expect(await replica.get("word-stats")).toEqual(deployment("word-stats", 2));
      expect(await replica.remove("word-stats")).toBe(true);
      expect(await store.list()).toEqual([]);
    });
  });
}
