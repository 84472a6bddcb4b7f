/**
 * One sidecar as placement sees it. Counts are of managed instances (those a
 * deployment placed) that the registry knows; starts not yet registered are
 * added with `withPlacements`.
 */
export interface SidecarSnapshot {
  sidecarId: string;
  /**
   * The host it runs on (Hello.host), the unit replicas are spread over: two
   * sidecars on one machine fail together. Defaults to the sidecar id.
   */
  host?: string | undefined;
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
  /**
   * Identifies its current Connect session: a start sent on an earlier session
   * of the same sidecar never reached the process now running it.
   */
  sessionId?: string | undefined;
}

export interface Placement {
  sidecarId: string;
  deployment: string;
}

/**
 * Chooses sidecars for `count` new instances of `deployment`, one at a time so
 * each choice sees the previous ones. Anti-affinity by default: fewest
 * instances of this deployment on the same host first, then on the sidecar,
 * then fewest instances overall, then most free capacity, then sidecar id so
 * equal snapshots always give equal answers. Only connected sidecars with free
 * capacity qualify; returns fewer ids than `count` when capacity runs out.
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

/** The spread key of a sidecar: its host, or its id when it named none. */
export function hostOf(sidecar: SidecarSnapshot): string {
  return sidecar.host === undefined || sidecar.host === "" ? sidecar.sidecarId : sidecar.host;
}

/** Instances of `deployment` per host. */
export function countByHost(sidecars: readonly SidecarSnapshot[], deployment: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const sidecar of sidecars) {
    const host = hostOf(sidecar);
    counts.set(host, (counts.get(host) ?? 0) + (sidecar.byDeployment[deployment] ?? 0));
  }
  return counts;
}

/** Moving one instance of a deployment from one sidecar to another, to spread it better. */
export interface Move {
  fromSidecarId: string;
  toSidecarId: string;
}

/**
 * The one move that spreads `deployment` better, or undefined. The target is
 * where placement would put one more instance; the source is the sidecar with
 * the most instances of it on the most crowded host. A move is proposed only
 * when the source host has at least two more than the target host, so every
 * move lowers the sum of squared per-host counts: moves cannot cycle, and a
 * spread that is off by one (3 replicas on 2 hosts) is left alone.
 */
export function planMove(sidecars: readonly SidecarSnapshot[], deployment: string): Move | undefined {
  const target = bestSidecar(sidecars, deployment);
  if (!target) return undefined;
  const counts = countByHost(sidecars, deployment);
  let source: SidecarSnapshot | undefined;
  for (const sidecar of sidecars) {
    if (!sidecar.connected || (sidecar.byDeployment[deployment] ?? 0) === 0) continue;
    if (!source || compareAsSource(sidecar, source, counts, deployment) < 0) source = sidecar;
  }
  if (!source) return undefined;
  const sourceCount = counts.get(hostOf(source)) ?? 0;
  const targetCount = counts.get(hostOf(target)) ?? 0;
  if (sourceCount - targetCount < 2) return undefined;
  return { fromSidecarId: source.sidecarId, toSidecarId: target.sidecarId };
}

/** Negative when `left` is the better sidecar to take an instance of `deployment` from. */
function compareAsSource(left: SidecarSnapshot, right: SidecarSnapshot, counts: ReadonlyMap<string, number>, deployment: string): number {
  const host = (counts.get(hostOf(right)) ?? 0) - (counts.get(hostOf(left)) ?? 0);
  if (host !== 0) return host;
  const own = (right.byDeployment[deployment] ?? 0) - (left.byDeployment[deployment] ?? 0);
  if (own !== 0) return own;
  return left.sidecarId < right.sidecarId ? -1 : left.sidecarId > right.sidecarId ? 1 : 0;
}

function freeCapacity(sidecar: SidecarSnapshot): number {
  return Math.max(0, sidecar.capacity - sidecar.instanceCount);
}

function bestSidecar(sidecars: readonly SidecarSnapshot[], deployment: string): SidecarSnapshot | undefined {
  const counts = countByHost(sidecars, deployment);
  let best: SidecarSnapshot | undefined;
  for (const sidecar of sidecars) {
    if (!sidecar.connected || sidecar.capacity <= 0 || freeCapacity(sidecar) <= 0) continue;
    if (!best || compareForPlacement(sidecar, best, counts, deployment) < 0) best = sidecar;
  }
  return best;
}

/** Negative when `left` is the better home for one more instance of `deployment`. */
function compareForPlacement(left: SidecarSnapshot, right: SidecarSnapshot, counts: ReadonlyMap<string, number>, deployment: string): number {
  const sameHost = (counts.get(hostOf(left)) ?? 0) - (counts.get(hostOf(right)) ?? 0);
  if (sameHost !== 0) return sameHost;
  const sameDeployment = (left.byDeployment[deployment] ?? 0) - (right.byDeployment[deployment] ?? 0);
  if (sameDeployment !== 0) return sameDeployment;
  if (left.instanceCount !== right.instanceCount) return left.instanceCount - right.instanceCount;
  const free = freeCapacity(right) - freeCapacity(left);
  if (free !== 0) return free;
  return left.sidecarId < right.sidecarId ? -1 : left.sidecarId > right.sidecarId ? 1 : 0;
}
