import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Clock } from "../../../sdk/ts/src/core/clock.js";
import { type TimerHandle, type Timers, systemTimers } from "../../../sdk/ts/src/core/dataplane/timers.js";
import { Command } from "../../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import {
  type Change,
  ChangeFollower,
  type ChangeLog,
  type FencingToken,
  type KeyValue,
  type LivenessLeases,
  type TxnOp,
  type WakeUps,
  decodeJson,
  encodeJson,
  maxOpsPerTxn,
  stateKeys,
} from "../../state/index.js";
import type { ConnectHub, ConnectSession } from "../connect-hub.js";
import type { CommandOutcome, SidecarDirectory, SidecarDirectoryListener, SidecarSession } from "../ports.js";
import { openSessions } from "./hub-sidecar-directory.js";

// The sidecar sessions of every replica, shared through the change log (ADR 0009).
// The replica holding a sidecar's Connect stream publishes it under
// /orchestrator/sidecars/<id> and renews a liveness lease while the stream is open;
// every replica follows that prefix. A command for a sidecar held elsewhere is a key
// under the holder's /orchestrator/commands/<holder>/ (written with the leader's
// fence); the holder puts it on the stream, deletes the key, and sends the sidecar's
// answer back under /orchestrator/command-results/<leader>/.

/** What /orchestrator/sidecars/<id> holds (JSON). */
interface SidecarRecord {
  /** New at each Hello: tells a reconnected sidecar's session from the one before. */
  sessionId: string;
  sidecarId: string;
  holder: string;
  host: string;
  capacity: number;
  callerSpiffeId: string;
  /** The instances it speaks for now. */
  instanceIds: string[];
  /**
   * Hello-listed instances it does not speak for (usually none): with `instanceIds`,
   * what claims.ts needs of the Hello, without writing up to 10,000 ids twice.
   */
  helloOnlyInstanceIds: string[];
}

/** What /orchestrator/commands/<holder>/<commandId> holds (JSON). */
interface CommandRecord {
  sidecarId: string;
  /** The session the leader addressed (for logs). */
  sessionId: string;
  /** serverId of the sender: where the answer goes. */
  leader: string;
  /** Sender's clock; older than maxCommandAgeMs on arrival is dropped (its signature would be stale too). */
  issuedAtMs: number;
  /** The signed Command, protobuf, base64. */
  command: string;
}

/** What /orchestrator/command-results/<leader>/<commandId> holds (JSON). */
interface ResultRecord {
  sidecarId: string;
  outcome: CommandOutcome;
  /** The holder had no session of the sidecar (or the command was too old): it never reached the sidecar. */
  undelivered: boolean;
}

/** What the directory counts (agentmesh_sidecar_directory_events_total). */
export type SidecarDirectoryEvent =
  /** The leader wrote a command for a sidecar held by another replica. */
  | "command_forwarded"
  /** ... and the store refused it (fenced: no longer the leader) or could not take it. */
  | "command_refused"
  /** The holder put a forwarded command on the sidecar's stream. */
  | "command_delivered"
  /** The holder had no stream of the sidecar (or the command was too old). */
  | "command_undelivered"
  /** The holder sent a sidecar's answer back to the leader. */
  | "result_returned"
  /** A session whose holder stopped renewing its lease was removed. */
  | "session_expired"
  /** A session this replica published was replaced by another replica's newer one. */
  | "session_superseded";

export interface ChangeLogSidecarDirectoryOptions {
  hub: ConnectHub;
  log: ChangeLog;
  leases: LivenessLeases;
  wakeUps?: WakeUps;
  /** This replica's serverId (config.serverId): unique among the replicas. */
  serverId: string;
  clock: Clock;
  timers?: Timers;
  logger: Logger;
  /** A session whose holder stops renewing is given up after this long (3 s, the leader lease). */
  leaseTtlMs?: number;
  /** Lease renewal and the sweep of expired leases (1 s). */
  renewIntervalMs?: number;
  /** Safety net for lost wake-ups (1 s). */
  pollIntervalMs?: number;
  /** A command older than this on arrival is not delivered (30 s, the signature window). */
  maxCommandAgeMs?: number;
  /** The leader's fencing token: commands it sends carry it, so a deposed leader's are refused. */
  fence?: () => FencingToken | undefined;
  onEvent?: (event: SidecarDirectoryEvent) => void;
}

