import type { RandomSource } from "./clock.js";

/**
 * Two distinct indexes out of `count`, uniformly. With one candidate both are 0.
 * Kept tiny so its distribution is easy to test.
 */
export function pickTwoIndexes(count: number, random: RandomSource): [number, number] {
  if (count <= 1) return [0, 0];
  const first = Math.floor(random() * count);
  const offset = 1 + Math.floor(random() * (count - 1));
  return [first, (first + offset) % count];
}

/**
 * Power of two choices: sample two candidates and keep the one with less load;
 * `tieBreak` (for example EWMA latency) decides equal loads. Returns undefined
 * for an empty list.
 */
export function powerOfTwoChoices<T>(
  candidates: readonly T[],
  load: (candidate: T) => number,
  random: RandomSource,
  tieBreak: (candidate: T) => number = () => 0,
): T | undefined {
  if (candidates.length === 0) return undefined;
  const [firstIndex, secondIndex] = pickTwoIndexes(candidates.length, random);
  const first = candidates[firstIndex] as T;
  const second = candidates[secondIndex] as T;
  const firstLoad = load(first);
  const secondLoad = load(second);
  if (firstLoad !== secondLoad) return firstLoad < secondLoad ? first : second;
  return tieBreak(second) < tieBreak(first) ? second : first;
}

/**
 * The exact share of picks `powerOfTwoChoices` gives each candidate for these
 * loads (what an operator reads as the balancer's weights). Every ordered pair of
 * distinct candidates is equally likely; the lower load wins, then the lower
 * `tieBreak`, and a pair equal on both goes to the first drawn, so each of the
 * two wins one of its two orders. Shares add up to 1; an empty list has none.
 */
export function powerOfTwoChoicesShares<T>(candidates: readonly T[], load: (candidate: T) => number, tieBreak: (candidate: T) => number = () => 0): number[] {
  const count = candidates.length;
  if (count <= 1) return candidates.map(() => 1);
  // Sorted by (load, tieBreak), a candidate beats everyone after its group of equals
  // in both orders and each of its equals in one: O(n log n) for large sets.
  const keyed = candidates.map((candidate, index) => ({ index, load: load(candidate), tieBreak: tieBreak(candidate) }));
  keyed.sort((left, right) => left.load - right.load || left.tieBreak - right.tieBreak);
  const shares = new Array<number>(count).fill(0);
  const orderedPairs = count * (count - 1);
  for (let groupStart = 0; groupStart < count; ) {
    const first = keyed[groupStart] as (typeof keyed)[number];
    let groupEnd = groupStart + 1;
    while (groupEnd < count && keyed[groupEnd]?.load === first.load && keyed[groupEnd]?.tieBreak === first.tieBreak) groupEnd += 1;
    const wins = 2 * (count - groupEnd) + (groupEnd - groupStart - 1);
    for (let position = groupStart; position < groupEnd; position += 1) shares[(keyed[position] as (typeof keyed)[number]).index] = wins / orderedPairs;
    groupStart = groupEnd;
  }
  return shares;
}
