import type { DataPlaneRefusals } from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";

/** New refusals of one sidecar since its previous report, by reason. */
export type RefusalDelta = { sidecarId: string; reason: string; count: number };

/**
 * Turns the refusal totals sidecars report on Connect (cumulative since each
 * sidecar started, resent in full on every new stream) into increments for the
 * counter and the alert engine. A total lower than the one before means the
 * sidecar restarted: all of it is new.
 */
export class RefusalReports {
  private readonly totals = new Map<string, Map<string, number>>();

  record(sidecarId: string, refusals: readonly DataPlaneRefusals[]): RefusalDelta[] {
    let known = this.totals.get(sidecarId);
    if (!known) {
      known = new Map();
      this.totals.set(sidecarId, known);
    }
    const deltas: RefusalDelta[] = [];
    for (const { reason, total } of refusals) {
      const previous = known.get(reason) ?? 0;
      const count = total >= previous ? total - previous : total;
      known.set(reason, total);
      if (count > 0) deltas.push({ sidecarId, reason, count });
    }
    return deltas;
  }
}
