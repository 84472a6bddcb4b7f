import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Clock } from "../../sdk/ts/src/core/clock.js";
import { MeshError, invalidArgument } from "../../sdk/ts/src/core/mesh-error.js";
import { ApplyDeploymentResponse_Outcome, type Command, type Deployment, type DeploymentStatus, Rollout } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import { type AgentInstance, HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { AuditOutcome, AuditSink } from "../../sdk/ts/src/core/audit-log.js";
import type { Registry } from "../registry/registry.js";
import type { CallerIdentity } from "../server/call-context.js";
import type { CommandSigner } from "./command-signer.js";
import { type ClassifiedClaim, type LastClaim, type SessionView, classifyClaim, lostReason } from "./domain/claims.js";
import { sameSpec } from "./domain/deployment-spec.js";
import type { SidecarSnapshot } from "./domain/placement.js";
import {
  type ReconcileAction,
  type ReconcileOptions,
  type ReconcileState,
  defaultReconcileOptions,
  observeInstance,
  plan,
  reservePendingStarts,
} from "./domain/reconcile.js";
import { trafficSplit } from "./domain/rollout.js";
import { validateDeployment, validateReplicas } from "./domain/validate-deployment.js";
import type { CommandOutcome, DeploymentStore, SidecarDirectory, SidecarSession } from "./ports.js";

export type { CommandOutcome } from "./ports.js";

export interface LifecycleOptions {
  registry: Registry;
  /** The sidecar sessions of every replica (ADR 0009); commands go out through them. */
  sidecars: SidecarDirectory;
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
  /** An instance found lost (claims.ts) and deregistered; `managed` when a replacement is started. */
  onInstanceLost?: (instanceId: string, reason: string, managed: boolean) => void;
  /** Passed to plan() (lostInstanceTimeoutMs, rebalance, ...). */
  reconcile?: Partial<ReconcileOptions>;
  /**
   * How long StopAgent / DrainAgent wait for the sidecar's CommandResult beyond their
   * grace, and RestartAgent in all: the sidecar answers after it has drained (bounded by
   * its --drain-timeout, 10 s by default) and stopped the process.
   */
  commandResultSlackMs?: number;
  /**
   * After a restart with deployments in the store, how long the reconciler waits for
   * sidecars to reconnect and re-register their instances before it starts replicas
   * it cannot see: without it a restart would start a second copy of everything.
   */
  adoptGraceMs?: number;
  /**
   * With replicas: whether this replica leads. Only the leader reconciles; the others
   * store what the lifecycle RPCs ask for and follow the leader's rollouts. Absent: always.
   */
  isLeader?: () => boolean;
}

interface PendingResult {
  sidecarId: string;
  settle: (outcome: CommandOutcome) => void;
  fail: (error: MeshError) => void;
}

const defaultCommandResultSlackMs = 20_000;
const defaultAdoptGraceMs = 10_000;
const sidecarMessageMaxLength = 200;

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
  /** Reconciling waits until then after a restart (see adoptGraceMs). */
  private adoptUntilMs = 0;
  /** When each session's Hello was accepted: what tells a restarted sidecar's Hello from an old one. */
  private readonly helloAt = new WeakMap<SidecarSession, number>();
  /** instance id → the last session seen reporting it. */
  private readonly lastClaim = new Map<string, LastClaim>();
  /** instance id → when it was first seen with no session reporting it. */
  private readonly unclaimedSince = new Map<string, number>();
  /** command id → the RPC waiting for its CommandResult. */
  private readonly pendingResults = new Map<string, PendingResult>();
  private readonly waitingBySession = new WeakMap<SidecarSession, Set<string>>();
  /** A short id per session object (claims and pending starts refer to sessions by it). */
  private readonly sessionIds = new WeakMap<SidecarSession, string>();
  private nextSessionId = 0;
  private timer: NodeJS.Timeout | undefined;
  private scheduled = false;
  private running: Promise<void> | undefined;
  private readonly unwatch: () => void;

  constructor(private readonly options: LifecycleOptions) {
    this.unwatch = options.sidecars.watch({
      onSessionOpened: (session) => this.onSessionHello(session),
      onSessionClosed: (session) => this.onSessionClosed(session),
      onCommandResult: (sidecarId, outcome) => this.onCommandResult(sidecarId, outcome),
      onCommandUndelivered: (sidecarId, commandId) => this.onCommandUndelivered(sidecarId, commandId),
    });
  }

  /** Loads rollout state from the store (it survives restarts), then reconciles periodically. */
  async start(): Promise<void> {
    for (const rollout of await this.options.store.listRollouts()) this.rollouts.set(rollout.deployment, rollout);
    const adoptGraceMs = this.options.adoptGraceMs ?? defaultAdoptGraceMs;
    if (adoptGraceMs > 0 && (await this.options.store.list()).length > 0) {
      this.adoptUntilMs = this.options.clock.nowMs() + adoptGraceMs;
      this.options.log.info({ adoptGraceMs }, "deployments restored from the state store: waiting for sidecars to report their instances before reconciling");
      setTimeout(() => this.requestReconcile(), adoptGraceMs).unref();
    }
    this.timer = setInterval(() => this.requestReconcile(), this.options.reconcileIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.unwatch();
  }

  /** Whether this replica reconciles (always with one server). */
  isLeading(): boolean {
    return this.options.isLeader?.() ?? true;
  }

  /** Rollout progress written by the leader (a replica that does not lead serves `rollout status` from it). */
  adoptRollouts(rollouts: Rollout[]): void {
    for (const rollout of rollouts) this.rollouts.set(rollout.deployment, rollout);
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
    this.lastClaim.delete(instanceId);
    this.unclaimedSince.delete(instanceId);
  }

  /** A session's Hello was accepted (here or on another replica): what an earlier session of that sidecar reported and this one does not list is lost now. */
  onSessionHello(session: SidecarSession): void {
    this.helloAt.set(session, this.options.clock.nowMs());
    this.requestReconcile();
  }

  /** A sidecar answered a command. */
  onCommandResult(sidecarId: string, outcome: CommandOutcome): void {
    const waiting = this.pendingResults.get(outcome.commandId);
    if (waiting && waiting.sidecarId === sidecarId) waiting.settle(outcome);
  }

  /** The holder replica found the session gone before it could put the command on it. */
  private onCommandUndelivered(sidecarId: string, commandId: string): void {
    const waiting = this.pendingResults.get(commandId);
    if (waiting && waiting.sidecarId === sidecarId) waiting.fail(new MeshError("unavailable", "the instance's sidecar is not connected"));
  }

  /**
   * No result can come on a session that ended: whoever waits on one hears so now. A
   * session of another replica may end with no health change here (its holder died),
   * so this is a reason to reconcile too.
   */
  private onSessionClosed(session: SidecarSession): void {
    this.requestReconcile();
    const waiting = this.waitingBySession.get(session);
    if (!waiting) return;
    this.waitingBySession.delete(session);
    for (const commandId of [...waiting]) {
      this.pendingResults.get(commandId)?.fail(new MeshError("unavailable", `sidecar ${session.sidecarId} disconnected before reporting the outcome`));
    }
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

  /** ApplyDeployment: stores the spec unless it equals the stored one, and says which (kubectl's created / configured / unchanged). */
  async apply(deployment: Deployment | undefined, caller: CallerIdentity, requestId: string): Promise<{ deployment: Deployment; changed: boolean; outcome: ApplyDeploymentResponse_Outcome }> {
    validateDeployment(deployment);
    const existing = await this.options.store.get(deployment.name);
    const nowMs = this.options.clock.nowMs();
    const deleting = existing !== undefined && this.isDeleting(existing);
    if (existing && !deleting && sameSpec(existing, deployment)) return { deployment: existing, changed: false, outcome: ApplyDeploymentResponse_Outcome.OUTCOME_UNCHANGED };
    const stored: Deployment = {
      ...deployment,
      generation: (existing?.generation ?? 0) + 1,
      // Applied again while being deleted: the deletion is called off.
      status: deleting ? { ...(existing?.status ?? emptyStatus()), phase: "", message: "" } : existing?.status,
      createdAtMs: existing?.createdAtMs ?? nowMs,
      updatedAtMs: nowMs,
    };
    this.deleting.delete(deployment.name);
    await this.options.store.put(stored);
    this.audit(caller, "deployment.apply", deployment.name, requestId, { version: deployment.manifest?.version, replicas: deployment.replicas, generation: stored.generation });
    this.requestReconcile();
    const outcome = existing === undefined ? ApplyDeploymentResponse_Outcome.OUTCOME_CREATED : ApplyDeploymentResponse_Outcome.OUTCOME_CONFIGURED;
    return { deployment: stored, changed: true, outcome };
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

  /**
   * DeleteDeployment: scales to zero (serving instances drained, then every
   * instance stopped) and removes the deployment once nothing of it is left. The
   * "deleting" phase is stored, so a server restart finishes the deletion.
   */
  async remove(name: string, caller: CallerIdentity, requestId: string): Promise<{ instances: number }> {
    const existing = await this.require(name);
    const instances = [...this.options.registry.all()].filter((instance) => instance.deployment === name).length;
    await this.options.store.put({ ...existing, replicas: 0, status: deletingStatus(existing.status, instances) });
    this.deleting.add(name);
    this.audit(caller, "deployment.delete", name, requestId, { instances });
    this.requestReconcile();
    return { instances };
  }

  private readonly deleting = new Set<string>();

  private isDeleting(deployment: Deployment): boolean {
    return this.deleting.has(deployment.name) || deployment.status?.phase === deletingPhase;
  }

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

  /**
   * RestartAgent / DrainAgent / StopAgent: a command to the sidecar running the
   * instance, answered once the sidecar reports the outcome (bounded). A refusal
   * is the caller's FAILED_PRECONDITION with the sidecar's short message; no
   * answer in time is DEADLINE_EXCEEDED, since the command may still complete.
   */
  async command(kind: "restart" | "drain" | "stop", instanceId: string, graceMs: number, caller: CallerIdentity, requestId: string): Promise<void> {
    const instance = this.options.registry.require(instanceId);
    if (!caller.isAdmin && caller.spiffeId !== instance.spiffeId) throw new MeshError("denied", "only the owner or an admin may change an instance");
    const session = this.options.sidecars.sessionFor(instanceId) ?? this.sessionOfSidecar(this.lastClaim.get(instanceId)?.sidecarId ?? instance.host);
    if (!session) throw new MeshError("unavailable", "the instance's sidecar is not connected");
    const action: Command["action"] =
      kind === "restart"
        ? { $case: "restart", value: { instanceId } }
        : kind === "drain"
          ? { $case: "drain", value: { instanceId, graceMs } }
          : { $case: "stop", value: { instanceId, graceMs } };
    const slackMs = this.options.commandResultSlackMs ?? defaultCommandResultSlackMs;
    const commandId = newCommandId();
    const outcome = this.awaitResult(session, commandId, (kind === "restart" ? 0 : graceMs) + slackMs);
    if (!(await this.send(session, action, commandId))) this.pendingResults.get(commandId)?.fail(new MeshError("unavailable", "the instance's sidecar is not connected"));
    let result: CommandOutcome;
    try {
      result = await outcome;
    } catch (error) {
      this.audit(caller, `agent.${kind}`, instanceId, requestId, { sidecar: session.sidecarId, problem: error instanceof MeshError ? error.message : "no result" }, "failure");
      throw error;
    }
    if (!result.ok) {
      const problem = result.message.slice(0, sidecarMessageMaxLength) || "no reason given";
      this.audit(caller, `agent.${kind}`, instanceId, requestId, { sidecar: session.sidecarId, problem }, "failure");
      throw new MeshError("failedPrecondition", `sidecar ${session.sidecarId} refused ${kind}: ${problem}`);
    }
    this.audit(caller, `agent.${kind}`, instanceId, requestId, { sidecar: session.sidecarId });
  }

  /** Resolves with the session's CommandResult for `commandId`; rejects when the stream ends first or nothing comes within `timeoutMs`. */
  private awaitResult(session: SidecarSession, commandId: string, timeoutMs: number): Promise<CommandOutcome> {
    return new Promise<CommandOutcome>((resolve, reject) => {
      const timer = setTimeout(
        () => finish(() => reject(new MeshError("deadlineExceeded", `sidecar ${session.sidecarId} reported no outcome within ${timeoutMs} ms; the command may still complete`))),
        timeoutMs,
      );
      timer.unref();
      const waiting = this.waitingOn(session);
      const finish = (settle: () => void) => {
        if (!this.pendingResults.has(commandId)) return;
        this.pendingResults.delete(commandId);
        waiting.delete(commandId);
        clearTimeout(timer);
        settle();
      };
      this.pendingResults.set(commandId, {
        sidecarId: session.sidecarId,
        settle: (outcome) => finish(() => resolve(outcome)),
        fail: (error) => finish(() => reject(error)),
      });
      waiting.add(commandId);
    });
  }

  /** Command ids awaiting a result on `session`; failed together when it closes (onSessionClosed). */
  private waitingOn(session: SidecarSession): Set<string> {
    let waiting = this.waitingBySession.get(session);
    if (!waiting) {
      waiting = new Set<string>();
      this.waitingBySession.set(session, waiting);
    }
    return waiting;
  }

  private async reconcileAll(): Promise<void> {
    if (this.options.isLeader && !this.options.isLeader()) return;
    const nowMs = this.options.clock.nowMs();
    const deployments = await this.options.store.list();
    if (nowMs < this.adoptUntilMs) {
      // Still adopting after a restart: wait until every deployment's instances are back
      // (its sidecars reconnected and report them) or the grace ends. Registrations are
      // kept in the store, so "registered" alone says nothing about a sidecar being back.
      const registered = new Map<string, number>();
      for (const instance of this.options.registry.all()) {
        if (this.options.sidecars.sessionFor(instance.instanceId)) registered.set(instance.deployment, (registered.get(instance.deployment) ?? 0) + 1);
      }
      if (deployments.some((deployment) => (registered.get(deployment.name) ?? 0) < deployment.replicas)) return;
      this.adoptUntilMs = 0;
      this.options.log.info("every deployment's instances reported back: reconciling");
    }
    const claims = this.classifyClaims(nowMs);
    const lostRules = {
      connected: new Set(this.options.sidecars.sessions().map((session) => session.sidecarId)),
      nowMs,
      lostAfterMs: this.reconcileOptions.lostInstanceTimeoutMs,
    };
    const managedNames = new Set(deployments.map((deployment) => deployment.name));
    const snapshot = this.sidecarSnapshot(claims, lostRules);
    // One pass over the registry per reconcile, not one per deployment.
    const byDeployment = new Map<string, AgentInstance[]>();
    const unmanaged: AgentInstance[] = [];
    for (const instance of this.options.registry.all()) {
      if (!managedNames.has(instance.deployment)) {
        unmanaged.push(instance);
        continue;
      }
      const group = byDeployment.get(instance.deployment);
      if (group) group.push(instance);
      else byDeployment.set(instance.deployment, [instance]);
    }
    for (const desired of deployments) {
      const observed = (byDeployment.get(desired.name) ?? []).map((instance) => {
        const claim = claims.get(instance.instanceId) ?? { sidecarId: instance.host, claim: { kind: "claimed" as const } };
        return observeInstance(instance, { ...claim, readyAtMs: this.readyAt.get(instance.instanceId) });
      });
      const others = [...this.states.entries()].filter(([name]) => name !== desired.name).map(([, state]) => state);
      const result = plan({
        desired,
        observed,
        sidecars: reservePendingStarts(snapshot, others),
        nowMs,
        state: this.states.get(desired.name),
        newInstanceId: () => `${desired.name}-${randomBytes(4).toString("hex")}`,
        options: this.reconcileOptions,
      });
      this.states.set(desired.name, result.state);
      // Canary weights reach routing: the split rides on the instances the sidecars Watch.
      const rollout = result.state.rollout;
      const splitInForce = rollout.phase === "progressing" || rollout.phase === "paused" || rollout.phase === "rolling_back";
      this.options.registry.setTrafficSplit(desired.name, splitInForce ? trafficSplit(rollout) : {});
      for (const action of result.actions) await this.carryOut(desired, action);
      await this.recordStatus(desired, result.status, observed.length);
    }
    await this.removeLostUnmanaged(unmanaged, claims, lostRules);
  }

  private get reconcileOptions(): ReconcileOptions {
    return { ...defaultReconcileOptions, ...this.options.reconcile };
  }

  /**
   * Who vouches for each instance (claims.ts), from the open sessions. Remembers
   * the last claimant and since when an instance has had none, across passes.
   */
  private classifyClaims(nowMs: number): Map<string, ClassifiedClaim> {
    const views = new Map<SidecarSession, SessionView>();
    for (const session of this.options.sidecars.sessions()) {
      views.set(session, {
        sessionId: this.sessionIdOf(session),
        sidecarId: session.sidecarId,
        host: session.host,
        helloAtMs: this.helloAt.get(session),
        helloInstanceIds: session.helloInstanceIds,
      });
    }
    const sessions = [...views.values()];
    const claims = new Map<string, ClassifiedClaim>();
    for (const instance of this.options.registry.all()) {
      const claimantSession = this.options.sidecars.sessionFor(instance.instanceId);
      const claimant = claimantSession ? views.get(claimantSession) : undefined;
      const classified = classifyClaim({
        instanceId: instance.instanceId,
        host: instance.host,
        claimant,
        lastClaim: this.lastClaim.get(instance.instanceId),
        unclaimedSinceMs: this.unclaimedSince.get(instance.instanceId),
        sessions,
        nowMs,
      });
      if (claimant) {
        this.lastClaim.set(instance.instanceId, { sessionId: claimant.sessionId, sidecarId: claimant.sidecarId, helloAtMs: claimant.helloAtMs });
        this.unclaimedSince.delete(instance.instanceId);
      } else if (classified.claim.kind === "unclaimed" && !this.unclaimedSince.has(instance.instanceId)) {
        this.unclaimedSince.set(instance.instanceId, classified.claim.sinceMs);
      }
      claims.set(instance.instanceId, classified);
    }
    return claims;
  }

  /**
   * Instances no deployment manages are not replaced, but a lost one is still
   * deregistered, so ListAgents and routing do not keep a ghost. The sidecar of
   * one that does exist after all re-registers it on its next Hello.
   */
  private async removeLostUnmanaged(
    instances: readonly AgentInstance[],
    claims: ReadonlyMap<string, ClassifiedClaim>,
    rules: { connected: ReadonlySet<string>; nowMs: number; lostAfterMs: number },
  ): Promise<void> {
    for (const instance of instances) {
      const claim = claims.get(instance.instanceId);
      if (!claim) continue;
      const reason = lostReason({ ...claim, state: instance.state }, { ...rules, managed: false });
      if (reason === undefined) continue;
      this.options.log.warn({ instanceId: instance.instanceId, agentName: instance.manifest?.name, sidecarId: claim.sidecarId, reason }, "removing a lost instance");
      this.options.onInstanceLost?.(instance.instanceId, reason, false);
      await this.forget(instance.instanceId, `lost: ${reason}`);
    }
  }

  private async recordStatus(desired: Deployment, status: DeploymentStatus, observedCount: number): Promise<void> {
    if (this.isDeleting(desired)) {
      if (observedCount === 0 && (this.states.get(desired.name)?.pendingStarts.length ?? 0) === 0) {
        await this.options.store.remove(desired.name);
        this.states.delete(desired.name);
        this.rollouts.delete(desired.name);
        this.deleting.delete(desired.name);
        this.options.log.info({ deployment: desired.name }, "deployment deleted");
        return;
      }
      status = deletingStatus(status, observedCount);
    }
    const minReady = desired.minReady === 0 ? desired.replicas : Math.min(desired.minReady, desired.replicas);
    if (!this.isDeleting(desired)) this.options.onDeploymentReady?.(desired.name, status.readyReplicas, minReady);
    if (JSON.stringify(desired.status) === JSON.stringify(status)) return;
    await this.options.store.putStatus(desired.name, status);
  }

  private async carryOut(deployment: Deployment, action: ReconcileAction): Promise<void> {
    const log = this.options.log.child({ deployment: deployment.name });
    switch (action.type) {
      case "start":
        await this.sendTo(action.sidecarId, { $case: "start", value: action.command }, log, action.instanceId);
        return;
      case "drain":
        await this.sendTo(action.sidecarId, { $case: "drain", value: { instanceId: action.instanceId, graceMs: action.graceMs } }, log, action.instanceId);
        return;
      case "stop":
        await this.sendTo(action.sidecarId, { $case: "stop", value: { instanceId: action.instanceId, graceMs: action.graceMs } }, log, action.instanceId);
        return;
      case "reschedule":
        log.warn(
          { instanceId: action.instanceId, from: action.fromSidecarId, to: action.start.sidecarId, replacement: action.start.instanceId, reason: action.reason },
          "replacing a lost instance",
        );
        this.options.onInstanceLost?.(action.instanceId, action.reason, true);
        await this.sendTo(action.start.sidecarId, { $case: "start", value: action.start.command }, log, action.start.instanceId);
        await this.forget(action.instanceId, `lost: ${action.reason}`);
        return;
      case "forget":
        if (this.options.registry.get(action.instanceId)) log.warn({ instanceId: action.instanceId, reason: action.reason }, "removing an instance nobody can stop");
        await this.forget(action.instanceId, action.reason);
        return;
      case "move":
        log.info({ instanceId: action.instanceId, from: action.fromSidecarId, to: action.toSidecarId, phase: action.phase, reason: action.reason }, `rebalancing move ${action.phase}`);
        return;
      case "rolloutProgress": {
        const previous = this.rollouts.get(deployment.name);
        this.rollouts.set(deployment.name, action.rollout);
        if (!previous || !sameRollout(previous, action.rollout)) await this.options.store.putRollout(action.rollout);
        return;
      }
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

  private async sendTo(sidecarId: string, action: Command["action"], log: Logger, instanceId: string): Promise<void> {
    const session = this.sessionOfSidecar(sidecarId);
    if (!session || !(await this.send(session, action, newCommandId()))) {
      log.warn({ sidecarId, instanceId, action: action?.$case }, "sidecar not connected; the next pass retries");
      return;
    }
    log.info({ sidecarId, instanceId, action: action?.$case }, "command sent");
  }

  private async send(session: SidecarSession, action: Command["action"], commandId: string): Promise<boolean> {
    const command: Command = { commandId, action, envelope: undefined };
    const sent = await session.sendCommand(this.options.signer ? this.options.signer.sign(command, session.callerSpiffeId) : command);
    if (sent) this.options.onCommandSent?.(action?.$case ?? "none", command, session.sidecarId);
    return sent;
  }

  /**
   * Managed instances per sidecar for placement: attributed to the sidecar whose
   * session reports them (claims.ts), lost ones left out, so a restarted
   * sidecar's ghosts never take up its capacity.
   */
  private sidecarSnapshot(
    claims: ReadonlyMap<string, ClassifiedClaim>,
    rules: { connected: ReadonlySet<string>; nowMs: number; lostAfterMs: number },
  ): SidecarSnapshot[] {
    const bySidecar = new Map<string, SidecarSnapshot>();
    for (const session of this.options.sidecars.sessions()) {
      bySidecar.set(session.sidecarId, {
        sidecarId: session.sidecarId,
        host: session.host,
        capacity: session.capacity,
        instanceCount: 0,
        byDeployment: {},
        connected: true,
        sessionId: this.sessionIdOf(session),
      });
    }
    for (const instance of this.options.registry.all()) {
      if (instance.deployment === "") continue;
      const claim = claims.get(instance.instanceId) ?? { sidecarId: instance.host, claim: { kind: "claimed" as const } };
      if (lostReason({ ...claim, state: instance.state }, { ...rules, managed: true }) !== undefined) continue;
      let snapshot = bySidecar.get(claim.sidecarId);
      if (!snapshot) {
        snapshot = { sidecarId: claim.sidecarId, capacity: 0, instanceCount: 0, byDeployment: {}, connected: false };
        bySidecar.set(claim.sidecarId, snapshot);
      }
      const byDeployment = snapshot.byDeployment as Record<string, number>;
      snapshot.instanceCount += 1;
      byDeployment[instance.deployment] = (byDeployment[instance.deployment] ?? 0) + 1;
    }
    return [...bySidecar.values()];
  }

  /**
   * The sidecar's newest open session: while an old stream of a restarted sidecar
   * is not yet seen closed, commands must go to the one that runs its processes now.
   */
  private sessionOfSidecar(sidecarId: string): SidecarSession | undefined {
    let newest: SidecarSession | undefined;
    for (const session of this.options.sidecars.sessions()) {
      if (session.closed || session.sidecarId !== sidecarId) continue;
      if (!newest || (this.helloAt.get(session) ?? 0) >= (this.helloAt.get(newest) ?? 0)) newest = session;
    }
    return newest;
  }

  /** The session's id in `sessionIds`, assigned on first use. */
  private sessionIdOf(session: SidecarSession): string {
    let id = this.sessionIds.get(session);
    if (id === undefined) {
      this.nextSessionId += 1;
      id = `session-${this.nextSessionId}`;
      this.sessionIds.set(session, id);
    }
    return id;
  }

  private async require(name: string): Promise<Deployment> {
    if (name === "") throw invalidArgument("name: required");
    const deployment = await this.options.store.get(name);
    if (!deployment) throw new MeshError("notFound", "deployment not found");
    return deployment;
  }

  private audit(
    caller: CallerIdentity | undefined,
    action: string,
    target: string,
    requestId: string,
    details: Record<string, unknown>,
    outcome: AuditOutcome = "success",
  ): void {
    this.options.audit
      .append({ actor: caller?.spiffeId ?? "system", action, target, outcome, requestId, details })
      .catch((error: unknown) => this.options.log.error({ err: error }, "audit append failed"));
  }
}

function newCommandId(): string {
  return randomBytes(8).toString("hex");
}

const deletingPhase = "deleting";

/** The status of a deployment being deleted: what is left of it. */
function deletingStatus(status: DeploymentStatus | undefined, instancesLeft: number): DeploymentStatus {
  return { ...(status ?? emptyStatus()), phase: deletingPhase, message: `deleting: ${instancesLeft} instance(s) left to drain and stop` };
}

function emptyStatus(): DeploymentStatus {
  return { replicas: 0, readyReplicas: 0, updatedReplicas: 0, phase: "", message: "" };
}

function sameRollout(left: Rollout, right: Rollout): boolean {
  return Buffer.compare(Rollout.encode(left).finish(), Rollout.encode(right).finish()) === 0;
}
