import type { RevocationRecord, RevocationStore } from "../ports.js";

/** Revocations in process memory (lost on restart; PostgreSQL keeps them durably). */
export class MemoryRevocationStore implements RevocationStore {
  private readonly bySerial = new Map<string, RevocationRecord>();

  async add(records: RevocationRecord[]): Promise<void> {
    for (const record of records) {
      if (!this.bySerial.has(record.serial)) this.bySerial.set(record.serial, { ...record });
    }
  }

  async listActive(nowMs: number): Promise<RevocationRecord[]> {
    return [...this.bySerial.values()].filter((record) => record.notAfterMs > nowMs).map((record) => ({ ...record }));
  }
}
