import { type ServerDuplexStream, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import {
  type Command,
  type ConnectRequest,
  type ConnectResponse,
  type DataPlaneRefusals,
  type Heartbeat,
  type Hello,
  Hello as HelloMessage,
  type InstanceEvent,
  type RevokedCertificate,
  type SidecarStatus,
} from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { CallerIdentity } from "../server/call-context.js";
import { HealthState } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import type { Registry } from "../registry/registry.js";
import type { CommandOutcome, SidecarSession } from "./ports.js";

export interface ConnectHubOptions {
  /** After a stream ends, its instances turn UNHEALTHY unless announced again within this time. */
  reconnectGraceMs: number;
  heartbeatTimeoutMultiplier: number;
  serverId: string;
  maxInstancesPerStream: number;
  /**
   * The mesh's revoked certificates not yet expired: sent after every Welcome (when any), so
   * sidecars refuse tunnels and frames of a revoked peer (docs/signing.md §8.6).
   */
  revokedCertificates?: () => RevokedCertificate[];
}

export interface ConnectHubHooks {
  onHeartbeats?(count: number): void;
  onStreamLost?(instanceId: string): void;
  onStreamCountChange?(open: number): void;
  onCommandResult?(sidecarId: string, result: { commandId: string; ok: boolean; message: string; instanceId: string }): void;
  /** A Hello was accepted: the session now speaks for the instances it listed (the orchestrator judges the others lost). */
  onHello?(session: ConnectSession): void;
  /** A refused Hello, replayed sequence or claim on another's instance: audited by the server. */
  onRejected?(callerSpiffeId: string, requestId: string, reason: string): void;
  /** A sidecar's data-plane refusal totals (cumulative since it started), already validated. */
  onDataPlaneRefusals?(sidecarId: string, refusals: readonly DataPlaneRefusals[]): void;
}

// A status report names at most this many reasons, each a short label.
const maxRefusalReasons = 64;
const refusalReasonPattern = /^[a-z0-9_]{1,64}$/;

/**
 * Decides whether a caller may speak for an instance; throws MeshError("denied")
 * when not. With mTLS this checks the instance owner against the peer identity.
 */
export type InstanceAuthorizer = (callerSpiffeId: string, instanceOwner: string, agentName: string) => void;

export type ConnectCall = ServerDuplexStream<ConnectRequest, ConnectResponse>;

/** Verifies a signed Hello; answers the signed Hello bytes, or undefined when there is nothing to verify (dev mode). */
export type HelloOpener = (hello: Hello, caller: CallerIdentity) => Promise<Uint8Array | undefined>;

/**
 * What happens to the sessions of one hub, for the sidecar directories
 * (adapters/*-sidecar-directory.ts). Several may watch.
 */
export interface ConnectSessionListener {
  /** Its Hello was accepted (after the Welcome went out). */
  opened?(session: ConnectSession): void;
  /** The instances it speaks for changed (an announcement, a hand-over). */
  claimsChanged?(session: ConnectSession): void;
  /** The stream ended; also during shutdown. */
  closed?(session: ConnectSession): void;
  commandResult?(sidecarId: string, result: CommandOutcome): void;
}

/** One open Connect stream: a sidecar speaking for its local instances. */
export class ConnectSession implements SidecarSession {
  readonly instanceIds = new Set<string>();
  lastSequence = 0;
  private acceptedHello: Hello | undefined;
  private helloIds: ReadonlySet<string> = new Set();
  closed = false;
  /** Messages that arrived while the signed Hello was being verified. */
  backlog: ConnectRequest[] | undefined;

  constructor(
    readonly call: ConnectCall,
    readonly caller: CallerIdentity,
    readonly log: Logger,
    readonly requestId = "",
    /** serverId of this replica. */
    readonly holder = "",
  ) {}

  get hello(): Hello | undefined {
    return this.acceptedHello;
  }

  set hello(hello: Hello | undefined) {
    this.acceptedHello = hello;
    this.helloIds = new Set(hello?.instanceIds ?? []);
  }

  get host(): string {
    return this.acceptedHello?.host ?? "";
  }

  get capacity(): number {
    return this.acceptedHello?.capacity ?? 0;
  }

  get helloInstanceIds(): ReadonlySet<string> {
    return this.helloIds;
  }

  get callerSpiffeId(): string {
    return this.caller.spiffeId;
  }

  get sidecarId(): string {
    return this.hello?.sidecarId ?? "";
  }

  send(message: ConnectResponse): boolean {
    if (this.closed) return false;
    this.call.write(message);
    return true;
  }

  sendCommand(command: Command): boolean {
    return this.send({ msg: { $case: "command", value: command } });
  }
}

/**
 * Serves OrchestratorService.Connect: one stream per sidecar carrying heartbeats
 * for all of its agents, and commands back.
 */
export class ConnectHub {
  private readonly sessions = new Set<ConnectSession>();
  /** instance id → the session that currently speaks for it. */
  private readonly sessionByInstance = new Map<string, ConnectSession>();
  private readonly graceTimers = new Map<string, NodeJS.Timeout>();
  private shuttingDown = false;
  private readonly listeners = new Set<ConnectSessionListener>();
  /** The session whose Hello is being applied: its claims are announced with `opened`. */
  private opening: ConnectSession | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly log: Logger,
    private readonly options: ConnectHubOptions,
    private readonly authorize: InstanceAuthorizer,
    private readonly hooks: ConnectHubHooks = {},
    private readonly openHello: HelloOpener = async () => undefined,
  ) {}

  get openStreams(): number {
    return this.sessions.size;
  }

  sessionFor(instanceId: string): ConnectSession | undefined {
    return this.sessionByInstance.get(instanceId);
  }

  /** The newest open stream of a sidecar: while it moves to a new connection it briefly has two. */
  sessionBySidecar(sidecarId: string): ConnectSession | undefined {
    let newest: ConnectSession | undefined;
    for (const session of this.sessions) if (session.sidecarId === sidecarId && !session.closed) newest = session;
    return newest;
  }

  allSessions(): ConnectSession[] {
    return [...this.sessions];
  }

  /** Follows session openings, claim changes, closings and command results. */
  watchSessions(listener: ConnectSessionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(notify: (listener: ConnectSessionListener) => void): void {
    for (const listener of this.listeners) {
      try {
        notify(listener);
      } catch (error) {
        this.log.error({ err: error }, "connect session listener failed");
      }
    }
  }

  handle(call: ConnectCall, caller: CallerIdentity, requestId: string): void {
    const session = new ConnectSession(call, caller, this.log.child({ requestId, spiffeId: caller.spiffeId }), requestId, this.options.serverId);
    if (this.shuttingDown) {
      call.emit("error", { code: status.UNAVAILABLE, details: "server shutting down" });
      return;
    }
    this.sessions.add(session);
    this.hooks.onStreamCountChange?.(this.sessions.size);
    call.on("data", (request: ConnectRequest) => this.onMessage(session, request));
    call.on("end", () => {
      this.close(session, "stream ended");
      call.end();
    });
    call.on("error", () => this.close(session, "stream error"));
    call.on("cancelled", () => this.close(session, "stream cancelled"));
    call.on("close", () => this.close(session, "stream closed"));
  }

  /** Ends the streams opened with these certificate serials (revocation). */
  disconnectSerials(serials: ReadonlySet<string>, reason: string): void {
    for (const session of [...this.sessions]) {
      if (!serials.has(session.caller.serial ?? "")) continue;
      session.log.warn({ sidecarId: session.sidecarId, reason }, "closing stream");
      session.call.emit("error", { code: status.UNAUTHENTICATED, details: reason });
      this.close(session, reason);
    }
  }

  /**
   * Tells every welcomed stream about certificates revoked just now (here or on
   * another replica); streams opened with those certificates are closed instead.
   */
  announceRevocations(certificates: readonly RevokedCertificate[]): void {
    if (certificates.length === 0) return;
    const serials = new Set(certificates.map((certificate) => certificate.serial));
    for (const session of this.sessions) {
      if (!session.hello || serials.has(session.caller.serial ?? "")) continue;
      session.send({ msg: { $case: "revocations", value: { certificates: [...certificates], full: false } } });
    }
  }

  /** Tells every sidecar the server is going away, then ends their streams cleanly. */
  shutdown(reason: string, retryAfterMs: number): void {
    this.shuttingDown = true;
    for (const session of this.sessions) {
      session.send({ msg: { $case: "shutdown", value: { reason, retryAfterMs } } });
      session.closed = true;
      session.call.end();
    }
    for (const timer of this.graceTimers.values()) clearTimeout(timer);
    this.graceTimers.clear();
  }

  private onMessage(session: ConnectSession, request: ConnectRequest): void {
    if (session.backlog) {
      session.backlog.push(request);
      return;
    }
    const message = request.msg;
    try {
      if (!message) throw new MeshError("invalidArgument", "msg: required");
      if (!session.hello && message.$case !== "hello") throw new MeshError("failedPrecondition", "first message must be hello");
      switch (message.$case) {
        case "hello":
          this.beginHello(session, message.value);
          return;
        case "heartbeat":
          this.onHeartbeat(session, message.value);
          return;
        case "instanceEvent":
          this.onInstanceEvent(session, message.value);
          return;
        case "commandResult":
          this.hooks.onCommandResult?.(session.sidecarId, message.value);
          this.emit((listener) => listener.commandResult?.(session.sidecarId, message.value));
          return;
        case "status":
          this.onStatus(session, message.value);
          return;
      }
    } catch (error) {
      this.fail(session, error);
    }
  }

  /** Verifies a signed Hello; messages arriving meanwhile wait in order. */
  private beginHello(session: ConnectSession, hello: Hello): void {
    if (session.hello) throw new MeshError("failedPrecondition", "hello sent twice");
    session.backlog = [];
    this.openHello(hello, session.caller).then(
      (signed) => {
        const backlog = session.backlog ?? [];
        session.backlog = undefined;
        try {
          this.onHello(session, signed ? decodeHello(signed) : hello);
        } catch (error) {
          this.fail(session, error);
          return;
        }
        for (const queued of backlog) this.onMessage(session, queued);
      },
      (error: unknown) => {
        session.backlog = undefined;
        this.fail(session, error);
      },
    );
  }

  private onHello(session: ConnectSession, hello: Hello): void {
    if (hello.sidecarId === "" || hello.sidecarId.length > 253) throw new MeshError("invalidArgument", "hello.sidecar_id: 1-253 characters");
    if (hello.instanceIds.length > this.options.maxInstancesPerStream) {
      throw new MeshError("overLimit", `hello.instance_ids: more than ${this.options.maxInstancesPerStream}`);
    }
    session.hello = hello;
    const unknown: string[] = [];
    // The Welcome is always the first message (orchestrator.proto): refusals of
    // single instances wait until it has gone out.
    const refused: Array<{ error: MeshError; instanceId: string }> = [];
    this.opening = session;
    try {
      for (const instanceId of hello.instanceIds) {
        try {
          if (!this.attach(session, instanceId)) unknown.push(instanceId);
        } catch (error) {
          if (!(error instanceof MeshError)) throw error;
          refused.push({ error, instanceId });
        }
      }
    } finally {
      this.opening = undefined;
    }
    session.send({
      msg: {
        $case: "welcome",
        value: {
          serverId: this.options.serverId,
          unknownInstanceIds: unknown,
          heartbeatTimeoutMultiplier: this.options.heartbeatTimeoutMultiplier,
        },
      },
    });
    // Only when there is something to say: a sidecar starts with an empty set, and forgets expired ones itself.
    const revoked = this.options.revokedCertificates?.() ?? [];
    if (revoked.length > 0) session.send({ msg: { $case: "revocations", value: { certificates: revoked, full: true } } });
    for (const { error, instanceId } of refused) this.streamError(session, error.code, error.message, instanceId);
    session.log.info({ sidecarId: hello.sidecarId, instances: hello.instanceIds.length, unknown: unknown.length }, "sidecar connected");
    this.hooks.onHello?.(session);
    this.emit((listener) => listener.opened?.(session));
  }

  private onHeartbeat(session: ConnectSession, heartbeat: Heartbeat): void {
    // A sequence that does not move forward is a replayed (or reordered) message.
    if (heartbeat.sequence <= session.lastSequence) {
      throw new MeshError("invalidArgument", "heartbeat.sequence: must increase");
    }
    session.lastSequence = heartbeat.sequence;
    let counted = 0;
    for (const beat of heartbeat.instances) {
      if (!this.speaksFor(session, beat.instanceId) && !this.announce(session, beat.instanceId, beat.announce)) continue;
      counted += 1;
      if (beat.reportedState === HealthState.HEALTH_STATE_STARTING) {
        // Alive but not ready yet (its sidecar is waiting for readiness): no routing, no timeout.
        this.registry.touch(beat.instanceId, beat.load);
        continue;
      }
      if (beat.reportedState === HealthState.HEALTH_STATE_UNHEALTHY) {
        this.registry.applyHealthEvent(beat.instanceId, { type: "reportedUnhealthy" }, "agent reported unhealthy");
        continue;
      }
      const reported = beat.reportedState === HealthState.HEALTH_STATE_DEGRADED ? "degraded" : "ready";
      this.registry.recordHeartbeat(beat.instanceId, beat.load, reported);
    }
    this.hooks.onHeartbeats?.(counted);
  }

  private onStatus(session: ConnectSession, report: SidecarStatus): void {
    if (report.refusals.length > maxRefusalReasons) throw new MeshError("invalidArgument", `status.refusals: more than ${maxRefusalReasons} reasons`);
    for (const { reason, total } of report.refusals) {
      if (!refusalReasonPattern.test(reason)) throw new MeshError("invalidArgument", "status.refusals.reason: 1-64 of a-z, 0-9 and _");
      if (!Number.isSafeInteger(total) || total < 0) throw new MeshError("invalidArgument", "status.refusals.total: out of range");
    }
    if (report.refusals.length > 0) this.hooks.onDataPlaneRefusals?.(session.sidecarId, report.refusals);
  }

  private onInstanceEvent(session: ConnectSession, event: InstanceEvent): void {
    if (!this.speaksFor(session, event.instanceId)) {
      this.streamError(session, status.NOT_FOUND, "instance not registered on this stream", event.instanceId);
      return;
    }
    const reason = event.reason === "" ? "reported by sidecar" : event.reason.slice(0, 200);
    switch (event.state) {
      case HealthState.HEALTH_STATE_UNHEALTHY:
        this.registry.applyHealthEvent(event.instanceId, { type: "reportedUnhealthy" }, reason);
        break;
      case HealthState.HEALTH_STATE_DRAINING:
        this.registry.applyHealthEvent(event.instanceId, { type: "drain" }, reason);
        break;
      case HealthState.HEALTH_STATE_STOPPED:
        this.registry.applyHealthEvent(event.instanceId, { type: "stopped" }, reason);
        break;
      case HealthState.HEALTH_STATE_FAILED:
        this.registry.applyHealthEvent(event.instanceId, { type: "failed" }, reason);
        break;
      default:
        break;
    }
  }

  private announce(session: ConnectSession, instanceId: string, requested: boolean): boolean {
    try {
      if (requested && this.attach(session, instanceId)) return true;
    } catch (error) {
      if (!(error instanceof MeshError)) throw error;
      this.streamError(session, error.code, error.message, instanceId);
      return false;
    }
    this.streamError(session, status.NOT_FOUND, "instance not registered on this stream", instanceId);
    return false;
  }

  /** Binds an instance to this session. Returns false when the registry does not know it. */
  private attach(session: ConnectSession, instanceId: string): boolean {
    const instance = this.registry.get(instanceId);
    if (!instance) return false;
    this.authorize(session.callerSpiffeId, instance.spiffeId, instance.manifest?.name ?? "");
    const previous = this.sessionByInstance.get(instanceId);
    const moved = previous !== undefined && previous !== session;
    if (moved) previous.instanceIds.delete(instanceId);
    this.sessionByInstance.set(instanceId, session);
    const added = !session.instanceIds.has(instanceId);
    session.instanceIds.add(instanceId);
    // With replicas: the replica whose session speaks for an instance judges its liveness.
    this.registry.claimLiveness(instanceId);
    // Hello's own attachments are published with the Hello (listeners hear `opened` next).
    if (moved && previous.hello) this.emit((listener) => listener.claimsChanged?.(previous));
    if (added && session !== this.opening) this.emit((listener) => listener.claimsChanged?.(session));
    const timer = this.graceTimers.get(instanceId);
    if (timer) {
      clearTimeout(timer);
      this.graceTimers.delete(instanceId);
    }
    return true;
  }

  /**
   * True when `session` may speak for the instance: it is bound to it, or to another
   * open stream of the same sidecar (same identity, same sidecar id). A sidecar
   * moving to a new connection opens the new stream before it ends the old one, and
   * messages on the old one still arrive after the new Hello took the instances over.
   */
  private speaksFor(session: ConnectSession, instanceId: string): boolean {
    if (session.instanceIds.has(instanceId)) return true;
    const owner = this.sessionByInstance.get(instanceId);
    return owner !== undefined && sameSidecar(owner, session);
  }

  /** The newest other open stream of the same sidecar, if any. */
  private successorOf(session: ConnectSession): ConnectSession | undefined {
    let successor: ConnectSession | undefined;
    for (const candidate of this.sessions) if (candidate !== session && !candidate.closed && sameSidecar(candidate, session)) successor = candidate;
    return successor;
  }

  private close(session: ConnectSession, reason: string): void {
    if (!this.sessions.delete(session)) return;
    session.closed = true;
    this.hooks.onStreamCountChange?.(this.sessions.size);
    if (session.hello) this.emit((listener) => listener.closed?.(session));
    if (this.shuttingDown) return;
    const successor = this.successorOf(session);
    session.log.info({ sidecarId: session.sidecarId, instances: session.instanceIds.size, reason, replaced: successor !== undefined }, "sidecar stream closed");
    for (const instanceId of session.instanceIds) {
      if (this.sessionByInstance.get(instanceId) !== session) continue;
      this.sessionByInstance.delete(instanceId);
      // Replaced by a newer stream of the same sidecar (make-before-break): hand the
      // instance over instead of counting down to UNHEALTHY, whatever order the new
      // stream's announcements and the old stream's end arrived in.
      if (successor && this.handOver(successor, instanceId)) continue;
      if (this.options.reconnectGraceMs === 0) {
        this.markStreamLost(instanceId);
        continue;
      }
      const timer = setTimeout(() => {
        this.graceTimers.delete(instanceId);
        if (!this.sessionByInstance.has(instanceId)) this.markStreamLost(instanceId);
      }, this.options.reconnectGraceMs);
      timer.unref();
      this.graceTimers.set(instanceId, timer);
    }
  }

  private handOver(successor: ConnectSession, instanceId: string): boolean {
    try {
      return this.attach(successor, instanceId);
    } catch (error) {
      if (!(error instanceof MeshError)) throw error;
      return false;
    }
  }

  private markStreamLost(instanceId: string): void {
    const change = this.registry.applyHealthEvent(instanceId, { type: "streamLost" }, "sidecar stream lost");
    if (change) this.hooks.onStreamLost?.(instanceId);
  }

  private streamError(session: ConnectSession, code: status, message: string, instanceId: string): void {
    // Denials are audited; malformed or out-of-order messages only answer (a replay storm must not flood the log).
    if (code === status.PERMISSION_DENIED || code === status.UNAUTHENTICATED) {
      this.hooks.onRejected?.(session.callerSpiffeId, session.requestId, message);
    }
    session.send({ msg: { $case: "error", value: { code, message, instanceId } } });
  }

  private fail(session: ConnectSession, error: unknown): void {
    if (error instanceof MeshError) {
      // Problems with one message do not end a healthy stream, except a broken handshake.
      if (!session.hello) {
        this.hooks.onRejected?.(session.callerSpiffeId, session.requestId, error.message);
        session.call.emit("error", { code: error.code, details: error.message });
        return;
      }
      this.streamError(session, error.code, error.message, "");
      return;
    }
    session.log.error({ err: error }, "connect stream failure");
    session.call.emit("error", { code: status.INTERNAL, details: "internal error" });
  }
}

/** Two streams of one sidecar: the same verified identity and the same sidecar id, both past Hello. */
function sameSidecar(left: ConnectSession, right: ConnectSession): boolean {
  return left.hello !== undefined && right.hello !== undefined && left.callerSpiffeId === right.callerSpiffeId && left.sidecarId === right.sidecarId;
}

function decodeHello(payload: Uint8Array): Hello {
  try {
    return HelloMessage.decode(payload);
  } catch {
    throw new MeshError("invalidArgument", "hello.envelope.payload: not a Hello");
  }
}
