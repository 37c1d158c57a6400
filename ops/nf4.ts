// NF4 weights in the matmul (QLoRA, Dettmers et al. 2023): the code books, the packed weight leaf that `linear`
// reads, and the primitive y = x·deq(W)ᵀ whose kernel (core/wgsl/nf4.ts) dequantises W as it loads it. The
// host-side format (quantise, dequantise, files) lives in models/nf4.ts; this file never materialises W on a GPU.

import { allocStorage, isFloat, type FloatDType } from '../core/dtype.js';
import type { CustomOp, Strided } from '../core/node.js';
import { DTypeError, fmt, ShapeError, type Shape } from '../core/shape.js';
import { apply, type Tensor } from '../core/tensor.js';
import { cast, equal, iota } from './elementwise.js';
import { reshape } from './movement.js';

/**
 * bitsandbytes' NF4 code book (`get_4bit_type('nf4')`, RECIPES-FACTS §6.2), as f32: index 0…15, sorted, with
 * an exact 0 at index 7 and ±1 at the ends.
 */
export const NF4_CODE: readonly number[] = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(Math.fround);

/**
 * bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`):
 * for i in 0…6 the 2^i midpoints of linspace(0.1, 1, 2^i + 1) (f32) times 10^(i−6), with both signs, plus 0
 * and 1, sorted: 256 f32 values in [−0.99296875, 1].
 */
export const DYNAMIC_MAP: readonly number[] = (() => {
  const v: number[] = [0, 1];
  for (let i = 0; i < 7; i++) {
    const n = 2 ** i + 1;
    const b = Array.from({ length: n }, (_, j) => Math.fround(0.1 + (0.9 * j) / (n - 1)));
    for (let j = 0; j + 1 < n; j++) {
      const m = Math.fround((b[j]! + b[j + 1]!) / 2);
      const s = Math.fround(10 ** (i - 6) * m);
      v.push(s, -s);
    }
  }
  return v.sort((a, b) => a - b);
})();

/**
 * An NF4-quantised (out, in) weight as `linear` reads it: 4-bit codes of the row-major elements packed two per
 * byte (element 2k in the high nibble of byte k), bytes little-endian in u32 words; one absmax per block of
 * `blockSize` elements, either plain f32 or double-quantised (8-bit dynamic-map codes, four per word, with an f32
 * scale per 256 of them and an f32 offset added back).
 */
export interface Nf4Weight {
  readonly kind: 'nf4';
  readonly shape: readonly [number, number];
  readonly blockSize: number;
  readonly codes: Tensor; // (⌈n/8⌉,) u32
  readonly quantMap: Tensor; // (16,) f32: the code book (NF4_CODE, or a file's quant_map)
  readonly absmax?: Tensor; // (nBlocks,) f32, when not double-quantised
  readonly absmaxCodes?: Tensor; // (⌈nBlocks/4⌉,) u32: 8-bit codes
  readonly absmax2?: Tensor; // (⌈nBlocks/256⌉,) f32
  readonly offset?: Tensor; // (1,) f32
  readonly nestedMap?: Tensor; // (256,) f32: DYNAMIC_MAP, or a file's nested_quant_map
}

export interface Nf4MatmulArg {
  /** false: x (M, in) → x·Wᵀ (M, out); true: g (M, out) → g·W (M, in), the input gradient. */
  readonly transpose: boolean;
  readonly out: number;
  readonly in: number;
  readonly blockSize: number;
  readonly double: boolean;
}

const at1 = (s: Strided, i: number): number => s.data[s.view.offset + i * s.view.strides[0]!]!;

/**
 * The dequantised weight, row-major (out·in), from the op's sources after x — [codes, quantMap, absmax] or [codes,
 * quantMap, absmaxCodes, absmax2, offset, nestedMap] — in f32 steps as bitsandbytes: the CPU meaning of the format.
 */
export const dequantizeSources = (src: readonly Strided[], a: Nf4MatmulArg): Float64Array => {
  const n = a.out * a.in;
  const nBlocks = Math.ceil(n / a.blockSize);
  const [codes, map, s0, s1, s2, s3] = src as [Strided, Strided, Strided, Strided?, Strided?, Strided?];
  const scale = new Float64Array(nBlocks);
  for (let b = 0; b < nBlocks; b++) {
    if (!a.double) { scale[b] = at1(s0, b); continue; }
    const q = (at1(s0, b >> 2) >>> ((b & 3) * 8)) & 255;
    scale[b] = Math.fround(Math.fround(at1(s3!, q) * at1(s1!, b >> 8)) + at1(s2!, 0));
  }
  const w = new Float64Array(n);
  for (let e = 0; e < n; e++) {
    const word = at1(codes, e >> 3);
    const nib = (word >>> (((e >> 1) & 3) * 8 + ((e & 1) === 0 ? 4 : 0))) & 15;
    w[e] = Math.fround(at1(map, nib) * scale[Math.floor(e / a.blockSize)]!);
  }
  return w;
};

