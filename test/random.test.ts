// Host-side randomness of the recipes (recipes/random.ts): mulberry32 against the algorithm written out again in
// BigInt arithmetic (Tommy Ettinger's mulberry32, as bryc's PRNG notes give it: 32-bit add, two
// multiply-xorshift rounds, a final xorshift), and the Fisher–Yates permutation by its distribution: every
// ordering of three items equally likely (a Sattolo cycle or an off-by-one range makes some impossible).
import { describe, expect, it } from 'vitest';
import { mulberry32, permutation } from '../recipes/random.js';

const M = (1n << 32n) - 1n;
/** mulberry32, each step in BigInt modulo 2³², without Math.imul or JS's 32-bit operators. */
const reference = (seed: number) => {
  let s = BigInt(seed) & M;
  const mul = (a: bigint, b: bigint) => (a * b) & M;
  return () => {
    s = (s + 0x6d2b79f5n) & M;
    let x = mul(s ^ (s >> 15n), s | 1n);
    x = (x ^ ((x + mul(x ^ (x >> 7n), x | 61n)) & M)) & M;
    return Number((x ^ (x >> 14n)) & M) / 2 ** 32;
  };
};

describe('mulberry32', () => {
  it('draws the reference stream, for seeds across the 32-bit range', () => {
    for (const seed of [0, 1, 42, 0x7fffffff, 0xffffffff, -1, 123456789]) {
      const [u, v] = [mulberry32(seed), reference(seed)];
      for (let i = 0; i < 500; i++) expect(u(), `seed ${seed}, draw ${i}`).toBe(v());
    }
  });

  it('stays in [0, 1) with a uniform mean', () => {
    const u = mulberry32(7);
    const xs = Array.from({ length: 20000 }, u);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(Math.abs(xs.reduce((a, b) => a + b, 0) / xs.length - 0.5)).toBeLessThan(6 * Math.sqrt(1 / 12 / xs.length));
  });
});

describe('permutation', () => {
  it('is a permutation of 0…n−1, fixed by the stream', () => {
    for (const n of [0, 1, 2, 10, 97]) {
      const p = permutation(n, mulberry32(n));
      expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
      expect(permutation(n, mulberry32(n))).toEqual(p);
    }
  });

  it('draws each of the 6 orderings of 3 items equally often (within 6σ over 60 000 draws)', () => {
    const u = mulberry32(3);
    const counts = new Map<string, number>();
    const n = 60000;
    for (let i = 0; i < n; i++) {
      const k = permutation(3, u).join('');
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual(['012', '021', '102', '120', '201', '210']);
    const sd = Math.sqrt(n * (1 / 6) * (5 / 6));
    for (const c of counts.values()) expect(Math.abs(c - n / 6)).toBeLessThan(6 * sd);
  });
});
