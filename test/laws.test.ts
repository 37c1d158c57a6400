// Algebraic laws of the op set on the interpreter: movement round-trips, linearity, broadcasting equivalences.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, setBackend, type Tensor } from '../index.js';
import { broadcastPair, fillValues, shapeArb } from './optable.js';
import './setup.js';

setBackend('cpu');
const rand = (shape: readonly number[], seed: number): Tensor =>
  C.tensor(Float64Array.from(fillValues(shape.reduce((a, b) => a * b, 1), 'any', seed)), { shape, dtype: 'f64' });
const same = async (a: Tensor, b: Tensor, tol = 1e-12) => {
  expect(a.shape).toEqual(b.shape);
  const [x, y] = [await data(a), await data(b)];
  x.forEach((v, i) => expect(Math.abs(v - y[i]!)).toBeLessThanOrEqual(tol * (1 + Math.abs(v))));
};
const seed = fc.integer({ min: 1, max: 1e9 });

describe('laws', () => {
  it('reshape round-trips', () => fc.assert(fc.asyncProperty(shapeArb(1, 4), seed, async (s, k) => {
    const x = rand(s, k);
    await same(C.reshape(C.reshape(x, [-1]), s), x);
    await same(C.reshape(C.transpose(C.reshape(x, [-1, s[s.length - 1]!])), [-1]), C.reshape(C.transpose(C.reshape(x, [-1, s[s.length - 1]!])), [-1]));
  })));

  it('permute by p then by p⁻¹ is the identity; transpose twice too', () => fc.assert(fc.asyncProperty(
    shapeArb(1, 4).chain((s) => fc.tuple(fc.constant(s), fc.shuffledSubarray([...s.keys()], { minLength: s.length, maxLength: s.length }))), seed,
    async ([s, p], k) => {
      const x = rand(s, k);
      const inv = p.map((_, i) => p.indexOf(i));
      await same(C.permute(C.permute(x, p), inv), x);
      await same(C.transpose(C.transpose(x)), x);
    })));

  it('reshape after permute reads the permuted order', async () => {
    const x = C.tensor([[1, 2, 3], [4, 5, 6]]);
    expect(await C.toArray(C.reshape(C.transpose(x), [6]))).toEqual([1, 4, 2, 5, 3, 6]);
    expect(await C.toArray(C.reshape(C.slice(C.pad(x, [[1, 0], [0, 1]]), [0, 1], [3, 4]), [9]))).toEqual([0, 0, 0, 2, 3, 0, 5, 6, 0]);
  });

  it('sum is linear: sum(a·x + y) = a·sum(x) + sum(y)', () => fc.assert(fc.asyncProperty(shapeArb(0, 3), seed, fc.double({ min: -3, max: 3, noNaN: true }), async (s, k, a) => {
    const x = rand(s, k), y = rand(s, k + 1);
    await same(C.sum(C.add(C.mul(x, a), y)), C.add(C.mul(C.sum(x), a), C.sum(y)), 1e-10);
  })));

  it('sum over all axes = sum over each axis in turn', () => fc.assert(fc.asyncProperty(shapeArb(1, 3), seed, async (s, k) => {
    const x = rand(s, k);
    let y: Tensor = x;
    for (let a = s.length - 1; a >= 0; a--) y = C.sum(y, a);
    await same(C.sum(x), y, 1e-10);
  })));

  it('broadcasting an operand explicitly changes nothing', () => fc.assert(fc.asyncProperty(broadcastPair, seed, async ([sa, sb], k) => {
    const a = rand(sa, k), b = rand(sb, k + 1);
    const out = C.add(a, b).shape;
    await same(C.mul(a, b), C.mul(C.broadcastTo(a, out), C.broadcastTo(b, out)));
  })));

  it('concat then slice recovers the parts; stack then index too', () => fc.assert(fc.asyncProperty(shapeArb(1, 3), seed, async (s, k) => {
    const x = rand(s, k), y = rand(s, k + 2);
    const c = C.concat([x, y], 0);
    await same(C.slice(c, [s[0]!], [2 * s[0]!]), y);
    await same(C.squeeze(C.slice(C.stack([x, y], 0), [0], [1]), 0), x);
  })));

  it('softmax rows sum to one; logSoftmax = log(softmax)', () => fc.assert(fc.asyncProperty(shapeArb(1, 3), seed, async (s, k) => {
    const x = C.mul(rand(s, k), 10);
    await same(C.sum(C.softmax(x), -1), C.ones(s.slice(0, -1), 'f64'), 1e-12);
    await same(C.logSoftmax(x), C.log(C.softmax(x)), 1e-9);
  })));

  it('matmul agrees with an explicit broadcast-multiply-sum', () => fc.assert(fc.asyncProperty(fc.tuple(shapeArb(0, 2), fc.nat(3), fc.nat(3), fc.nat(3)), seed, async ([b, m, kk, n], k) => {
    const A = rand([...b, m + 1, kk + 1], k), B = rand([...b, kk + 1, n + 1], k + 1);
    const viaSum = C.sum(C.mul(C.expandDims(A, -1), C.expandDims(B, -3)), -2);
    await same(C.matmul(A, B), viaSum, 1e-10);
  })));

  it('argmax picks the first maximum; oneHot inverts it', async () => {
    const x = C.tensor([[1, 5, 5, 2], [7, 0, 7, 7]]);
    const a = C.argmax(x);
    expect(await C.toArray(a)).toEqual([1, 0]);
    expect(await C.toArray(C.argmax(C.oneHot(a, 4)))).toEqual([1, 0]);
  });

  it('random numbers are pure functions of (key, shape), and roughly right', async () => {
    const k = C.key(7);
    const [k1, k2] = C.split(k);
    expect(await C.toArray(C.uniform(k1!, [4]))).toEqual(await C.toArray(C.uniform(k1!, [4])));
    expect(await C.toArray(C.uniform(k1!, [4]))).not.toEqual(await C.toArray(C.uniform(k2!, [4])));
    const u = await data(C.uniform(k, [20000]));
    const n = await data(C.normal(k2!, [20000]));
    const mean = (a: ArrayLike<number>) => Array.from(a).reduce((s, v) => s + v, 0) / a.length;
    expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u)).toBeLessThan(1);
    expect(Math.abs(mean(u) - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(mean(n))).toBeLessThan(0.03);
    expect(Math.abs(mean(Array.from(n, (v) => v * v)) - 1)).toBeLessThan(0.05);
    const b = await data(C.bernoulli(k1!, 0.25, [20000]));
    expect(Math.abs(mean(b) - 0.25)).toBeLessThan(0.015);
  });

  it('Threefry-2x32 matches the Random123 known-answer vectors', async () => {
    const { threefry2x32 } = await import('../ops/random.js');
    // Known-answer tests from the Random123 distribution (kat_vectors, threefry2x32_20).
    expect(threefry2x32(0, 0, 0, 0).map((v) => v.toString(16))).toEqual(['6b200159', '99ba4efe']);
    expect(threefry2x32(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff).map((v) => v.toString(16))).toEqual(['1cb996fc', 'bb002be7']);
    expect(threefry2x32(0x13198a2e, 0x03707344, 0x243f6a88, 0x85a308d3).map((v) => v.toString(16))).toEqual(['c4923a9c', '483df7a0']);
  });
});
