import type { Clock } from "../../../sdk/ts/src/core/clock.js";
import { MeshError } from "../../../sdk/ts/src/core/mesh-error.js";
import { tryParseSpiffeId } from "../../../sdk/ts/src/core/spiffe-id.js";
import type { CertificateStore, RevocationRecord, RevocationStore } from "../ports.js";
import { normalizeSerial } from "./ca.js";

export interface RevocationListOptions {
  certificates: CertificateStore;
  store: RevocationStore;
  clock: Clock;
}

/** What the interceptor knows about a peer certificate. */
export interface PresentedCertificate {
  /** Any case, as Node's X509Certificate.serialNumber prints it. */
  serial: string;
}

/**
 * Revoked certificates. Checks run on every call, so they read an in-memory set;
 * the store makes revocations durable, and `apply` takes revocations replicated
 * from another server. Revoking a SPIFFE ID revokes the certificates it holds
 * now (listed from the certificate store), so a later re-join gets a fresh,
 * valid certificate instead of a permanently banned name.
 */
export class RevocationList {
  private readonly bySerial = new Map<string, RevocationRecord>();

  constructor(private readonly options: RevocationListOptions) {}

  /** Fills the in-memory set from the store (server start). */
  async load(): Promise<void> {
    this.apply(await this.options.store.listActive(this.options.clock.nowMs()));
  }

  /**
   * Revokes by serial (hex) or by SPIFFE ID. Answers the records added, empty when
   * the targets were revoked already. notFound when a serial is unknown.
   */
  async revoke(target: string, details: { reason: string; revokedBy: string }): Promise<RevocationRecord[]> {
    const nowMs = this.options.clock.nowMs();
    const certificates = await this.certificatesFor(target.trim(), nowMs);
    const records = certificates
      .filter((certificate) => !this.bySerial.has(certificate.serial))
      .map((certificate) => ({
        serial: certificate.serial,
        spiffeId: certificate.spiffeId,
        reason: details.reason,
        revokedAtMs: nowMs,
        revokedBy: details.revokedBy,
        notAfterMs: certificate.notAfterMs,
      }));
    if (records.length > 0) await this.options.store.add(records);
    this.apply(records);
    return records;
  }

  private async certificatesFor(target: string, nowMs: number) {
    if (target.startsWith("spiffe://")) {
      const id = tryParseSpiffeId(target);
      if (!id) throw new MeshError("invalidArgument", "revocation target must be a serial or a SPIFFE ID");
      return this.options.certificates.listValid(id.uri, nowMs);
    }
    let serial: string;
    try {
      serial = normalizeSerial(target);
    } catch {
      throw new MeshError("invalidArgument", "revocation target must be a serial or a SPIFFE ID");
    }
    const certificate = await this.options.certificates.get(serial);
    if (!certificate) throw new MeshError("notFound", "certificate not found");
    return [certificate];
  }

  /** Adds revocations made elsewhere (replication) or loaded from the store. */
  apply(records: readonly RevocationRecord[]): void {
    for (const record of records) this.bySerial.set(normalizeSerial(record.serial), record);
  }

  /** Whether this serial is in the list (any case, leading zeros or not). */
  hasSerial(serial: string): boolean {
    return this.bySerial.has(normalizeSerial(serial));
  }

  isRevoked(certificate: PresentedCertificate): boolean {
    if (this.bySerial.size === 0) return false;
    return this.bySerial.has(normalizeSerial(certificate.serial));
  }

  /** Revocations of certificates not yet expired, newest first. */
  list(): RevocationRecord[] {
    const nowMs = this.options.clock.nowMs();
    return [...this.bySerial.values()].filter((record) => record.notAfterMs > nowMs).sort((a, b) => b.revokedAtMs - a.revokedAtMs);
  }

  /** Forgets revocations of certificates that have expired anyway; answers how many. */
  prune(): number {
    const nowMs = this.options.clock.nowMs();
    let removed = 0;
    for (const [serial, record] of this.bySerial) {
      if (record.notAfterMs <= nowMs) {
        this.bySerial.delete(serial);
        removed += 1;
      }
    }
    return removed;
  }
}