interface Published {
  session: ConnectSession;
  sessionId: string;
  /** Mod revision of our last write of the record; undefined until written (or after it was deleted). */
  revision: number | undefined;
  queued: boolean;
}

const leasePrefix = "orchestrator/sidecars/";
const sweepLimit = 100;
const maxForwarded = 10_000;

/** A session held by another replica, as the followed record says. */
class RemoteSidecarSession implements SidecarSession {
  closed = false;
  instanceIds: ReadonlySet<string>;
  helloInstanceIds: ReadonlySet<string>;

  constructor(
    private record: SidecarRecord,
    private readonly forward: (session: RemoteSidecarSession, command: Command) => Promise<boolean>,
  ) {
    this.instanceIds = new Set(record.instanceIds);
    this.helloInstanceIds = new Set([...record.instanceIds, ...record.helloOnlyInstanceIds]);
  }

  get sessionId(): string {
    return this.record.sessionId;
  }
  get sidecarId(): string {
    return this.record.sidecarId;
  }
  get holder(): string {
    return this.record.holder;
  }
  get host(): string {
    return this.record.host;
  }
  get capacity(): number {
    return this.record.capacity;
  }
  get callerSpiffeId(): string {
    return this.record.callerSpiffeId;
  }

  update(record: SidecarRecord): void {
    this.record = record;
    this.instanceIds = new Set(record.instanceIds);
    this.helloInstanceIds = new Set([...record.instanceIds, ...record.helloOnlyInstanceIds]);
  }

  sendCommand(command: Command): Promise<boolean> {
    return this.closed ? Promise.resolve(false) : this.forward(this, command);
  }
}

export class ChangeLogSidecarDirectory implements SidecarDirectory {
  private readonly timers: Timers;
  private readonly leaseTtlMs: number;
  private readonly renewIntervalMs: number;
  private readonly maxCommandAgeMs: number;
  private readonly listeners = new Set<SidecarDirectoryListener>();
  /** Sessions this replica holds and publishes, by sidecar id (the newest one of each sidecar). */
  private readonly published = new Map<string, Published>();
  /** Writes per sidecar key, one after another. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Sessions other replicas hold, by sidecar id. */
  private readonly remote = new Map<string, RemoteSidecarSession>();
  private readonly remoteByInstance = new Map<string, RemoteSidecarSession>();
  /** Commands forwarded to us: command id → where the answer goes. */
  private readonly forwarded = new Map<string, { leader: string; sidecarId: string }>();
  private readonly follower: ChangeFollower;
  private readonly ownCommands: string;
  private readonly ownResults: string;
  private readonly unwatchHub: () => void;
  private timer: TimerHandle | undefined;
  private closed = false;

  constructor(private readonly options: ChangeLogSidecarDirectoryOptions) {
    this.timers = options.timers ?? systemTimers;
    this.leaseTtlMs = options.leaseTtlMs ?? 3_000;
    this.renewIntervalMs = options.renewIntervalMs ?? 1_000;
    this.maxCommandAgeMs = options.maxCommandAgeMs ?? 30_000;
    this.ownCommands = stateKeys.sidecarCommands(options.serverId);
    this.ownResults = stateKeys.sidecarCommandResults(options.serverId);
    // One follower for the three prefixes: every follower reads the whole change stream
    // and filters it, so one per prefix would triple the reads of every commit.
    this.follower = new ChangeFollower({
      log: options.log,
      prefix: stateKeys.orchestrator,
      wakeUps: options.wakeUps,
      pollIntervalMs: options.pollIntervalMs ?? 1_000,
      timers: this.timers,
      logger: options.logger,
      onSnapshot: ({ items }) => this.onSnapshot(items),
      onChanges: ({ changes }) => this.onChanges(changes),
    });
    this.unwatchHub = options.hub.watchSessions({
      opened: (session) => {
        this.publish(session);
        this.emit((listener) => listener.onSessionOpened?.(session));
      },
      claimsChanged: (session) => this.republish(session),
      closed: (session) => {
        this.unpublish(session);
        this.emit((listener) => listener.onSessionClosed?.(session));
      },
      commandResult: (sidecarId, result) => {
        this.answerForwarded(sidecarId, result);
        this.emit((listener) => listener.onCommandResult?.(sidecarId, result));
      },
    });
  }

