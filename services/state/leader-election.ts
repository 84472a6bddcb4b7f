import type { Logger } from "pino";
import { systemTimers, type TimerHandle, type Timers } from "../../sdk/ts/src/core/dataplane/timers.js";
import type { LeaderLease, LeaderLock } from "./coordination-ports.js";
import type { ChangeLog, FencingToken } from "./ports.js";

// One leader among replicas (for the reconciler). The lock gives liveness (mostly one
// leader at a time); safety comes from the store: on election the new leader writes
// its token as a fence (an empty txn), after which the store refuses every write of
// an older token, so a paused or partitioned old leader cannot act even while it
// still believes it leads. If the store has seen a higher token than the lock
// handed out (the lock's counter was lost), the leader raises the counter and claims
// again instead of being fenced out forever.

export type LeadershipState = "follower" | "leader";

export interface LeaderElectorOptions {
  lock: LeaderLock;
  log: ChangeLog;
  /** Lock name and fence name. */
  name: string;
  /** Unique per process, e.g. replica id plus a random suffix. */
  holder: string;
  ttlMs: number;
  /** How often to renew (leader) or try (follower); a third of ttlMs by default. */
  intervalMs?: number;
  timers?: Timers;
  logger?: Logger;
  onElected?(fence: FencingToken): void;
  onDemoted?(): void;
}

export class LeaderElector {
  private lease: LeaderLease | undefined;
  private timer: TimerHandle | undefined;
  private stopped = true;
  private ticking: Promise<void> | undefined;
  private readonly timers: Timers;
  private readonly intervalMs: number;

  constructor(private readonly options: LeaderElectorOptions) {
    this.timers = options.timers ?? systemTimers;
    this.intervalMs = options.intervalMs ?? Math.max(1, Math.floor(options.ttlMs / 3));
  }

  get state(): LeadershipState {
    return this.lease ? "leader" : "follower";
  }

  /** The token every leader write carries; undefined while not the leader. */
  get fence(): FencingToken | undefined {
    return this.lease && { name: this.options.name, token: this.lease.token };
  }

  /** Starts campaigning; resolves after the first attempt. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.tick();
  }

  /** Stops and releases the lock so another replica takes over without waiting for the TTL. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    await this.ticking;
    const lease = this.lease;
    if (!lease) return;
    this.demote("stopped");
    await this.options.lock.release(lease).catch((error: unknown) => this.options.logger?.warn({ component: "leader-election", err: error }, "releasing the leader lock failed"));
  }

  private tick(): Promise<void> {
    this.ticking = (this.lease ? this.renew(this.lease) : this.campaign()).finally(() => {
      this.ticking = undefined;
      if (!this.stopped) this.timer = this.timers.setTimeout(() => void this.tick(), this.intervalMs);
    });
    return this.ticking;
  }

  private async campaign(): Promise<void> {
    let lease: LeaderLease | undefined;
    try {
      lease = await this.options.lock.tryAcquire(this.options.name, this.options.holder, this.options.ttlMs);
      for (let attempt = 0; lease && attempt < 3 && !this.stopped; attempt += 1) {
        const claim = await this.options.log.txn([], { fence: { name: this.options.name, token: lease.token } });
        if (claim.ok) {
          this.lease = lease;
          this.options.logger?.info({ component: "leader-election", name: this.options.name, token: lease.token }, "elected leader");
          this.options.onElected?.({ name: this.options.name, token: lease.token });
          return;
        }
        if (claim.reason !== "fenced") break;
        lease = await this.options.lock.advanceToken(lease, claim.highestToken, this.options.ttlMs);
      }
    } catch (error) {
      this.options.logger?.warn({ component: "leader-election", err: error }, "leader campaign failed");
    }
    // Holding the lock without a claimed fence helps nobody: let another replica try.
    if (lease) await this.options.lock.release(lease).catch(() => undefined);
  }

  private async renew(lease: LeaderLease): Promise<void> {
    let held = false;
    try {
      held = await this.options.lock.renew(lease, this.options.ttlMs);
    } catch (error) {
      this.options.logger?.warn({ component: "leader-election", err: error }, "renewing the leader lock failed");
    }
    // Unsure counts as lost: acting on a lock that may have expired is what fencing
    // exists to stop, and stepping down early costs only a re-election.
    if (!held) this.demote("lock lost");
  }

  private demote(reason: string): void {
    if (!this.lease) return;
    this.options.logger?.info({ component: "leader-election", name: this.options.name, token: this.lease.token, reason }, "no longer leader");
    this.lease = undefined;
    this.options.onDemoted?.();
  }
}
