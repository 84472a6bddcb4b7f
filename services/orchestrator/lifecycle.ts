import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError, invalidArgument } from "../../sdk/ts/src/core/mesh-error.js";
import type { Command, Deployment, DeploymentStatus, Rollout } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { AuditSink } from "../../sdk/ts/src/core/audit-log.js";
import type { Registry } from "../registry/registry.js";
import type { CallerIdentity } from "../server/call-context.js";
import type { CommandSigner } from "./command-signer.js";
import type { ConnectHub, ConnectSession } from "./connect-hub.js";
import { sameSpec } from "./domain/deployment-spec.js";
import type { SidecarSnapshot } from "./domain/placement.js";
import { type ReconcileAction, type ReconcileState, observeInstance, plan, reservePendingStarts } from "./domain/reconcile.js";
import { validateDeployment, validateReplicas } from "./domain/validate-deployment.js";
import type { DeploymentStore } from "./ports.js";

export interface LifecycleOptions {
  registry: Registry;
  hub: ConnectHub;
  store: DeploymentStore;
  clock: Clock;
  log: Logger;
  audit: AuditSink;
  /** Signs commands (absent in plaintext dev mode). */
  signer: CommandSigner | undefined;
  reconcileIntervalMs: number;
  onDeploymentReady?: (deployment: string, ready: number, minReady: number) => void;
  onRollback?: (deployment: string, fromVersion: string, toVersion: string, reason: string) => void;
  /** Every command sent, by action (the server audits it). */
  onCommandSent?: (action: string, command: Command, sidecarId: string) => void;
}

/**
 * Drives actual state towards desired: deployments in the store, instances in
 * the registry, sidecars on Connect streams. The decisions are the pure `plan`
 * of domain/reconcile.ts; this class observes, carries out the actions as
 * signed commands, and answers the lifecycle RPCs.
 */
export class Lifecycle {
  private readonly states = new Map<string, ReconcileState>();
  private readonly readyAt = new Map<string, number>();
  private readonly rollouts = new Map<string, Rollout>();
  private timer: NodeJS.Timeout | undefined;
  private scheduled = false;
  private running: Promise<void> | undefined;

  constructor(private readonly options: LifecycleOptions) {}

  start(): void {
    this.timer = setInterval(() => this.requestReconcile(), this.options.reconcileIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Called on every health state change (registry hook). */
  onStateChange(instance: AgentInstance): void {
    if (instance.state === HealthState.HEALTH_STATE_READY && !this.readyAt.has(instance.instanceId)) {
      this.readyAt.set(instance.instanceId, this.options.clock.nowMs());
    }
    if (instance.deployment !== "") this.requestReconcile();
  }

  onRemoved(instanceId: string): void {
    this.readyAt.delete(instanceId);
  }

  /** Coalesces bursts of events into one reconcile pass on the next tick. */
  requestReconcile(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.running = (this.running ?? Promise.resolve()).then(() => this.reconcileAll()).catch((error: unknown) => this.options.log.error({ err: error }, "reconcile failed"));
    });
  }

  /** Waits for the reconcile pass in progress (tests, shutdown). */
  async settle(): Promise<void> {
    await this.running;
  }

  async apply(deployment: Deployment | undefined, caller: CallerIdentity, requestId: string): Promise<{ deployment: Deployment; changed: boolean }> {
    validateDeployment(deployment);
    const existing = await this.options.store.get(deployment.name);
    const nowMs = this.options.clock.nowMs();
    if (existing && sameSpec(existing, deployment)) return { deployment: existing, changed: false };
    const stored: Deployment = {
      ...deployment,
      generation: (existing?.generation ?? 0) + 1,
      status: existing?.status,
      createdAtMs: existing?.createdAtMs ?? nowMs,
      updatedAtMs: nowMs,
    };
    await this.options.store.put(stored);
    this.audit(caller, "deployment.apply", deployment.name, requestId, { version: deployment.manifest?.version, replicas: deployment.replicas, generation: stored.generation });
    this.requestReconcile();
    return { deployment: stored, changed: true };
  }

  async scale(name: string, replicas: number, caller: CallerIdentity, requestId: string): Promise<Deployment> {
    validateReplicas(replicas, "replicas");
    const existing = await this.require(name);
    const stored = { ...existing, replicas, updatedAtMs: this.options.clock.nowMs() };
    await this.options.store.put(stored);
    this.audit(caller, "deployment.scale", name, requestId, { from: existing.replicas, to: replicas });
    this.requestReconcile();
    return stored;
  }

