import type { Logger } from "pino";
import { MeshError } from "../../sdk/ts/src/core/mesh-error.js";
import { systemTimers, type TimerHandle, type Timers } from "../../sdk/ts/src/core/dataplane/timers.js";
import type { Unsubscribe, WakeUps } from "./coordination-ports.js";
import type { Change, ChangeLog, KeyValue } from "./ports.js";

// Keeps an in-memory projection in step with the change log: a snapshot (range) at
// start and on every resync, then changesSince by revision. It reads when told to
// (a local commit, a wake-up from another replica) and on a poll timer, and it
// never trusts a wake-up beyond "read now": a lost or reordered hint costs at most
// one poll interval, never a change.

export interface FollowerPosition {
  epoch: string;
  revision: number;
}

export interface ChangeFollowerOptions {
  log: ChangeLog;
  /** Keys of interest; the snapshot is range(prefix) and other keys' changes are skipped. */
  prefix: string;
  /** Hints from other replicas; the log's own onChange covers local commits. */
  wakeUps?: WakeUps;
  /** Safety net for lost hints; also how fast a follower without wake-ups converges. */
  pollIntervalMs: number;
  pageLimit?: number;
  timers?: Timers;
  logger?: Logger;
  /** Replace the whole projection: everything under prefix at `revision`. */
  onSnapshot(snapshot: FollowerPosition & { items: KeyValue[] }): void | Promise<void>;
  /** Apply changes in order; whole transactions only. */
  onChanges(batch: FollowerPosition & { changes: Change[] }): void | Promise<void>;
}

interface Waiter {
  revision: number;
  resolve: () => void;
  reject: (error: unknown) => void;
  timer: TimerHandle;
}

export class ChangeFollower {
  private current: FollowerPosition | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private pollTimer: TimerHandle | undefined;
  private readonly unsubscribers: Unsubscribe[] = [];
  private readonly waiters = new Set<Waiter>();
  private readonly timers: Timers;

  constructor(private readonly options: ChangeFollowerOptions) {
    this.timers = options.timers ?? systemTimers;
  }

  /** Where the projection stands; undefined before the first sync. */
  get position(): FollowerPosition | undefined {
    return this.current && { ...this.current };
  }

  /**
   * Syncs once (from `from`, or from a snapshot), then follows. Rejects when the
   * first sync fails: a projection that never loaded must not serve.
   */
  async start(from?: FollowerPosition): Promise<void> {
    this.current = from && { ...from };
    await this.readUntilCaughtUp();
    this.unsubscribers.push(this.options.log.onChange(() => void this.catchUp()));
    if (this.options.wakeUps) this.unsubscribers.push(this.options.wakeUps.subscribe(() => void this.catchUp()));
    this.schedulePoll();
  }

  /** Reads until caught up; concurrent calls share one reader, and each sees a read that began after it. */
  catchUp(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.again = true;
    this.running ??= this.drain();
    return this.running;
  }

  /** Resolves once the projection has applied `revision` (read-your-writes on this replica). */
  waitForRevision(revision: number, timeoutMs = 5_000): Promise<void> {
    if (this.current && this.current.revision >= revision) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        revision,
        resolve,
        reject,
        timer: this.timers.setTimeout(() => {
          this.waiters.delete(waiter);
          reject(new MeshError("unavailable", "state not caught up in time"));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
      void this.catchUp();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const unsubscribe of this.unsubscribers.splice(0)) unsubscribe();
    if (this.pollTimer !== undefined) this.timers.clearTimeout(this.pollTimer);
    for (const waiter of this.waiters) {
      this.timers.clearTimeout(waiter.timer);
      waiter.reject(new MeshError("unavailable", "state follower closed"));
    }
    this.waiters.clear();
    await this.running;
  }

  private async drain(): Promise<void> {
    try {
      while (this.again && !this.closed) {
        this.again = false;
        try {
          await this.readUntilCaughtUp();
        } catch (error) {
          // Keep the position; the next hint or poll retries from it.
          this.options.logger?.warn({ component: "state-follower", err: error }, "catching up with the change log failed");
        }
      }
    } finally {
      this.running = undefined;
    }
  }

  private async readUntilCaughtUp(): Promise<void> {
    for (;;) {
      if (!this.current) await this.snapshot(this.options.log.epoch);
      const from = this.current as FollowerPosition;
      const page = await this.options.log.changesSince(from.revision, { epoch: from.epoch, ...(this.options.pageLimit ? { limit: this.options.pageLimit } : {}) });
      if (page.kind === "resync") {
        this.options.logger?.info({ component: "state-follower", reason: page.reason, revision: from.revision, currentRevision: page.currentRevision }, "resyncing from a snapshot");
        await this.snapshot(page.epoch);
        continue;
      }
      const changes = page.changes.filter((change) => change.key.startsWith(this.options.prefix));
      if (page.revision !== from.revision) {
        if (changes.length > 0) await this.options.onChanges({ epoch: page.epoch, revision: page.revision, changes });
        this.current = { epoch: page.epoch, revision: page.revision };
        this.releaseWaiters();
      }
      if (!page.more) return;
    }
  }

  private async snapshot(epoch: string): Promise<void> {
    const { revision, items } = await this.options.log.range(this.options.prefix);
    await this.options.onSnapshot({ epoch, revision, items });
    this.current = { epoch, revision };
    this.releaseWaiters();
  }

  private releaseWaiters(): void {
    const revision = this.current?.revision ?? 0;
    for (const waiter of this.waiters) {
      if (waiter.revision > revision) continue;
      this.timers.clearTimeout(waiter.timer);
      this.waiters.delete(waiter);
      waiter.resolve();
    }
  }

  private schedulePoll(): void {
    if (this.closed) return;
    // Re-armed before reading: a slow read coalesces with the next poll instead of delaying it.
    this.pollTimer = this.timers.setTimeout(() => {
      this.schedulePoll();
      void this.catchUp();
    }, this.options.pollIntervalMs);
  }
}
