import type { Unsubscribe, WakeUps } from "./coordination-ports.js";
import type { ChangeLog } from "./ports.js";

/**
 * Publishes each local commit's revision to the other replicas. After the commit,
 * never instead of it: a lost publish costs a follower one poll interval, nothing more.
 */
export function relayCommits(log: ChangeLog, wakeUps: WakeUps): Unsubscribe {
  return log.onChange((revision) => void wakeUps.publish(revision));
}