  /** Loads the sessions of every replica, then follows them and this replica's commands and results. */
  async start(): Promise<void> {
    await this.follower.start();
    this.schedule();
  }

  sessions(): readonly SidecarSession[] {
    return [...openSessions(this.options.hub), ...this.remote.values()];
  }

  sessionFor(instanceId: string): SidecarSession | undefined {
    return this.options.hub.sessionFor(instanceId) ?? this.remoteByInstance.get(instanceId);
  }

  watch(listener: SidecarDirectoryListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops following and renewing; what this replica still publishes is deleted and its leases released. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unwatchHub();
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    await this.follower.close();
    for (const entry of [...this.published.values()]) this.unpublish(entry.session);
    await Promise.all(this.chains.values());
  }

  // --- the holder's side: publishing its sessions ---

  private publish(session: ConnectSession): void {
    const entry: Published = { session, sessionId: `${this.options.serverId}.${randomBytes(6).toString("hex")}`, revision: undefined, queued: false };
    this.published.set(session.sidecarId, entry);
    this.queueWrite(entry);
    void this.renew(session.sidecarId);
  }

  private republish(session: ConnectSession): void {
    const entry = this.published.get(session.sidecarId);
    if (entry?.session === session) this.queueWrite(entry);
  }

  private unpublish(session: ConnectSession): void {
    const entry = this.published.get(session.sidecarId);
    if (entry?.session !== session) return;
    // An older stream of the same sidecar still open (its newest ended first): it speaks for the sidecar now.
    const older = openSessions(this.options.hub).filter((candidate) => candidate !== session && candidate.sidecarId === session.sidecarId).pop();
    if (older && !this.closed) {
      this.publish(older);
      return;
    }
    this.published.delete(session.sidecarId);
    this.enqueue(session.sidecarId, async () => {
      if (entry.revision !== undefined) {
        await this.options.log.txn([{ type: "delete", key: stateKeys.sidecarSession(session.sidecarId), expectRevision: entry.revision }]);
      }
      if (!this.published.has(session.sidecarId)) await this.options.leases.release(leaseId(session.sidecarId), this.options.serverId);
    });
    for (const [commandId, forwarded] of this.forwarded) if (forwarded.sidecarId === session.sidecarId) this.forwarded.delete(commandId);
  }

  private queueWrite(entry: Published): void {
    if (entry.queued) return;
    entry.queued = true;
    this.enqueue(entry.session.sidecarId, async () => {
      entry.queued = false;
      await this.write(entry);
    });
  }

  private enqueue(sidecarId: string, operation: () => Promise<void>): void {
    const next = (this.chains.get(sidecarId) ?? Promise.resolve())
      .then(operation)
      .catch((error: unknown) => this.options.logger.warn({ err: error, sidecarId }, "publishing a sidecar session failed; the next change or renewal retries"));
    this.chains.set(sidecarId, next);
    void next.then(() => {
      if (this.chains.get(sidecarId) === next) this.chains.delete(sidecarId);
    });
  }

  private async write(entry: Published): Promise<void> {
    const { session } = entry;
    if (this.published.get(session.sidecarId) !== entry || session.closed) return;
    const key = stateKeys.sidecarSession(session.sidecarId);
    // A new Hello replaces whatever is there (the sidecar moved here); later writes only replace our own.
    const compare = entry.revision === undefined ? {} : { expectRevision: entry.revision };
    const result = await this.options.log.txn([{ type: "put", key, value: encodeJson(this.recordOf(entry)), ...compare }]);
    if (result.ok) {
      entry.revision = result.revision;
      return;
    }
    if (result.reason === "conflict" && result.actualRevision === 0) {
      // Deleted under us (our lease lapsed and another replica swept it): the stream is open, so write it again.
      entry.revision = undefined;
      this.queueWrite(entry);
      return;
    }
    // A newer session of this sidecar on another replica wrote the key: that one speaks for it now.
    this.options.logger.info({ sidecarId: session.sidecarId }, "sidecar session superseded by another replica's");
    this.options.onEvent?.("session_superseded");
    if (this.published.get(session.sidecarId) === entry) this.published.delete(session.sidecarId);
  }

