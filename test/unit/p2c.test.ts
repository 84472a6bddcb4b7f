import { describe, expect, it } from "vitest";
import { pickTwoIndexes, powerOfTwoChoices, powerOfTwoChoicesShares } from "../../sdk/ts/src/core/p2c.js";

/** Deterministic pseudo-random source (mulberry32). */
function seeded(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let value = Math.imul(state ^ (state >>> 15), 1 | state);
    value = (value + Math.imul(value ^ (value >>> 7), 61 | value)) ^ value;
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

describe("pickTwoIndexes", () => {
  it("always returns two distinct in-range indexes, covering every pair", () => {
    const random = seeded(7);
    const pairs = new Set<string>();
    for (let trial = 0; trial < 5000; trial += 1) {
      const [first, second] = pickTwoIndexes(5, random);
      expect(first).not.toBe(second);
      expect(first).toBeGreaterThanOrEqual(0);
      expect(second).toBeLessThan(5);
      pairs.add([first, second].sort().join());
    }
    expect(pairs.size).toBe(10);
  });

  it("handles one candidate", () => expect(pickTwoIndexes(1, Math.random)).toEqual([0, 0]));
});

describe("powerOfTwoChoices", () => {
  it("never picks the most loaded of several candidates", () => {
    const loads = [5, 1, 9, 3];
    const random = seeded(11);
    for (let trial = 0; trial < 2000; trial += 1) {
      expect(powerOfTwoChoices([0, 1, 2, 3], (index) => loads[index] ?? 0, random)).not.toBe(2);
    }
  });

  it("sends most traffic to the idle instance but not all of it", () => {
    const loads = [0, 10, 10, 10];
    const random = seeded(3);
    const counts = [0, 0, 0, 0];
    for (let trial = 0; trial < 4000; trial += 1) {
      const chosen = powerOfTwoChoices([0, 1, 2, 3], (index) => loads[index] ?? 0, random) as number;
      counts[chosen] = (counts[chosen] ?? 0) + 1;
    }
    // The idle one wins every pair it is in: 3 of the 6 pairs, so half the picks.
    expect((counts[0] ?? 0) / 4000).toBeCloseTo(0.5, 1);
    expect(counts.slice(1).every((count) => count > 0)).toBe(true);
  });

  it("uses the tie-break on equal load", () => {
    const latency = [30, 10];
    for (let trial = 0; trial < 50; trial += 1) {
      expect(powerOfTwoChoices([0, 1], () => 0, Math.random, (index) => latency[index] ?? 0)).toBe(1);
    }
  });

  it("returns undefined for no candidates", () => expect(powerOfTwoChoices([], () => 0, Math.random)).toBeUndefined());
});

describe("powerOfTwoChoicesShares", () => {
  /**
   * Runs powerOfTwoChoices once for every ordered pair pickTwoIndexes can draw (each
   * equally likely), feeding it random values that land on that pair: the exact
   * distribution, to compare the closed form against.
   */
  function enumeratedShares(loads: number[], tieBreaks: number[]): number[] {
    const count = loads.length;
    const wins = new Array<number>(count).fill(0);
    for (let first = 0; first < count; first += 1) {
      for (let offset = 1; offset < count; offset += 1) {
        const draws = [(first + 0.5) / count, (offset - 1 + 0.5) / (count - 1)];
        const chosen = powerOfTwoChoices(
          loads.map((_, index) => index),
          (index) => loads[index] ?? 0,
          () => draws.shift() ?? 0,
          (index) => tieBreaks[index] ?? 0,
        ) as number;
        wins[chosen] = (wins[chosen] ?? 0) + 1;
      }
    }
    return wins.map((won) => won / (count * (count - 1)));
  }

  it.each([
    { loads: [0, 10, 10, 10], tieBreaks: [0, 0, 0, 0] },
    { loads: [3, 3, 3], tieBreaks: [0, 0, 0] },
    { loads: [2, 2, 5, 0, 2], tieBreaks: [9, 1, 0, 4, 1] },
    { loads: [1, 8], tieBreaks: [0, 0] },
    { loads: [4, 4], tieBreaks: [7, 3] },
  ])("equals the enumerated pick distribution for loads $loads, tie-breaks $tieBreaks", ({ loads, tieBreaks }) => {
    const shares = powerOfTwoChoicesShares(
      loads.map((_, index) => index),
      (index) => loads[index] ?? 0,
      (index) => tieBreaks[index] ?? 0,
    );
    const expected = enumeratedShares(loads, tieBreaks);
    shares.forEach((share, index) => expect(share).toBeCloseTo(expected[index] ?? -1, 12));
    expect(shares.reduce((sum, share) => sum + share, 0)).toBeCloseTo(1, 12);
  });

  it("gives a lone candidate every pick and an empty set none", () => {
    expect(powerOfTwoChoicesShares(["only"], () => 7)).toEqual([1]);
    expect(powerOfTwoChoicesShares([], () => 0)).toEqual([]);
  });

  it("never gives the most loaded of several candidates a pick", () => {
    expect(powerOfTwoChoicesShares([5, 1, 9, 3], (load) => load)[2]).toBe(0);
  });
});
