import type { Clock } from "../clock.js";
import type { Revocations } from "../../gen/agentmesh/v1/orchestrator.js";
import { normalizeSerial } from "./peer-verifier.js";

/**
 * The mesh's revoked certificate serials as a sidecar learns them on its Connect
 * stream (docs/signing.md §8.6). Looked up on every tunnel handshake and frame, so a
 * plain set; each serial is forgotten once its certificate has expired anyway.
 */
export class RevokedSerials {
  private readonly notAfterBySerial = new Map<string, number>();

  constructor(private readonly clock: Clock) {}

  get size(): number {
    return this.notAfterBySerial.size;
  }

  /** True for a serial (any case, leading zeros or not) of a revoked certificate not yet expired. */
  has(serial: string): boolean {
    if (this.notAfterBySerial.size === 0) return false;
    return this.notAfterBySerial.has(normalizeSerial(serial));
  }

  /** Takes a Revocations message (a full list replaces the set); answers the serials revoked that were not before. */
  apply(revocations: Revocations): string[] {
    const nowMs = this.clock.nowMs();
    const known = revocations.full ? new Set(this.notAfterBySerial.keys()) : undefined;
    if (revocations.full) this.notAfterBySerial.clear();
    const added: string[] = [];
    for (const certificate of revocations.certificates) {
      if (certificate.notAfterMs <= nowMs) continue;
      const serial = normalizeSerial(certificate.serial);
      if (!(known?.has(serial) ?? this.notAfterBySerial.has(serial))) added.push(serial);
      this.notAfterBySerial.set(serial, certificate.notAfterMs);
    }
    this.prune(nowMs);
    return added;
  }

  private prune(nowMs: number): void {
    for (const [serial, notAfterMs] of this.notAfterBySerial) if (notAfterMs <= nowMs) this.notAfterBySerial.delete(serial);
  }
}
