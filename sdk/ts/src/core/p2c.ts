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