  private recordOf(entry: Published): SidecarRecord {
    const { session } = entry;
    return {
      sessionId: entry.sessionId,
      sidecarId: session.sidecarId,
      holder: this.options.serverId,
      host: session.host,
      capacity: session.capacity,
      callerSpiffeId: session.callerSpiffeId,
      instanceIds: [...session.instanceIds],
      helloOnlyInstanceIds: [...session.helloInstanceIds].filter((instanceId) => !session.instanceIds.has(instanceId)),
    };
  }

  private async renew(sidecarId: string): Promise<boolean> {
    try {
      await this.options.leases.renew(leaseId(sidecarId), this.options.serverId, this.leaseTtlMs);
      return true;
    } catch (error) {
      this.options.logger.debug({ err: error, sidecarId }, "renewing a sidecar session lease failed");
      return false;
    }
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = this.timers.setTimeout(() => {
      this.schedule();
      void this.tick();
    }, this.renewIntervalMs);
    unref(this.timer);
  }

  private async tick(): Promise<void> {
    const renewed = await Promise.all([...this.published.keys()].map((sidecarId) => this.renew(sidecarId)));
    // One line per tick, not one per sidecar: with Redis down every renewal fails.
    const failed = renewed.filter((ok) => !ok).length;
    if (failed > 0) this.options.logger.warn({ failed, sessions: renewed.length }, "renewing sidecar session leases failed; other replicas drop these sessions when the leases lapse");
    try {
      await this.sweep();
    } catch (error) {
      this.options.logger.warn({ err: error }, "sweeping expired sidecar session leases failed");
    }
  }

  /** Removes the sessions whose holder stopped renewing (it died): nobody places on them any more. */
  private async sweep(): Promise<void> {
    for (const lease of await this.options.leases.claimExpired(sweepLimit)) {
      if (!lease.sessionId.startsWith(leasePrefix)) continue;
      const sidecarId = lease.sessionId.slice(leasePrefix.length);
      const key = stateKeys.sidecarSession(sidecarId);
      const { item } = await this.options.log.get(key);
      if (!item || decodeJson<SidecarRecord>(item.value).holder !== lease.holder) continue;
      const { items } = await this.options.log.range(stateKeys.sidecarCommands(lease.holder));
      const stale = items.filter((command) => decodeJson<CommandRecord>(command.value).sidecarId === sidecarId);
      const ops: TxnOp[] = [{ type: "delete", key, expectRevision: item.modRevision }, ...stale.map((command) => ({ type: "delete" as const, key: command.key }))];
      const result = await this.options.log.txn(ops);
      if (!result.ok) continue;
      this.options.logger.warn({ sidecarId, holder: lease.holder }, "sidecar session given up: its replica stopped renewing the lease");
      this.options.onEvent?.("session_expired");
    }
  }

  // --- every replica: following the sessions of the others, and its own commands and results ---

  private async onSnapshot(items: KeyValue[]): Promise<void> {
    await this.onSessionsSnapshot(items.filter((item) => item.key.startsWith(stateKeys.sidecarSessions)));
    // A snapshot lists keys in key order; the sender's order is their creation order.
    await this.deliverAll(items.filter((item) => item.key.startsWith(this.ownCommands)).sort((left, right) => left.createRevision - right.createRevision));
    await this.takeResults(items.filter((item) => item.key.startsWith(this.ownResults)));
  }

  private async onChanges(changes: Change[]): Promise<void> {
    this.onSessionChanges(changes.filter((change) => change.key.startsWith(stateKeys.sidecarSessions)));
    const written = puts(changes);
    await this.deliverAll(written.filter((item) => item.key.startsWith(this.ownCommands)));
    await this.takeResults(written.filter((item) => item.key.startsWith(this.ownResults)));
  }

