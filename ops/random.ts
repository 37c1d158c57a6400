// Keyed counter-based random numbers: pure functions of (key, shape). A key is a u32 tensor of shape (2,);
// bits come from Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").

import type { DType, FloatDType } from '../core/dtype.js';
import type { ElementwiseOp } from '../core/node.js';
import { broadcastShapes, DTypeError, fmt, numel, type Shape } from '../core/shape.js';
import { apply, type Tensor } from '../core/tensor.js';
import { add, cast, iota, less, mul, sqrt } from './elementwise.js';
import { scalar } from './lift.js';
import { cos, log, minimum } from './math.js';
import { concat, reshape, slice } from './movement.js';
import { tensor } from './create.js';

const ROT = [13, 15, 26, 6, 17, 29, 16, 24] as const;
const PARITY = 0x1bd11bda;

/** Threefry-2x32 on the CPU; returns both output words. */
export const threefry2x32 = (k0: number, k1: number, c0: number, c1: number): [number, number] => {
  const ks = [k0 >>> 0, k1 >>> 0, (k0 ^ k1 ^ PARITY) >>> 0];
  let x0 = (c0 + ks[0]!) >>> 0;
  let x1 = (c1 + ks[1]!) >>> 0;
  for (let i = 0; i < 5; i++) {
    for (let j = 0; j < 4; j++) {
      const r = ROT[(i % 2) * 4 + j]!;
      x0 = (x0 + x1) >>> 0;
      x1 = ((x1 << r) | (x1 >>> (32 - r))) >>> 0;
      x1 = (x1 ^ x0) >>> 0;
    }
    x0 = (x0 + ks[(i + 1) % 3]!) >>> 0;
    x1 = (x1 + ks[(i + 2) % 3]! + i + 1) >>> 0;
  }
  return [x0, x1];
};

const WGSL_THREEFRY = `fn threefry2x32(k0: u32, k1: u32, c0: u32, c1: u32) -> vec2<u32> {
  let ks = array<u32, 3>(k0, k1, k0 ^ k1 ^ 0x1bd11bdau);
  let rot = array<u32, 8>(13u, 15u, 26u, 6u, 17u, 29u, 16u, 24u);
  var x0 = c0 + ks[0];
  var x1 = c1 + ks[1];
  for (var i = 0u; i < 5u; i++) {
    for (var j = 0u; j < 4u; j++) {
      let r = rot[(i % 2u) * 4u + j];
      x0 += x1;
      x1 = (x1 << r) | (x1 >> (32u - r));
      x1 ^= x0;
    }
    x0 += ks[(i + 1u) % 3u];
    x1 += ks[(i + 2u) % 3u] + i + 1u;
  }
  return vec2<u32>(x0, x1);
}`;

/** Elementwise over (k0, k1, c0, c1) u32 → one output word of Threefry-2x32. */
export const threefryOp: ElementwiseOp<{ word: 0 | 1 }> = {
  name: 'threefry',
  kind: 'elementwise',
  infer: (src) => {
    for (const s of src) if (s.dtype !== 'u32') throw new DTypeError(`threefry: operands must be u32, got ${src.map((x) => `${x.dtype}${fmt(x.shape)}`).join(', ')}`);
    const shape = broadcastShapes('threefry', ...src.map((s) => s.shape));
    return { shape, dtype: 'u32' };
  },
  cpu: (x, _i, { word }) => threefry2x32(x[0]!, x[1]!, x[2]!, x[3]!)[word],
  wgsl: (x, _i, { word }) => `threefry2x32(${x.join(', ')}).${word ? 'y' : 'x'}`,
  wgslPrelude: WGSL_THREEFRY,
};

export type Key = Tensor<'u32'>;

/** A key from an integer seed. @example const k = key(0); const [a, b] = split(k); */
export const key = (seed: number): Key => tensor([0, seed >>> 0], { dtype: 'u32' }) as Key;

const bits = (k: Key, n: number, word: 0 | 1 = 0): Tensor => {
  if (k.dtype !== 'u32' || k.rank !== 1 || k.shape[0] !== 2) throw new DTypeError(`random: a key is a u32 tensor of shape (2,), got ${k.dtype}${fmt(k.shape)}`);
  const k0 = slice(k, [0], [1]), k1 = slice(k, [1], [2]);
  return apply(threefryOp, [k0, k1, iota(n, 'u32'), scalar(0, 'u32')], { word });
};

/** n new keys (as an array of keys) derived from `k`. */
export const split = (k: Key, n = 2): Key[] => {
  const words = concat([reshape(bits(k, n, 0), [n, 1]), reshape(bits(k, n, 1), [n, 1])], 1);
  return [...Array(n).keys()].map((i) => reshape(slice(words, [i, 0], [i + 1, 2]), [2]) as Key);
};

/** Uniform in [0, 1). */
export const uniform = (k: Key, shape: Shape, dtype: FloatDType = 'f32'): Tensor => {
  const u = mul(cast(bits(k, numel(shape)), dtype), 2 ** -32);
  // f32 rounding can carry 2^32 - x up to 2^32: clamp to the largest value below 1.
  return reshape(dtype === 'f64' ? u : minimum(u, 1 - 2 ** -24), shape);
};

/** Standard normal (Box–Muller). */
export const normal = (k: Key, shape: Shape, dtype: FloatDType = 'f32'): Tensor => {
  const [k1, k2] = split(k);
  const u1 = add(mul(uniform(k1!, shape, dtype), -1), 1); // (0, 1]
  const u2 = uniform(k2!, shape, dtype);
  return mul(sqrt(mul(log(u1), -2)), cos(mul(u2, 2 * Math.PI)));
};

/** True with probability p. */
export const bernoulli = (k: Key, p: number | Tensor, shape: Shape): Tensor<'bool'> => less(uniform(k, shape), p);

export type { DType };
