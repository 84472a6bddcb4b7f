import type { ChangeFeed, ChangeSubscription, RegistryEvent } from "../ports.js";

/**
 * In-process change fan-out with a bounded history, so a Watch that reconnects
 * with a recent revision resumes without a snapshot.
 */
export class MemoryChangeFeed implements ChangeFeed {
  private readonly history: RegistryEvent[] = [];
  private readonly subscribers = new Set<(event: RegistryEvent) => void>();
  private latestRevision = 0;

  constructor(private readonly historyLimit = 10_000) {}

  get oldestRetainedRevision(): number {
    return this.history[0]?.revision ?? this.latestRevision + 1;
  }

  publish(event: RegistryEvent): void {
    this.latestRevision = event.revision;
    this.history.push(event);
    if (this.history.length > this.historyLimit * 1.5) this.history.splice(0, this.history.length - this.historyLimit);
    for (const subscriber of this.subscribers) subscriber(event);
  }

  subscribe(sinceRevision: number, onEvent: (event: RegistryEvent) => void): ChangeSubscription | undefined {
    if (sinceRevision < this.latestRevision && sinceRevision + 1 < this.oldestRetainedRevision) return undefined;
    for (const event of this.history) {
      if (event.revision > sinceRevision) onEvent(event);
    }
    this.subscribers.add(onEvent);
    return { close: () => this.subscribers.delete(onEvent) };
  }
}