  private async onSessionsSnapshot(items: KeyValue[]): Promise<void> {
    const present = new Set<string>();
    const staleOwn: TxnOp[] = [];
    for (const item of items) {
      const record = decodeJson<SidecarRecord>(item.value);
      present.add(record.sidecarId);
      // Ours but not a session this process holds: left by an earlier run of this replica.
      if (record.holder === this.options.serverId && this.published.get(record.sidecarId)?.sessionId !== record.sessionId) {
        staleOwn.push({ type: "delete", key: item.key, expectRevision: item.modRevision });
        continue;
      }
      this.applyRecord(record.sidecarId, record);
    }
    for (const sidecarId of [...this.remote.keys()]) if (!present.has(sidecarId)) this.applyRecord(sidecarId, undefined);
    if (staleOwn.length > 0) await this.options.log.txn(staleOwn);
  }

  private onSessionChanges(changes: Change[]): void {
    for (const change of changes) {
      const sidecarId = decodeURIComponent(change.key.slice(stateKeys.sidecarSessions.length));
      this.applyRecord(sidecarId, change.value ? decodeJson<SidecarRecord>(change.value) : undefined);
    }
  }

  private applyRecord(sidecarId: string, record: SidecarRecord | undefined): void {
    const current = this.remote.get(sidecarId);
    if (record && record.holder !== this.options.serverId) {
      if (current && current.sessionId === record.sessionId) {
        this.unindex(current);
        current.update(record);
        this.index(current);
        return;
      }
      if (current) this.closeRemote(current);
      const session = new RemoteSidecarSession(record, (target, command) => this.forward(target, command));
      this.remote.set(sidecarId, session);
      this.index(session);
      this.emit((listener) => listener.onSessionOpened?.(session));
      return;
    }
    if (current) this.closeRemote(current);
    if (record) return;
    // Deleted while this replica holds an open stream of it (a lease swept by mistake, or an
    // older holder deleting after we took over): the record of an open session must exist.
    const open = this.options.hub.sessionBySidecar(sidecarId);
    if (open && !this.closed) {
      const entry = this.published.get(sidecarId);
      if (entry?.session === open) {
        entry.revision = undefined;
        this.queueWrite(entry);
        void this.renew(sidecarId);
      } else {
        this.publish(open);
      }
    }
  }

  private closeRemote(session: RemoteSidecarSession): void {
    session.closed = true;
    this.remote.delete(session.sidecarId);
    this.unindex(session);
    this.emit((listener) => listener.onSessionClosed?.(session));
  }

  private index(session: RemoteSidecarSession): void {
    for (const instanceId of session.instanceIds) this.remoteByInstance.set(instanceId, session);
  }

  private unindex(session: RemoteSidecarSession): void {
    for (const instanceId of session.instanceIds) if (this.remoteByInstance.get(instanceId) === session) this.remoteByInstance.delete(instanceId);
  }

  // --- commands across replicas ---

  /** The leader's side: a command for a sidecar held elsewhere becomes a key under its holder's prefix. */
  private async forward(session: RemoteSidecarSession, command: Command): Promise<boolean> {
    const record: CommandRecord = {
      sidecarId: session.sidecarId,
      sessionId: session.sessionId,
      leader: this.options.serverId,
      issuedAtMs: this.options.clock.nowMs(),
      command: Buffer.from(Command.encode(command).finish()).toString("base64"),
    };
    const fence = this.options.fence?.();
    try {
      const result = await this.options.log.txn(
        [{ type: "put", key: stateKeys.sidecarCommand(session.holder, command.commandId), value: encodeJson(record), expectRevision: 0 }],
        fence ? { fence } : {},
      );
      if (result.ok) {
        this.options.onEvent?.("command_forwarded");
        return true;
      }
      this.options.onEvent?.("command_refused");
      if (result.reason === "fenced") this.options.logger.warn({ sidecarId: session.sidecarId }, "command refused by the store: this replica is no longer the leader");
      return false;
    } catch (error) {
      this.options.logger.warn({ err: error, sidecarId: session.sidecarId }, "writing a command for another replica failed");
      this.options.onEvent?.("command_refused");
      return false;
    }
  }

