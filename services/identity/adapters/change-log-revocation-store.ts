import { decodeJson, encodeJson, stateKeys, type ChangeLog } from "../../state/index.js";
import type { RevocationRecord, RevocationStore } from "../ports.js";

/** Revocations as keys of the change log; durable, and seen by every replica. */
export class ChangeLogRevocationStore implements RevocationStore {
  constructor(private readonly log: ChangeLog) {}

  async add(records: RevocationRecord[]): Promise<void> {
    // Create-only per serial (expectRevision 0): the first revocation of a serial is
    // the one kept, and a conflict just means it was already revoked.
    await Promise.all(records.map((record) => this.log.txn([{ type: "put", key: stateKeys.revocation(record.serial), value: encodeJson(record), expectRevision: 0 }])));
  }

  async listActive(nowMs: number): Promise<RevocationRecord[]> {
    const { items } = await this.log.range(stateKeys.revocations);
    return items.map((item) => decodeJson<RevocationRecord>(item.value)).filter((record) => record.notAfterMs > nowMs);
  }

  /** Drops revocations of certificates expired before nowMs (they are refused as expired anyway). */
  async deleteExpired(nowMs: number): Promise<number> {
    const { items } = await this.log.range(stateKeys.revocations);
    const expired = items.filter((item) => decodeJson<RevocationRecord>(item.value).notAfterMs <= nowMs);
    const results = await Promise.all(expired.map((item) => this.log.txn([{ type: "delete", key: item.key, expectRevision: item.modRevision }])));
    return results.filter((result) => result.ok && result.previousRevisions[0] !== 0).length;
  }
}
