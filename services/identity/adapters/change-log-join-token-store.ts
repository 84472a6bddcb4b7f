import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { decodeJson, encodeJson, stateKeys, type ChangeLog } from "../../state/index.js";
import type { JoinTokenRecord, JoinTokenStore } from "../ports.js";

/**
 * Join tokens as keys of the change log (hashes only, as ever). `use` is a
 * compare-and-swap on the key's mod revision, retried on conflict, so replicas
 * racing for the last use cannot both spend it.
 */
export class ChangeLogJoinTokenStore implements JoinTokenStore {
  constructor(
    private readonly log: ChangeLog,
    /** Bounds the CAS loop; each round loses only to a use that succeeded. */
    private readonly maxAttempts = 1000,
  ) {}

  async insert(record: JoinTokenRecord): Promise<void> {
    await this.log.txn([{ type: "put", key: stateKeys.joinToken(record.tokenHash), value: encodeJson(record) }]);
  }

  async get(tokenHash: string): Promise<JoinTokenRecord | undefined> {
    const { item } = await this.log.get(stateKeys.joinToken(tokenHash));
    return item && decodeJson<JoinTokenRecord>(item.value);
  }

  async use(tokenHash: string, nowMs: number): Promise<JoinTokenRecord | undefined> {
    const key = stateKeys.joinToken(tokenHash);
    for (let attempt = 0; attempt < this.maxAttempts; attempt += 1) {
      const { item } = await this.log.get(key);
      if (!item) return undefined;
      const record = decodeJson<JoinTokenRecord>(item.value);
      if (record.uses >= record.maxUses || record.expiresAtMs <= nowMs) return undefined;
      const used = { ...record, uses: record.uses + 1 };
      const result = await this.log.txn([{ type: "put", key, value: encodeJson(used), expectRevision: item.modRevision }]);
      if (result.ok) return used;
    }
    throw new MeshError("unavailable", "join token busy, retry");
  }

  async deleteExpired(nowMs: number): Promise<number> {
    const { items } = await this.log.range(stateKeys.joinTokens);
    const expired = items.filter((item) => decodeJson<JoinTokenRecord>(item.value).expiresAtMs <= nowMs);
    // One txn each, compared on the revision read: a token used meanwhile is left for the next sweep.
    const results = await Promise.all(expired.map((item) => this.log.txn([{ type: "delete", key: item.key, expectRevision: item.modRevision }])));
    return results.filter((result) => result.ok && result.previousRevisions[0] !== 0).length;
  }
}