  /** The holder's side: puts each command on its sidecar's stream, deletes it, and answers the undeliverable. */
  private async deliverAll(items: ReadonlyArray<{ key: string; value: Uint8Array }>): Promise<void> {
    if (items.length === 0) return;
    const ops: TxnOp[] = [];
    for (const item of items) {
      ops.push({ type: "delete", key: item.key });
      const record = decodeJson<CommandRecord>(item.value);
      const command = Command.decode(Buffer.from(record.command, "base64"));
      const session = this.options.hub.sessionBySidecar(record.sidecarId);
      const fresh = this.options.clock.nowMs() - record.issuedAtMs <= this.maxCommandAgeMs;
      if (session && fresh) {
        this.remember(command.commandId, { leader: record.leader, sidecarId: record.sidecarId });
        if (session.sendCommand(command)) {
          this.options.onEvent?.("command_delivered");
          continue;
        }
        this.forwarded.delete(command.commandId);
      }
      this.options.logger.info({ sidecarId: record.sidecarId, commandId: command.commandId, fresh }, "command for a sidecar not connected here: answered undelivered");
      this.options.onEvent?.("command_undelivered");
      const result: ResultRecord = { sidecarId: record.sidecarId, outcome: { commandId: command.commandId, ok: false, message: "", instanceId: "" }, undelivered: true };
      ops.push({ type: "put", key: stateKeys.sidecarCommandResult(record.leader, command.commandId), value: encodeJson(result) });
    }
    for (const chunk of chunks(ops, maxOpsPerTxn)) await this.options.log.txn(chunk);
  }

  private remember(commandId: string, target: { leader: string; sidecarId: string }): void {
    // Bounded: an answer that never comes must not grow this for ever (the leader's wait has its own deadline).
    if (this.forwarded.size >= maxForwarded) {
      const oldest = this.forwarded.keys().next().value;
      if (oldest !== undefined) this.forwarded.delete(oldest);
    }
    this.forwarded.set(commandId, target);
  }

  private answerForwarded(sidecarId: string, outcome: CommandOutcome): void {
    const target = this.forwarded.get(outcome.commandId);
    if (!target || target.sidecarId !== sidecarId) return;
    this.forwarded.delete(outcome.commandId);
    const result: ResultRecord = { sidecarId, outcome: { commandId: outcome.commandId, ok: outcome.ok, message: outcome.message, instanceId: outcome.instanceId }, undelivered: false };
    this.options.log
      .txn([{ type: "put", key: stateKeys.sidecarCommandResult(target.leader, outcome.commandId), value: encodeJson(result) }])
      .then(() => this.options.onEvent?.("result_returned"))
      .catch((error: unknown) => this.options.logger.warn({ err: error, sidecarId }, "writing a command result for another replica failed"));
  }

  /** The leader's side: answers that came back through the log, then deleted. */
  private async takeResults(items: ReadonlyArray<{ key: string; value: Uint8Array }>): Promise<void> {
    if (items.length === 0) return;
    for (const item of items) {
      const { sidecarId, outcome, undelivered } = decodeJson<ResultRecord>(item.value);
      if (undelivered) this.emit((listener) => listener.onCommandUndelivered?.(sidecarId, outcome.commandId));
      else this.emit((listener) => listener.onCommandResult?.(sidecarId, outcome));
    }
    for (const chunk of chunks(items, maxOpsPerTxn)) await this.options.log.txn(chunk.map((item) => ({ type: "delete" as const, key: item.key })));
  }

  private emit(notify: (listener: SidecarDirectoryListener) => void): void {
    for (const listener of this.listeners) {
      try {
        notify(listener);
      } catch (error) {
        this.options.logger.error({ err: error }, "sidecar directory listener failed");
      }
    }
  }
}

function leaseId(sidecarId: string): string {
  return `${leasePrefix}${sidecarId}`;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let index = 0; index < items.length; index += size) out.push(items.slice(index, index + size));
  return out;
}

function puts(changes: readonly Change[]): Array<{ key: string; value: Uint8Array }> {
  return changes.flatMap((change) => (change.value ? [{ key: change.key, value: change.value }] : []));
}

/** A real timer must not keep the process alive; test timers have nothing to unref. */
function unref(handle: TimerHandle): void {
  (handle as { unref?: () => void } | undefined)?.unref?.();
}
