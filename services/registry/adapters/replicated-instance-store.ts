import type { Logger } from "pino";
import type { Clock } from "../../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { systemTimers, type TimerHandle, type Timers } from "../../../sdk/ts/src/core/dataplane/timers.js";
import { AgentInstance } from "../../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { type Change, ChangeFollower, type ChangeLog, type KeyValue, type LivenessLeases, type WakeUps, stateKeys } from "../../state/index.js";
import type { InstanceStore, InstanceWriteKind, RemoteRegistrations } from "../ports.js";

// Registrations shared by every replica (ADR 0008). Each replica's registry stays
// the in-memory index that Discover, Watch and ListAgents read; this store writes
// its changes to the change log and applies the other replicas' changes to it, in
// log order, through a ChangeFollower. One replica judges each instance's
// liveness: the holder, the one whose Connect session speaks for it (heartbeats
// arrive only there). A replica renews a liveness lease while it runs; when its
// lease lapses, another replica takes its instances over, and its own failure
// detector then finds those that nobody speaks for.

export interface ReplicatedInstanceStoreOptions {
  log: ChangeLog;
  leases: LivenessLeases;
  /** Hints from other replicas (Redis); the log's own onChange covers local writes. */
  wakeUps?: WakeUps;
  /** This replica's id (`--server-id`); unique among the replicas. */
  replicaId: string;
  clock: Clock;
  logger: Logger;
  /** A replica whose lease is older than this is taken over. */
  leaseTtlMs?: number;
  /**
   * How long a taken-over instance's sidecar has to reconnect somewhere before its
   * silence times it out (a restarted server's sidecars back off while it was down).
   */
  takeoverGraceMs?: number;
  pollIntervalMs?: number;
  timers?: Timers;
  /** Counts what replication does (metrics). */
  onEvent?: (event: "write_conflict" | "takeover") => void;
}

/** The value under /registry/instances/<id>. */
interface InstanceRecord {
  /** The replica judging its liveness. */
  holder: string;
  /** The replica that wrote this value (its own writes come back through the follower). */
  writer: string;
  instance: unknown;
}

interface PendingWrite {
  op: "put" | "delete";
  kind: InstanceWriteKind | "takeover";
  instance?: AgentInstance;
  /** For `traffic`: the share to write, whatever the projection says meanwhile. */
  trafficPercent?: number;
  /** For `takeover`: the replica being taken over; dropped if someone else took it first. */
  from?: string;
  waiters: Array<{ resolve: (written: boolean) => void; reject: (error: unknown) => void }>;
}

const defaultLeaseTtlMs = 5_000;
const defaultTakeoverGraceMs = 10_000;
const replicaLeasePrefix = "replica/";
const maxConflictRetries = 5;

export class ReplicatedInstanceStore implements InstanceStore {
  private registry: RemoteRegistrations | undefined;
  private follower: ChangeFollower | undefined;
  /** instance id → the replica judging its liveness, as last written. */
  private readonly holders = new Map<string, string>();
  /** instance id → mod revision of its key, as last seen (the compare of the next write). */
  private readonly revisions = new Map<string, number>();
  private readonly pending = new Map<string, PendingWrite>();
  private readonly flushing = new Set<string>();
  /** Instances whose deletion by this replica is being written. */
  private readonly deleting = new Set<string>();
  /** Replicas whose lease was found lapsed at the last check. */
  private readonly lapsedAt = new Map<string, number>();
  private readonly timers: Timers;
  private renewTimer: TimerHandle | undefined;
  private checkTimer: TimerHandle | undefined;
  private closed = false;
  private started = false;

  constructor(private readonly options: ReplicatedInstanceStoreOptions) {
    this.timers = options.timers ?? systemTimers;
  }

  private get leaseTtlMs(): number {
    return this.options.leaseTtlMs ?? defaultLeaseTtlMs;
  }