  async remove(name: string, caller: CallerIdentity, requestId: string): Promise<void> {
    const existing = await this.require(name);
    // Scale to zero first; the deployment disappears once nothing of it is left.
    await this.options.store.put({ ...existing, replicas: 0, status: { ...(existing.status ?? emptyStatus()), phase: "deleting" } });
    this.deleting.add(name);
    this.audit(caller, "deployment.delete", name, requestId, {});
    this.requestReconcile();
  }

  private readonly deleting = new Set<string>();

  async get(name: string): Promise<{ deployment: Deployment; instances: AgentInstance[] }> {
    const deployment = await this.require(name);
    const instances = [...this.options.registry.all()].filter((instance) => instance.deployment === name);
    return { deployment, instances };
  }

  list(): Promise<Deployment[]> {
    return this.options.store.list();
  }

  rollout(name: string): Rollout {
    if (name === "") throw invalidArgument("deployment: required");
    const rollout = this.rollouts.get(name);
    if (!rollout) throw new MeshError("notFound", "no rollout for this deployment");
    return rollout;
  }

  /** RestartAgent / DrainAgent / StopAgent: a command to the sidecar running the instance. */
  async command(kind: "restart" | "drain" | "stop", instanceId: string, graceMs: number, caller: CallerIdentity, requestId: string): Promise<void> {
    const instance = this.options.registry.require(instanceId);
    if (!caller.isAdmin && caller.spiffeId !== instance.spiffeId) throw new MeshError("denied", "only the owner or an admin may change an instance");
    const session = this.options.hub.sessionFor(instanceId) ?? this.options.hub.sessionBySidecar(instance.host);
    if (!session) throw new MeshError("unavailable", "the instance's sidecar is not connected");
    const action: Command["action"] =
      kind === "restart"
        ? { $case: "restart", value: { instanceId } }
        : kind === "drain"
          ? { $case: "drain", value: { instanceId, graceMs } }
          : { $case: "stop", value: { instanceId, graceMs } };
    this.send(session, action);
    this.audit(caller, `agent.${kind}`, instanceId, requestId, { sidecar: session.sidecarId });
  }

  private async reconcileAll(): Promise<void> {
    const deployments = await this.options.store.list();
    const nowMs = this.options.clock.nowMs();
    const snapshot = this.sidecarSnapshot();
    // One pass over the registry per reconcile, not one per deployment.
    const byDeployment = new Map<string, AgentInstance[]>();
    for (const instance of this.options.registry.all()) {
      if (instance.deployment === "") continue;
      const group = byDeployment.get(instance.deployment);
      if (group) group.push(instance);
      else byDeployment.set(instance.deployment, [instance]);
    }
    for (const desired of deployments) {
      const observed = (byDeployment.get(desired.name) ?? []).map((instance) => observeInstance(instance, instance.host, this.readyAt.get(instance.instanceId)));
      const others = [...this.states.entries()].filter(([name]) => name !== desired.name).map(([, state]) => state);
      const result = plan({
        desired,
        observed,
        sidecars: reservePendingStarts(snapshot, others),
        nowMs,
        state: this.states.get(desired.name),
        newInstanceId: () => `${desired.name}-${randomBytes(4).toString("hex")}`,
      });
      this.states.set(desired.name, result.state);
      for (const action of result.actions) await this.carryOut(desired, action);
      await this.recordStatus(desired, result.status, observed.length);
    }
  }

  private async recordStatus(desired: Deployment, status: DeploymentStatus, observedCount: number): Promise<void> {
    if (this.deleting.has(desired.name) && observedCount === 0 && (this.states.get(desired.name)?.pendingStarts.length ?? 0) === 0) {
      await this.options.store.remove(desired.name);
      this.states.delete(desired.name);
      this.rollouts.delete(desired.name);
      this.deleting.delete(desired.name);
      this.options.log.info({ deployment: desired.name }, "deployment deleted");
      return;
    }
    const minReady = desired.minReady === 0 ? desired.replicas : Math.min(desired.minReady, desired.replicas);
    this.options.onDeploymentReady?.(desired.name, status.readyReplicas, minReady);
    if (JSON.stringify(desired.status) === JSON.stringify(status)) return;
    await this.options.store.put({ ...desired, status });
  }

