import { decodeJson, encodeJson, stateKeys, type ChangeLog, type KeyValue } from "../../state/index.js";
import type { CertificateStore, IssuedCertificateRecord } from "../ports.js";

/**
 * Issued certificates as keys of the change log: the record by serial, and the same
 * record under a per-SPIFFE-ID prefix so revoking an identity is one range read.
 * Both keys are written in one txn, so the index never disagrees with the record.
 */
export class ChangeLogCertificateStore implements CertificateStore {
  constructor(private readonly log: ChangeLog) {}

  async recordIssued(record: IssuedCertificateRecord): Promise<void> {
    const value = encodeJson(record);
    await this.log.txn([
      { type: "put", key: stateKeys.certificate(record.serial), value },
      { type: "put", key: stateKeys.certificateBySpiffeId(record.spiffeId, record.serial), value },
    ]);
  }

  async get(serial: string): Promise<IssuedCertificateRecord | undefined> {
    const { item } = await this.log.get(stateKeys.certificate(serial));
    return item && decodeJson<IssuedCertificateRecord>(item.value);
  }

  async listValid(spiffeId: string, nowMs: number): Promise<IssuedCertificateRecord[]> {
    const { items } = await this.log.range(stateKeys.certificatesBySpiffeId(spiffeId));
    const records = items.map((item) => ({ item, record: decodeJson<IssuedCertificateRecord>(item.value) }));
    const expired = records.filter(({ record }) => record.notAfterMs <= nowMs);
    // Expired certificates can never be revoked usefully; drop them as we pass, as the memory store does.
    if (expired.length > 0) await this.remove(expired.map(({ item, record }) => ({ indexItem: item, record })));
    return records.filter(({ record }) => record.notAfterMs > nowMs).map(({ record }) => record);
  }

  /** Drops every certificate expired before nowMs; answers how many. */
  async deleteExpired(nowMs: number): Promise<number> {
    const { items } = await this.log.range(stateKeys.certificates);
    const expired = items.map((item) => ({ item, record: decodeJson<IssuedCertificateRecord>(item.value) })).filter(({ record }) => record.notAfterMs <= nowMs);
    return this.remove(expired.map(({ record }) => ({ record })));
  }

  private async remove(entries: Array<{ record: IssuedCertificateRecord; indexItem?: KeyValue }>): Promise<number> {
    const results = await Promise.all(
      entries.map(({ record, indexItem }) =>
        this.log.txn([
          { type: "delete", key: stateKeys.certificate(record.serial) },
          { type: "delete", key: stateKeys.certificateBySpiffeId(record.spiffeId, record.serial), ...(indexItem ? { expectRevision: indexItem.modRevision } : {}) },
        ]),
      ),
    );
    return results.filter((result) => result.ok && result.previousRevisions[0] !== 0).length;
  }
}
