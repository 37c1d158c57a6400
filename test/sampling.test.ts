// Nucleus (top-p) sampling pinned exactly: which token each u picks at and around the nucleus boundary, and the
// frequencies of many draws against the renormalised nucleus probabilities (worked by hand below).
//
// The rule (Holtzman et al. 2019, "The Curious Case of Neural Text Degeneration", §3.1): the nucleus is the
// smallest most-likely-first set whose mass is at least p; a draw u ∈ [0, 1) walks the nucleus's cumulative mass,
// renormalised to the nucleus (u·kept), and lands in [c_i, c_{i+1}). Where the mass reaches p exactly, the set
// stops there; Hugging Face's TopPLogitsWarper agrees (it removes tokens whose ascending cumulative mass is
// ≤ 1 − p), Meta's generation.py `sample_top_p` (zero where cumsum − p_i > p) would keep one token more.

import { describe, expect, it } from 'vitest';
import { data, setBackend } from '../index.js';
import { sampleRow } from '../models/generate.js';
import { key, uniform } from '../ops/random.js';
import './setup.js';

setBackend('cpu');

// Four equal logits: each weight is exp(0) = 1 exactly, so every cumulative mass is an exact integer and the
// boundary cases below are exact in floating point (not "close to" p). Order: ids 0, 1, 2, 3 (ties by id).
const flat = [0, 0, 0, 0];
const T1 = { temperature: 1 } as const;

describe('nucleus boundary (exact)', () => {
  it('mass exactly p closes the nucleus: p = 1/2 keeps two of four equal tokens, not three', () => {
    // Kept {0, 1}, kept mass 2 of 4: u = 0.9 → 0.9·2 = 1.8 lands in token 1's [1, 2). Keeping three (a `≤ p`
    // rule) would put 0.9·3 = 2.7 in token 2.
    expect(sampleRow(flat, 0.9, { ...T1, topP: 0.5 })).toBe(1);
    expect(sampleRow(flat, 0.99, { ...T1, topP: 0.5 })).toBe(1);
    // p = 3/4 keeps three (mass 3 exactly); 1/4 keeps one.
    expect(sampleRow(flat, 0.99, { ...T1, topP: 0.75 })).toBe(2);
    expect(sampleRow(flat, 0.99, { ...T1, topP: 0.25 })).toBe(0);
  });

  it('just above p takes one token more, just below does not', () => {
    expect(sampleRow(flat, 0.99, { ...T1, topP: 0.5 + 1e-12 })).toBe(2);
    expect(sampleRow(flat, 0.99, { ...T1, topP: 0.5 - 1e-12 })).toBe(1);
    expect(sampleRow(flat, 0.99, { ...T1, topP: 0.25 + 1e-12 })).toBe(1);
    expect(sampleRow(flat, 0.99, { ...T1, topP: 1e-300 })).toBe(0); // the most likely token is always kept
  });

  it('u is scaled by the nucleus mass, not the total: each kept token takes an equal share of [0, 1)', () => {
    // Nucleus {0, 1} (mass 2 of 4). With u·kept: u < 1/2 → 0, u ≥ 1/2 → 1. With u·total, u = 0.3 → 1.2 would
    // already pick 1 and every u ≥ 1/4 would fall to the last kept token.
    expect(sampleRow(flat, 0, { ...T1, topP: 0.5 })).toBe(0);
    expect(sampleRow(flat, 0.3, { ...T1, topP: 0.5 })).toBe(0);
    expect(sampleRow(flat, 0.49, { ...T1, topP: 0.5 })).toBe(0);
    expect(sampleRow(flat, 0.5, { ...T1, topP: 0.5 })).toBe(1);
    // Nucleus {0, 1, 2}: thirds.
    expect(sampleRow(flat, 0.3, { ...T1, topP: 0.75 })).toBe(0);
    expect(sampleRow(flat, 0.34, { ...T1, topP: 0.75 })).toBe(1);
    expect(sampleRow(flat, 0.6, { ...T1, topP: 0.75 })).toBe(1);
    expect(sampleRow(flat, 0.67, { ...T1, topP: 0.75 })).toBe(2);
  });

  it('u exactly on a cumulative boundary belongs to the next token (intervals [c_i, c_{i+1}))', () => {
    expect(sampleRow(flat, 0.25, T1)).toBe(1); // 0.25·4 = 1 = c_1
    expect(sampleRow(flat, 0.5, T1)).toBe(2);
    expect(sampleRow(flat, 0.75, T1)).toBe(3);
    expect(sampleRow(flat, 0.75 - 2 ** -40, T1)).toBe(2);
  });

  it('the nucleus is taken most likely first: a rare low id is not kept before likely higher ids', () => {
    // Weights 1 (ids 1 and 3) and e^-30 ≈ 1e-13 (ids 0 and 2): p = 0.4 keeps id 1 alone, p = 0.9 ids 1 and 3.
    const l = [-30, 0, -30, 0];
    expect(sampleRow(l, 0.99, { ...T1, topP: 0.4 })).toBe(1);
    expect(sampleRow(l, 0.4, { ...T1, topP: 0.9 })).toBe(1);
    expect(sampleRow(l, 0.6, { ...T1, topP: 0.9 })).toBe(3);
  });
});

