/**
 * One sidecar as placement sees it. Counts are of managed instances (those a
 * deployment placed) that the registry knows; starts not yet registered are
 * added with `withPlacements`.
 */
export interface SidecarSnapshot {
  sidecarId: string;
  /**
   * Managed instances it runs at most; 0 = unmanaged only. From a Connect Hello:
   * `hello.capacity` (how many more it accepts) plus the managed instances it announced.
   */
  capacity: number;
  /** Managed instances on it now, all deployments together. */
  instanceCount: number;
  /** Managed instances on it now, per deployment name. */
  byDeployment: Readonly<Record<string, number>>;
  /** False while its Connect stream is down; nothing is placed there then. */
  connected: boolean;
}

export interface Placement {
  sidecarId: string;
  deployment: string;
}

/**
 * Chooses sidecars for `count` new instances of `deployment`, one at a time so
 * each choice sees the previous ones: spread first (fewest instances of this
 * deployment), then fewest instances overall, then most free capacity, then
 * sidecar id so equal snapshots always give equal answers. Only connected
 * sidecars with free capacity qualify; returns fewer ids than `count` when
 * capacity runs out.
 */
export function placeInstances(sidecars: readonly SidecarSnapshot[], deployment: string, count: number): string[] {
  let working = sidecars;
  const chosen: string[] = [];
  for (let index = 0; index < count; index += 1) {
    const best = bestSidecar(working, deployment);
    if (!best) break;
    chosen.push(best.sidecarId);
    working = withPlacements(working, [{ sidecarId: best.sidecarId, deployment }]);
  }
  return chosen;
}

/** The snapshot after `placements` land: counts go up by one per placement. */
export function withPlacements(sidecars: readonly SidecarSnapshot[], placements: readonly Placement[]): SidecarSnapshot[] {
  if (placements.length === 0) return [...sidecars];
  return sidecars.map((sidecar) => {
    const mine = placements.filter((placement) => placement.sidecarId === sidecar.sidecarId);
    if (mine.length === 0) return sidecar;
    const byDeployment: Record<string, number> = { ...sidecar.byDeployment };
    for (const placement of mine) byDeployment[placement.deployment] = (byDeployment[placement.deployment] ?? 0) + 1;
    return { ...sidecar, instanceCount: sidecar.instanceCount + mine.length, byDeployment };
  });
}

function freeCapacity(sidecar: SidecarSnapshot): number {
  return Math.max(0, sidecar.capacity - sidecar.instanceCount);
}

function bestSidecar(sidecars: readonly SidecarSnapshot[], deployment: string): SidecarSnapshot | undefined {
  let best: SidecarSnapshot | undefined;
  for (const sidecar of sidecars) {
    if (!sidecar.connected || sidecar.capacity <= 0 || freeCapacity(sidecar) <= 0) continue;
    if (!best || compareForPlacement(sidecar, best, deployment) < 0) best = sidecar;
  }
  return best;
}

/** Negative when `left` is the better home for one more instance of `deployment`. */
function compareForPlacement(left: SidecarSnapshot, right: SidecarSnapshot, deployment: string): number {
  const sameDeployment = (left.byDeployment[deployment] ?? 0) - (right.byDeployment[deployment] ?? 0);
  if (sameDeployment !== 0) return sameDeployment;
  if (left.instanceCount !== right.instanceCount) return left.instanceCount - right.instanceCount;
  const free = freeCapacity(right) - freeCapacity(left);
  if (free !== 0) return free;
  return left.sidecarId < right.sidecarId ? -1 : left.sidecarId > right.sidecarId ? 1 : 0;
}
