import type { Command, Deployment, DeploymentStatus, Rollout } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";

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
  /**
   * Sets the status of the deployment as stored now, leaving its spec alone: the
   * reconciler's status must never undo a scale or apply that landed during its pass.
   * Returns false when no deployment has this name.
   */
  putStatus(name: string, status: DeploymentStatus): Promise<boolean>;
  /** Returns false when no deployment had this name. Its rollout goes with it. */
  remove(name: string): Promise<boolean>;
  /** Records a deployment's rollout progress (keyed by `rollout.deployment`), so `rollout status` survives a restart. */
  putRollout(rollout: Rollout): Promise<void>;
  /** Every recorded rollout, ordered by deployment name. */
  listRollouts(): Promise<Rollout[]>;
}

/**
 * One sidecar's open Connect session past its Hello, held by this replica or by
 * another one (docs/adr/0009). What the reconciler places on and sends commands to.
 */
export interface SidecarSession {
  readonly sidecarId: string;
  /** serverId of the replica holding the stream. */
  readonly holder: string;
  /** Hello.host; "" when not given. */
  readonly host: string;
  /** Hello.capacity: managed instances it accepts beyond those it announced. */
  readonly capacity: number;
  /** The instances its Hello listed (what the sidecar ran when it connected). */
  readonly helloInstanceIds: ReadonlySet<string>;
  /** The instances it speaks for now (Hello plus later announcements). */
  readonly instanceIds: ReadonlySet<string>;
  /** The SPIFFE ID its stream authenticated as: the audience of its signed commands. */
  readonly callerSpiffeId: string;
  readonly closed: boolean;
  /**
   * Delivers an already signed command: on the stream when it is held here, through
   * the holder replica otherwise. False when it cannot be delivered (closed, or this
   * replica is no longer the leader); true is no promise that the sidecar acts on it.
   */
  sendCommand(command: Command): boolean | Promise<boolean>;
}

/** What a sidecar answered to one command. */
export interface CommandOutcome {
  commandId: string;
  ok: boolean;
  message: string;
  instanceId: string;
}

export interface SidecarDirectoryListener {
  /** A Hello was accepted (here or on another replica): the session now speaks for what it listed. */
  onSessionOpened?(session: SidecarSession): void;
  /** The session ended (or its holder replica died): no result can come on it any more. */
  onSessionClosed?(session: SidecarSession): void;
  onCommandResult?(sidecarId: string, outcome: CommandOutcome): void;
  /** A command sent to another replica could not be put on the sidecar's stream (the session was gone). */
  onCommandUndelivered?(sidecarId: string, commandId: string): void;
}

/**
 * The sidecar sessions of every replica, as the reconciler sees them. In-process
 * over the local ConnectHub for one server; over the change log for replicas.
 */
export interface SidecarDirectory {
  /** Open sessions past Hello, all replicas. A sidecar moving between streams briefly has two. */
  sessions(): readonly SidecarSession[];
  /** The session that speaks for this instance now, if any. */
  sessionFor(instanceId: string): SidecarSession | undefined;
  watch(listener: SidecarDirectoryListener): () => void;
}