// Probabilities 0.4, 0.3, 0.2, 0.1 (logits are their logs; given in shuffled id order), top-p 0.75: the nucleus
// is {0.4, 0.3, 0.2} (0.4 + 0.3 = 0.7 < 0.75 ≤ 0.9), renormalised to 4/9, 3/9, 2/9; the 0.1 token never comes.
const probs = [0.2, 0.1, 0.4, 0.3]; // ids 0..3
const nucleus = [2 / 9, 0, 4 / 9, 3 / 9]; // by id
const opts = { temperature: 1, topP: 0.75 } as const;
const logits = probs.map(Math.log);

const frequencies = (us: ArrayLike<number>): number[] => {
  const n = [0, 0, 0, 0];
  for (let i = 0; i < us.length; i++) n[sampleRow(logits, us[i]!, opts)]! += 1;
  return n.map((c) => c / us.length);
};

describe('nucleus distribution', () => {
  it('an even grid of u gives each kept token its renormalised share (to the grid step)', () => {
    const N = 9000;
    const f = frequencies(Float64Array.from({ length: N }, (_, i) => (i + 0.5) / N));
    // Each token's share of [0, 1) is an interval; an even grid counts it to within one step.
    f.forEach((fi, i) => expect(Math.abs(fi - nucleus[i]!), `token ${i}: ${fi} vs ${nucleus[i]}`).toBeLessThanOrEqual(1 / N));
  });

  it('keyed uniform draws match the renormalised nucleus within 6σ (fixed key: reproducible)', async () => {
    const N = 20_000;
    const us = await data(uniform(key(2024), [N], 'f32')); // (N,)
    const f = frequencies(us);
    // Binomial standard deviation per token; 6σ ≈ 0.021 at 4/9. Scaling u by the total mass instead of the
    // nucleus mass gives 0.4, 0.3, 0.3 (off by 0.08 on the last kept token), a `≤ p` boundary keeps nothing else
    // here, so it is pinned by the exact cases above.
    f.forEach((fi, i) => {
      const q = nucleus[i]!;
      const sigma = Math.sqrt((q * (1 - q)) / N);
      expect(Math.abs(fi - q), `token ${i}: ${fi} vs ${q}`).toBeLessThanOrEqual(6 * sigma + 1e-12);
    });
    expect(f[1]).toBe(0);
  });
});