  /** Loads every replica's registrations into `registry`, then follows the log and renews this replica's lease. */
  async start(registry: RemoteRegistrations): Promise<void> {
    this.registry = registry;
    await this.renewLease();
    this.follower = new ChangeFollower({
      log: this.options.log,
      prefix: stateKeys.instances,
      wakeUps: this.options.wakeUps,
      pollIntervalMs: this.options.pollIntervalMs ?? 1000,
      logger: this.options.logger,
      timers: this.timers,
      onSnapshot: ({ items }) => this.applySnapshot(items),
      onChanges: ({ changes }) => {
        for (const change of changes) this.applyChange(change);
      },
    });
    await this.follower.start();
    this.started = true;
    this.scheduleRenew();
    this.scheduleCheck();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.renewTimer !== undefined) this.timers.clearTimeout(this.renewTimer);
    if (this.checkTimer !== undefined) this.timers.clearTimeout(this.checkTimer);
    await this.follower?.close();
  }

  holdsLiveness(instanceId: string): boolean {
    const holder = this.holders.get(instanceId);
    return holder === undefined || holder === this.options.replicaId;
  }

  /** The replica holding each instance (tests, the dashboard). */
  holderOf(instanceId: string): string | undefined {
    return this.holders.get(instanceId);
  }

  put(instance: AgentInstance, kind: InstanceWriteKind = "health"): Promise<void> {
    // A claim holds from now on this replica (its heartbeats change health at once); the
    // write makes it so everywhere, and a claim always wins its write.
    if (kind === "register" && this.holders.has(instance.instanceId)) this.holders.set(instance.instanceId, this.options.replicaId);
    return this.enqueue(instance.instanceId, {
      op: "put",
      kind,
      instance,
      trafficPercent: kind === "traffic" ? instance.trafficPercent : undefined,
      waiters: [],
    }).then(() => undefined);
  }

  remove(instanceId: string): Promise<boolean> {
    return this.enqueue(instanceId, { op: "delete", kind: "register", waiters: [] });
  }


  /** Latest intent wins per instance: a write queued behind one in flight replaces any queued before it. */
  private enqueue(instanceId: string, write: PendingWrite): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      const queued = this.pending.get(instanceId);
      write.waiters.push({ resolve, reject });
      if (queued) {
        write.waiters.unshift(...queued.waiters);
        // A registration or takeover is not downgraded by a later health write of the same state.
        if (write.op === "put" && queued.op === "put" && rank(queued.kind) > rank(write.kind)) {
          write.kind = queued.kind;
          write.from = queued.from;
        }
        if (write.op === "put" && queued.op === "put" && write.trafficPercent === undefined) write.trafficPercent = queued.trafficPercent;
      }
      this.pending.set(instanceId, write);
      if (!this.flushing.has(instanceId)) void this.flush(instanceId);
    });
  }

  private async flush(instanceId: string): Promise<void> {
    this.flushing.add(instanceId);
    try {
      for (;;) {
        const write = this.pending.get(instanceId);
        if (!write) return;
        this.pending.delete(instanceId);
        try {
          const written = await this.write(instanceId, write);
          for (const waiter of write.waiters) waiter.resolve(written);
        } catch (error) {
          for (const waiter of write.waiters) waiter.reject(error);
        }
      }
    } finally {
      this.flushing.delete(instanceId);
    }
  }

  /** One write, retried on a compare conflict after catching up with the log. Answers whether it wrote. */
  private async write(instanceId: string, write: PendingWrite): Promise<boolean> {
    const self = this.options.replicaId;
    const key = stateKeys.instance(instanceId);
    for (let attempt = 0; ; attempt += 1) {
      const expectRevision = this.revisions.get(instanceId) ?? 0;
      let result;
      if (write.op === "delete") {
        if (expectRevision === 0) return false;
        this.deleting.add(instanceId);
        try {
          result = await this.options.log.txn([{ type: "delete", key, expectRevision }]);
        } finally {
          this.deleting.delete(instanceId);
        }
      } else {
        const holder = this.holders.get(instanceId);
        // Another replica's session speaks for it now: this replica's view of its health is stale.
        if (write.kind === "health" && holder !== undefined && holder !== self) return false;
        if (write.kind === "takeover" && holder !== write.from) return false;
        const instance = write.instance as AgentInstance;
        if (write.trafficPercent !== undefined) instance.trafficPercent = write.trafficPercent;
        const record: InstanceRecord = {
          holder: write.kind === "traffic" ? (holder ?? self) : self,
          writer: self,
          instance: AgentInstance.toJSON({ ...instance, load: undefined }),
        };
        result = await this.options.log.txn([{ type: "put", key, value: Buffer.from(JSON.stringify(record)), expectRevision }]);
        if (result.ok) this.holders.set(instanceId, record.holder);
      }
      if (result.ok) {
        if (write.op === "delete") {
          this.revisions.delete(instanceId);
          this.holders.delete(instanceId);
        } else {
          this.revisions.set(instanceId, result.revision);
        }
        return true;
      }
      if (result.reason === "fenced") throw new MeshError("failedPrecondition", "no longer the leader");
      // Someone wrote it after our last look: catch up, then decide again with what they wrote.
      this.options.onEvent?.("write_conflict");
      if (attempt >= maxConflictRetries) throw new MeshError("unavailable", "registration kept conflicting with other replicas");
      await (this.follower as ChangeFollower).waitForRevision(result.actualRevision);
      if (write.op === "delete" && !this.revisions.has(instanceId)) return false;
    }
  }

  private applySnapshot(items: KeyValue[]): void {
    const registry = this.registry as RemoteRegistrations;
    const present = new Set<string>();
    for (const item of items) {
      const instanceId = item.key.slice(stateKeys.instances.length);
      present.add(instanceId);
      this.applyValue(instanceId, item.value, item.modRevision, !this.started);
    }
    // A resync after compaction: what vanished meanwhile was deregistered elsewhere.
    for (const instance of [...registry.all()]) {
      if (!present.has(instance.instanceId) && !this.pending.has(instance.instanceId) && !this.flushing.has(instance.instanceId)) {
        this.holders.delete(instance.instanceId);
        this.revisions.delete(instance.instanceId);
        registry.removeRemote(instance.instanceId, "deregistered on another replica");
      }
    }
  }

  private applyChange(change: Change): void {
    const instanceId = change.key.slice(stateKeys.instances.length);
    if (change.value === undefined) {
      this.revisions.delete(instanceId);
      this.holders.delete(instanceId);
      // Our own deletion coming back (the registry removes it when the write returns), or a
      // re-registration queued after it, which wins.
      if (this.pending.has(instanceId) || this.deleting.has(instanceId)) return;
      if (this.registry?.get(instanceId)) this.registry.removeRemote(instanceId, "deregistered on another replica");
      return;
    }
    this.applyValue(instanceId, change.value, change.revision, false);
  }

  private applyValue(instanceId: string, value: Uint8Array, revision: number, loading: boolean): void {
    const registry = this.registry as RemoteRegistrations;
    let record: InstanceRecord;
    try {
      record = JSON.parse(Buffer.from(value).toString("utf8")) as InstanceRecord;
    } catch (error) {
      this.options.logger.error({ err: error, instanceId }, "unreadable registration in the state store: skipped");
      return;
    }
    const self = this.options.replicaId;
    if ((this.revisions.get(instanceId) ?? 0) < revision) this.revisions.set(instanceId, revision);
    const heldHere = this.holdsLiveness(instanceId) && registry.get(instanceId) !== undefined;
    this.holders.set(instanceId, record.holder);
    const instance = AgentInstance.fromJSON(record.instance);
    if (loading) {
      // Written by an earlier run of this replica (or by anyone before we started): index it;
      // what this replica held is judged from now, so silent instances time out.
      if (record.holder === self) instance.lastHeartbeatAtMs = this.options.clock.nowMs();
      registry.applyRemote(instance);
      return;
    }
    // Our own write coming back: the local registry is already as new or newer.
    if (record.writer === self) return;
    if (heldHere && record.holder === self) {
      // The leader changed the traffic share of one of ours; our liveness view stands.
      registry.applyRemoteTraffic(instanceId, instance.trafficPercent);
      return;
    }
    registry.applyRemote(instance);
  }

  private async renewLease(): Promise<void> {
    await this.options.leases.renew(replicaLeasePrefix + this.options.replicaId, this.options.replicaId, this.leaseTtlMs);
  }

  private scheduleRenew(): void {
    if (this.closed) return;
    this.renewTimer = this.timers.setTimeout(() => {
      this.renewLease()
        .catch((error: unknown) => this.options.logger.warn({ err: error }, "could not renew this replica's liveness lease"))
        .finally(() => this.scheduleRenew());
    }, Math.max(100, Math.floor(this.leaseTtlMs / 3)));
  }

  private scheduleCheck(): void {
    if (this.closed) return;
    this.checkTimer = this.timers.setTimeout(() => {
      this.takeOverLapsedReplicas()
        .catch((error: unknown) => this.options.logger.warn({ err: error }, "could not check the other replicas' leases"))
        .finally(() => this.scheduleCheck());
    }, Math.max(100, Math.floor(this.leaseTtlMs / 2)));
  }

  /** Takes over the instances of replicas whose lease lapsed (they died, or lost Redis for longer than the TTL). */
  async takeOverLapsedReplicas(): Promise<number> {
    const self = this.options.replicaId;
    const others = new Set([...this.holders.values()].filter((holder) => holder !== self));
    let taken = 0;
    for (const holder of [...this.lapsedAt.keys()]) if (!others.has(holder)) this.lapsedAt.delete(holder);
    for (const holder of others) {
      const lease = await this.options.leases.get(replicaLeasePrefix + holder);
      if (lease && lease.expiresAtMs > this.options.clock.nowMs()) {
        this.lapsedAt.delete(holder);
        continue;
      }
      // Lapsed at two checks in a row, not one: after a Redis restart every lease is gone
      // until its replica renews it (within a third of the TTL), and live replicas must
      // not be taken over for that.
      if (!this.lapsedAt.has(holder)) {
        this.lapsedAt.set(holder, this.options.clock.nowMs());
        continue;
      }
      this.lapsedAt.delete(holder);
      const instances = [...this.holders].filter(([, held]) => held === holder).map(([instanceId]) => instanceId);
      this.options.logger.warn({ replica: holder, instances: instances.length }, "replica's lease lapsed: taking its instances over");
      const nowMs = this.options.clock.nowMs();
      const writes: Array<Promise<boolean>> = [];
      for (const instanceId of instances) {
        const instance = this.registry?.get(instanceId);
        if (!instance) continue;
        // Judged from the end of the grace: an instance whose sidecar does not reconnect
        // anywhere by then times out here.
        this.registry?.graceLiveness(instanceId, nowMs + (this.options.takeoverGraceMs ?? defaultTakeoverGraceMs));
        writes.push(this.enqueue(instanceId, { op: "put", kind: "takeover", from: holder, instance, waiters: [] }));
      }
      for (const written of await Promise.allSettled(writes)) {
        if (written.status !== "fulfilled" || !written.value) continue;
        taken += 1;
        this.options.onEvent?.("takeover");
      }
    }
    return taken;
  }
}

function rank(kind: PendingWrite["kind"]): number {
  return kind === "register" ? 3 : kind === "takeover" ? 2 : kind === "health" ? 1 : 0;
}
