import type { JoinTokenRecord, JoinTokenStore } from "../ports.js";

/** Join tokens in process memory; single-process, so `use` is trivially atomic. */
export class MemoryJoinTokenStore implements JoinTokenStore {
  private readonly byHash = new Map<string, JoinTokenRecord>();

  async insert(record: JoinTokenRecord): Promise<void> {
    this.byHash.set(record.tokenHash, { ...record, allowedAgentNames: [...record.allowedAgentNames] });
  }

  async get(tokenHash: string): Promise<JoinTokenRecord | undefined> {
    const record = this.byHash.get(tokenHash);
    return record && { ...record, allowedAgentNames: [...record.allowedAgentNames] };
  }

  async use(tokenHash: string, nowMs: number): Promise<JoinTokenRecord | undefined> {
    const record = this.byHash.get(tokenHash);
    if (!record || record.uses >= record.maxUses || record.expiresAtMs <= nowMs) return undefined;
    record.uses += 1;
    return { ...record, allowedAgentNames: [...record.allowedAgentNames] };
  }

  async deleteExpired(nowMs: number): Promise<number> {
    let removed = 0;
    for (const [hash, record] of this.byHash) {
      if (record.expiresAtMs <= nowMs) {
        this.byHash.delete(hash);
        removed += 1;
      }
    }
    return removed;
  }
}