describe('temperature and the softmax, worked by hand', () => {
  it('the logits are divided by the temperature: T = 2 on logits 0, 2·ln 3 gives 1/4, 3/4 (T = 1 would give 1/10, 9/10)', () => {
    const l = [0, 2 * Math.log(3)]; // weights at T = 2: e^{-ln 3} = 1/3 and 1; token 1 first, on [0, 3/4)
    expect(sampleRow(l, 0.74, { temperature: 2 })).toBe(1);
    expect(sampleRow(l, 0.76, { temperature: 2 })).toBe(0);
    // T = 1/2 on logits 0, ln 3 / 2: the same 1/4, 3/4 (multiplying by T would give 0.43, 0.57).
    const half = [0, Math.log(3) / 2];
    expect(sampleRow(half, 0.6, { temperature: 0.5 })).toBe(1);
    expect(sampleRow(half, 0.76, { temperature: 0.5 })).toBe(0);
  });

  it('shifting every logit changes nothing, even by ±1000 (the weights are taken relative to the largest logit)', () => {
    // exp(1000) overflows and exp(−1000) underflows: only exp(l − max) keeps 1/4, 3/4 here.
    for (const shift of [0, 1000, -1000]) {
      const l = [shift, shift + Math.log(3)];
      expect(sampleRow(l, 0.5, T1), `shift ${shift}`).toBe(1);
      expect(sampleRow(l, 0.8, T1), `shift ${shift}`).toBe(0);
    }
  });

  it('temperature 0 and topP 1 are allowed: greedy, and the whole vocabulary', () => {
    expect(sampleRow([0, 2, 1], 0.99, { temperature: 0 })).toBe(1);
    expect(sampleRow(flat, 0.99, { ...T1, topP: 1 })).toBe(3);
  });
});

describe('a draw just below 1 stays in the nucleus', () => {
  // Logits 2, 0, −1, 0: weights e², 1, e⁻¹, 1 over Z ≈ 9.757, p ≈ 0.7573, 0.1025, 0.0377, 0.1025. Most likely first:
  // 0, 1, 3 (tie with 1, by id), 2. Top-p 0.9: 0.7573 + 0.1025 = 0.8598 < 0.9, + 0.1025 = 0.9623, so {0, 1, 3}.
  const l = [2, 0, -1, 0];
  it('u in the last few ulps below 1 picks token 3, the last kept, never token 2 outside', () => {
    // Rounding in u·kept − Σ p can leave the remainder ≥ 0 after the last kept token: that token is still the answer.
    for (let k = 1; k <= 64; k++) expect(sampleRow(l, 1 - k * 2 ** -53, { ...T1, topP: 0.9 }), `u = 1 − ${k}·2^-53`).toBe(3);
    expect(sampleRow(l, 1 - 2 ** -53, T1)).toBe(2); // without top-p the last token is 2
  });
});

describe('sampleRow refuses what it cannot sample from', () => {
  it('a u below 0 or not a number, options that are not an object, a temperature or topP that is not a number', () => {
    expect(() => sampleRow(flat, -0.1, T1)).toThrow(/^sampleRow: u must be in \[0, 1\), got -0\.1$/);
    expect(() => sampleRow(flat, -Number.MIN_VALUE)).toThrow(/u must be in \[0, 1\), got -5e-324/);
    expect(() => sampleRow(flat, Number.NaN)).toThrow(/u must be in \[0, 1\), got NaN/);
    expect(() => sampleRow(flat, 0.5, null as never)).toThrow(/^sampleRow: options must be an object, got null$/);
    expect(() => sampleRow(flat, 0.5, 1 as never)).toThrow(/^sampleRow: options must be an object, got 1$/);
    expect(() => sampleRow(flat, 0.5, { temperature: '1' as never })).toThrow(/^sampleRow: temperature must be a finite number ≥ 0, got 1$/);
    expect(() => sampleRow(flat, 0.5, { topP: '0.5' as never })).toThrow(/^sampleRow: topP must be in \(0, 1\], got 0\.5$/);
  });
});
