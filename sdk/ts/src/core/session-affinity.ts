/**
 * Session affinity by rendezvous (highest-random-weight) hashing with bounded load
 * (Mirrokni, Thorup, Zadimoghaddam 2018): a session key goes to the candidate with
 * the highest score hash(key, id) whose load stays within `loadFactor` × the average
 * (+1 for the call being placed). Every sidecar computes the same order from the same
 * set, so a key lands on one instance mesh-wide; removing a candidate moves only the
 * keys it held, adding one moves about 1/n of them, and an instance over the bound
 * sheds only its newest arrivals to the key's next choice.
 */

/** The metadata key a caller sets to keep its calls on one instance (the SDK's `sessionKey` option). */
export const sessionKeyMetadata = "agentmesh-session-key";

/** The default bound: 25 % over the average load. */
export const defaultLoadFactor = 1.25;

/** 32-bit FNV-1a of a string's UTF-16 code units; cheap, and the finalizer below spreads it. */
export function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index += 1) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** murmur3's fmix32: avalanches a 32-bit value. */
function mix(value: number): number {
  let hash = value >>> 0;
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

/** The rendezvous score of one candidate for one key (both given as hashes). */
export function affinityScore(keyHash: number, idHash: number): number {
  return mix(keyHash ^ mix(idHash + 0x9e3779b9));
}

/** A key's position in [0, 1): the same for every sidecar, used to draw a traffic-split version by key. */
export function keyFraction(key: string): number {
  return mix(hashString(key) ^ 0x5bd1e995) / 4294967296;
}

/**
 * The candidate `key` sticks to: the highest-scoring one within the load bound.
 * Undefined for an empty list.
 */
export function pickByAffinity<T>(
  key: string,
  candidates: readonly T[],
  idOf: (candidate: T) => string,
  load: (candidate: T) => number,
  loadFactor = defaultLoadFactor,
): T | undefined {
  if (candidates.length <= 1) return candidates[0];
  const keyHash = hashString(key);
  const scored = candidates.map((candidate) => ({ candidate, score: affinityScore(keyHash, hashString(idOf(candidate))), load: load(candidate) }));
  const totalLoad = scored.reduce((sum, entry) => sum + entry.load, 0);
  const bound = Math.ceil((loadFactor * (totalLoad + 1)) / candidates.length);
  let best: (typeof scored)[number] | undefined;
  for (const entry of scored) if (entry.load + 1 <= bound && (best === undefined || entry.score > best.score)) best = entry;
  // Someone is always under the bound (not all can be above the average); the fallback only guards odd loads (negative, NaN).
  return (best ?? scored.reduce((left, right) => (right.score > left.score ? right : left))).candidate;
}