export const nf4MatmulOp: CustomOp<Nf4MatmulArg> = {
  name: 'nf4Matmul',
  kind: 'custom',
  template: 'nf4',
  infer: ([x, codes, ...stats], a) => {
    const K = a.transpose ? a.out : a.in;
    if (x!.shape.length !== 2 || x!.shape[1] !== K || !isFloat(x!.dtype)) {
      throw new ShapeError(`nf4Matmul: input must be float (M, ${K}) for an NF4 weight (${a.out}, ${a.in})${a.transpose ? ' read transposed' : ''}, got ${x!.dtype}${fmt(x!.shape)}`);
    }
    const n = a.out * a.in, nBlocks = Math.ceil(n / a.blockSize);
    const want: [string, number, string][] = [['codes', Math.ceil(n / 8), 'u32'], ['quantMap', 16, 'f32'],
      ...(a.double ? [['absmaxCodes', Math.ceil(nBlocks / 4), 'u32'], ['absmax2', Math.ceil(nBlocks / 256), 'f32'], ['offset', 1, 'f32'], ['nestedMap', 256, 'f32']] as [string, number, string][] : [['absmax', nBlocks, 'f32']] as [string, number, string][])];
    if (stats.length + 1 !== want.length) throw new ShapeError(`nf4Matmul: expected ${want.length} statistics tensors, got ${stats.length + 1}`);
    [codes!, ...stats].forEach((s, i) => {
      const [name, len, dt] = want[i]!;
      if (s.shape.length !== 1 || s.shape[0] !== len || s.dtype !== dt) throw new DTypeError(`nf4Matmul: ${name} must be ${dt}(${len},) for a weight (${a.out}, ${a.in}) in blocks of ${a.blockSize}, got ${s.dtype}${fmt(s.shape)}`);
    });
    return { shape: [x!.shape[0]!, a.transpose ? a.in : a.out], dtype: x!.dtype };
  },
  cpu: ([x, ...src], a, out) => {
    const w = dequantizeSources(src, a);
    const [M, N] = out.shape as [number, number];
    const K = a.transpose ? a.out : a.in;
    const res = allocStorage(out.dtype, M * N);
    const { offset, strides: [sm, sk] } = x!.view;
    for (let m = 0; m < M; m++) {
      for (let j = 0; j < N; j++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += x!.data[offset + m * sm! + k * sk!]! * w[a.transpose ? k * a.in + j : j * a.in + k]!;
        res[m * N + j] = acc;
      }
    }
    return res;
  },
  // Linear in x; the codes and statistics are constants (no gradient for a quantised base).
  vjp: (g, _o, [, ...rest], a) => [apply(nf4MatmulOp, [g, ...rest], { ...a, transpose: !a.transpose }), ...rest.map(() => null)],
};

/** The code book and statistics tensors of a weight in the op's source order (after the codes). */
const statsOf = (w: Nf4Weight): Tensor[] => {
  if (w.absmax) return [w.quantMap, w.absmax];
  if (!w.absmaxCodes || !w.absmax2 || !w.offset || !w.nestedMap) throw new ShapeError(`nf4: weight ${fmt(w.shape)} has neither absmax nor double-quantised statistics`);
  return [w.quantMap, w.absmaxCodes, w.absmax2, w.offset, w.nestedMap];
};

/**
 * x·deq(W)ᵀ for an NF4 weight (out, in): the kernel dequantises W on load, forward and in the input gradient.
 * @example nf4Linear(x, w) // (B, T, in), nf4 (out, in) → (B, T, out)
 */
export const nf4Linear = (x: Tensor, w: Nf4Weight): Tensor => {
  const [out, inn] = w.shape;
  if (x.shape[x.rank - 1] !== inn) throw new ShapeError(`linear: input ${fmt(x.shape)} does not match an NF4 weight ${fmt(w.shape)}`);
  const lead: Shape = x.shape.slice(0, -1);
  const x2 = reshape(x, [-1, inn]); // (M, in)
  const arg: Nf4MatmulArg = { transpose: false, out, in: inn, blockSize: w.blockSize, double: !w.absmax };
  const y = apply(nf4MatmulOp, [x2, w.codes, ...statsOf(w)], arg); // (M, out)
  return reshape(y, [...lead, out]); // (…, out)
};

/**
 * The dequantised weight as a dense (out, in) tensor, by the input-gradient kernel applied to the identity (I·W):
 * for merging and checks, never for training.
 * @example nf4Dense(w) // nf4 (out, in) → f32 (out, in)
 */
export const nf4Dense = (w: Nf4Weight, dtype: FloatDType = 'f32'): Tensor => {
  const [out, inn] = w.shape;
  const eye = cast(equal(reshape(iota(out), [out, 1]), reshape(iota(out), [1, out])), dtype); // (out, out)
  const arg: Nf4MatmulArg = { transpose: true, out, in: inn, blockSize: w.blockSize, double: !w.absmax };
  return apply(nf4MatmulOp, [eye, w.codes, ...statsOf(w)], arg); // (out, in)
};
