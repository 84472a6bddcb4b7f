/**
 * Collects items as they arrive and lets a test wait for the next one matching a
 * predicate, in order: each match moves a cursor past it, so "READY again" after
 * "UNHEALTHY" never matches the first READY.
 */
export class EventLog<T> {
  readonly items: T[] = [];
  private cursor = 0;
  private readonly waiters = new Set<() => void>();

  push(item: T): void {
    this.items.push(item);
    for (const waiter of [...this.waiters]) waiter();
  }

  next(predicate: (item: T) => boolean, timeoutMs = 10_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        for (let index = this.cursor; index < this.items.length; index += 1) {
          const item = this.items[index] as T;
          if (!predicate(item)) continue;
          this.cursor = index + 1;
          resolve(item);
          return true;
        }
        return false;
      };
      if (check()) return;
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`no matching event within ${timeoutMs} ms (saw ${this.items.length})`));
      }, timeoutMs);
      const waiter = () => {
        if (!check()) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      this.waiters.add(waiter);
    });
  }
}
