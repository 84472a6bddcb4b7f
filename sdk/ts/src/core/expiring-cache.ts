/**
 * A map whose entries stop being useful at a known time (a certificate's
 * notAfter). Expired entries are swept out when the map has doubled since the
 * last sweep, so the work stays O(1) per insert on average and the map holds at
 * most twice the entries still valid (or `minSweepSize`), however many have
 * come and gone. `maxEntries` stays as a backstop against entries that all stay
 * valid: should a sweep leave more than half of it, the map starts over.
 *
 * Why: certificates renew (every 40-50 % of their TTL), and a cache keyed by
 * certificate that only forgot at a fixed count kept every certificate a peer
 * ever showed, growing with each renewal for the life of the process.
 */
export class ExpiringCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAtMs: number }>();
  private sweepAtSize: number;

  constructor(
    private readonly maxEntries: number,
    private readonly minSweepSize = 64,
  ) {
    this.sweepAtSize = minSweepSize;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The value, while `nowMs` is before its expiry. */
  get(key: string, nowMs: number): V | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (nowMs >= entry.expiresAtMs) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key: string, value: V, expiresAtMs: number, nowMs: number): void {
    if (this.entries.size >= this.sweepAtSize) this.sweep(nowMs);
    this.entries.set(key, { value, expiresAtMs });
  }

  clear(): void {
    this.entries.clear();
    this.sweepAtSize = this.minSweepSize;
  }

  private sweep(nowMs: number): void {
    for (const [key, entry] of this.entries) if (nowMs >= entry.expiresAtMs) this.entries.delete(key);
    if (this.entries.size * 2 > this.maxEntries) this.entries.clear();
    this.sweepAtSize = Math.min(this.maxEntries, Math.max(this.minSweepSize, this.entries.size * 2));
  }
}