  private async carryOut(deployment: Deployment, action: ReconcileAction): Promise<void> {
    const log = this.options.log.child({ deployment: deployment.name });
    switch (action.type) {
      case "start":
        this.sendTo(action.sidecarId, { $case: "start", value: action.command }, log, action.instanceId);
        return;
      case "drain":
        this.sendTo(action.sidecarId, { $case: "drain", value: { instanceId: action.instanceId, graceMs: action.graceMs } }, log, action.instanceId);
        return;
      case "stop":
        this.sendTo(action.sidecarId, { $case: "stop", value: { instanceId: action.instanceId, graceMs: action.graceMs } }, log, action.instanceId);
        return;
      case "reschedule":
        log.warn({ instanceId: action.instanceId, from: action.fromSidecarId, to: action.start.sidecarId }, "rescheduling instance of a lost sidecar");
        await this.forget(action.instanceId, "sidecar lost");
        this.sendTo(action.start.sidecarId, { $case: "start", value: action.start.command }, log, action.start.instanceId);
        return;
      case "forget":
        await this.forget(action.instanceId, action.reason);
        return;
      case "rolloutProgress":
        this.rollouts.set(deployment.name, action.rollout);
        return;
      case "rollback":
        log.warn({ from: action.fromVersion, to: action.toVersion, reason: action.reason }, "rolling back");
        this.audit(undefined, "rollout.rollback", deployment.name, "", { from: action.fromVersion, to: action.toVersion, reason: action.reason });
        this.options.onRollback?.(deployment.name, action.fromVersion, action.toVersion, action.reason);
        return;
    }
  }

  private async forget(instanceId: string, reason: string): Promise<void> {
    if (!this.options.registry.get(instanceId)) return;
    await this.options.registry.deregister(instanceId, reason);
  }

  private sendTo(sidecarId: string, action: Command["action"], log: Logger, instanceId: string): void {
    const session = this.options.hub.sessionBySidecar(sidecarId);
    if (!session) {
      log.warn({ sidecarId, instanceId, action: action?.$case }, "sidecar not connected; the next pass retries");
      return;
    }
    this.send(session, action);
    log.info({ sidecarId, instanceId, action: action?.$case }, "command sent");
  }

  private send(session: ConnectSession, action: Command["action"]): void {
    const command: Command = { commandId: randomBytes(8).toString("hex"), action, envelope: undefined };
    session.sendCommand(this.options.signer ? this.options.signer.sign(command, session.callerSpiffeId) : command);
    this.options.onCommandSent?.(action?.$case ?? "none", command, session.sidecarId);
  }

  private sidecarSnapshot(): SidecarSnapshot[] {
    const byHost = new Map<string, SidecarSnapshot>();
    for (const session of this.options.hub.allSessions()) {
      if (!session.hello) continue;
      byHost.set(session.sidecarId, { sidecarId: session.sidecarId, capacity: session.hello.capacity, instanceCount: 0, byDeployment: {}, connected: true });
    }
    for (const instance of this.options.registry.all()) {
      if (instance.deployment === "") continue;
      let snapshot = byHost.get(instance.host);
      if (!snapshot) {
        snapshot = { sidecarId: instance.host, capacity: 0, instanceCount: 0, byDeployment: {}, connected: false };
        byHost.set(instance.host, snapshot);
      }
      const byDeployment = snapshot.byDeployment as Record<string, number>;
      snapshot.instanceCount += 1;
      byDeployment[instance.deployment] = (byDeployment[instance.deployment] ?? 0) + 1;
    }
    return [...byHost.values()];
  }

  private async require(name: string): Promise<Deployment> {
    if (name === "") throw invalidArgument("name: required");
    const deployment = await this.options.store.get(name);
    if (!deployment) throw new MeshError("notFound", "deployment not found");
    return deployment;
  }

  private audit(caller: CallerIdentity | undefined, action: string, target: string, requestId: string, details: Record<string, unknown>): void {
    this.options.audit
      .append({ actor: caller?.spiffeId ?? "system", action, target, outcome: "success", requestId, details })
      .catch((error: unknown) => this.options.log.error({ err: error }, "audit append failed"));
  }
}

function emptyStatus(): DeploymentStatus {
  return { replicas: 0, readyReplicas: 0, updatedReplicas: 0, phase: "", message: "" };
}

