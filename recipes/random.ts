// Host-side seeded randomness for the recipes (data order, demo problems): mulberry32, reproducible across runs and
// platforms, and the permutations built on it. Device-side randomness (dropout, init) is ops/random.ts's keyed RNG.

/**
 * A uniform [0, 1) stream (mulberry32) from a 32-bit state.
 * @example const u = mulberry32(42); u(); // 0.6011037519201636
 */
export const mulberry32 = (state: number): (() => number) => {
  let s = state >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), s | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
};

/**
 * A seeded permutation of 0…n−1 (Fisher–Yates over `u`).
 * @example permutation(4, mulberry32(1)) // a fixed order of [0, 1, 2, 3]
 */
export const permutation = (n: number, u: () => number): number[] => {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) { const j = Math.floor(u() * (i + 1)); [p[i], p[j]] = [p[j]!, p[i]!]; }
  return p;
};
