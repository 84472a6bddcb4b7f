/**
 * Peak-EWMA latency (Linkerd's balancer): jumps up to a slow sample at once,
 * decays towards faster ones with time constant `decayMs`. "Now" is an argument,
 * so the decay is deterministic under test.
 */
export class PeakEwma {
  private valueMs = 0;
  private updatedAtMs: number | undefined;

  constructor(private readonly decayMs = 10_000) {}

  observe(latencyMs: number, nowMs: number): void {
    if (this.updatedAtMs === undefined || latencyMs > this.valueMs) {
      this.valueMs = latencyMs;
    } else {
      const weight = Math.exp(-Math.max(0, nowMs - this.updatedAtMs) / this.decayMs);
      this.valueMs = this.valueMs * weight + latencyMs * (1 - weight);
    }
    this.updatedAtMs = nowMs;
  }

  get(nowMs: number): number {
    if (this.updatedAtMs === undefined) return 0;
    return this.valueMs * Math.exp(-Math.max(0, nowMs - this.updatedAtMs) / this.decayMs);
  }
}
