import type { CertificateStore, IssuedCertificateRecord } from "../ports.js";

/** Issued certificates in process memory, indexed by serial and by SPIFFE ID. */
export class MemoryCertificateStore implements CertificateStore {
  private readonly bySerial = new Map<string, IssuedCertificateRecord>();
  private readonly serialsBySpiffeId = new Map<string, Set<string>>();

  async recordIssued(record: IssuedCertificateRecord): Promise<void> {
    this.bySerial.set(record.serial, { ...record });
    let serials = this.serialsBySpiffeId.get(record.spiffeId);
    if (!serials) {
      serials = new Set();
      this.serialsBySpiffeId.set(record.spiffeId, serials);
    }
    serials.add(record.serial);
  }

  async get(serial: string): Promise<IssuedCertificateRecord | undefined> {
    const record = this.bySerial.get(serial);
    return record && { ...record };
  }

  async listValid(spiffeId: string, nowMs: number): Promise<IssuedCertificateRecord[]> {
    const valid: IssuedCertificateRecord[] = [];
    const serials = this.serialsBySpiffeId.get(spiffeId);
    for (const serial of serials ?? []) {
      const record = this.bySerial.get(serial);
      if (!record) continue;
      if (record.notAfterMs > nowMs) {
        valid.push({ ...record });
      } else {
        // Expired certificates can never be revoked usefully; drop them as we pass.
        this.bySerial.delete(serial);
        serials?.delete(serial);
      }
    }
    return valid;
  }
}
