// QLoRA's NF4 format on the host, bitsandbytes-exact (RECIPES-FACTS §6.2): quantise a weight (row-major blocks
// with an f32 absmax each, nearest code of the NF4 book, two codes per byte, element 2k in the high nibble;
// double quantisation of the absmaxes), dequantise, and the packed leaf that `linear` reads on the GPU.

import { data } from '../core/backend.js';
import { numel, ShapeError, type Shape } from '../core/shape.js';
import { isTensor, type Tensor } from '../core/tensor.js';
import { fromStorage } from '../ops/create.js';
import { DYNAMIC_MAP, NF4_CODE, type Nf4Weight } from '../ops/nf4.js';
import type { Weight } from '../ops/nn.js';
import type { LlamaLayer, LlamaParams } from './llama.js';

export { DYNAMIC_MAP, NF4_CODE, type Nf4Weight } from '../ops/nf4.js';

/** The absmaxes quantised again (bitsandbytes `compress_statistics`): 8-bit codes, an f32 scale per 256, an offset. */
export interface Nf4Nested {
  readonly codes: Uint8Array; // (nBlocks,)
  readonly absmax: Float32Array; // (⌈nBlocks/blockSize⌉,)
  readonly offset: number; // f32: the mean of the absmaxes
  readonly blockSize: number; // 256
  readonly quantMap: Float32Array; // (256,) the signed dynamic map
}

/** A weight in NF4: codes packed two per byte, element 2k in the high nibble; absmax plain or nested. */
export interface Nf4Quantized {
  readonly shape: Shape;
  readonly blockSize: number;
  readonly packed: Uint8Array; // (⌈n/2⌉,)
  readonly quantMap: Float32Array; // (16,) the NF4 code book
  readonly absmax?: Float32Array; // (nBlocks,) without double quantisation
  readonly nested?: Nf4Nested;
}

export interface QuantizeOpts {
  /** Elements per absmax block, bitsandbytes' choices 32…4096. Default 64. */
  readonly blockSize?: number;
  /** Quantise the absmaxes again (8-bit, blocks of 256). Default true, as QLoRA. */
  readonly doubleQuant?: boolean;
}

const BLOCK_SIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096];
const NESTED_BLOCK = 256;

/** Midpoints between neighbouring codes, in f32 as bitsandbytes computes them ((code[:-1] + code[1:]) / 2). */
const midpoints = (code: readonly number[]): Float32Array => Float32Array.from(code.slice(1), (c, i) => Math.fround((code[i]! + c) / 2));
const NF4_MIDS = midpoints(NF4_CODE);
const DYN_MIDS = midpoints(DYNAMIC_MAP);

/**
 * The code index of a scaled value as `torch.bucketize(v, mids)` (right=False): the number of midpoints strictly
 * below v, so a value exactly on a midpoint takes the lower code.
 */
const bucket = (v: number, mids: Float32Array): number => {
  let lo = 0, hi = mids.length;
  while (lo < hi) { const m = (lo + hi) >> 1; if (mids[m]! < v) lo = m + 1; else hi = m; }
  return lo;
};

/** Blockwise absmax quantisation onto a sorted code book: one index per element, one f32 absmax per block. */
const blockwise = (x: ArrayLike<number>, blockSize: number, mids: Float32Array): { idx: Uint8Array; absmax: Float32Array } => {
  const n = x.length, nb = Math.ceil(n / blockSize);
  const idx = new Uint8Array(n), absmax = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    const [lo, hi] = [b * blockSize, Math.min(n, (b + 1) * blockSize)]; // a short last block keeps its own absmax
    let m = 0;
    for (let e = lo; e < hi; e++) m = Math.max(m, Math.abs(x[e]!));
    absmax[b] = m;
    for (let e = lo; e < hi; e++) {
      const s = m === 0 ? 0 : Math.min(1, Math.max(-1, Math.fround(x[e]! / m))); // clamp(x / absmax, −1, 1) in f32
      idx[e] = bucket(s, mids);
    }
  }
  return { idx, absmax };
};

/**
 * Quantises a row-major weight to NF4 as bitsandbytes does (`quantize_4bit(quant_type='nf4')`, with
 * `compress_statistics` for doubleQuant).
 * @example const q = quantizeNf4(await data(w), w.shape); dequantizeNf4(q) // ≈ w, |error| ≤ 0.152·absmax per block
 */
export const quantizeNf4 = (w: ArrayLike<number>, shape: Shape, opts: QuantizeOpts = {}): Nf4Quantized => {
  const { blockSize = 64, doubleQuant = true } = opts;
  if (!BLOCK_SIZES.includes(blockSize)) throw new RangeError(`quantizeNf4: blockSize must be one of ${BLOCK_SIZES.join(', ')}, got ${blockSize}`);
  if (numel(shape) !== w.length) throw new ShapeError(`quantizeNf4: ${w.length} values for shape (${shape.join(', ')})`);
  const x = Float32Array.from(w);
  const { idx, absmax } = blockwise(x, blockSize, NF4_MIDS);
  const packed = new Uint8Array(Math.ceil(x.length / 2));
  for (let e = 0; e < x.length; e++) packed[e >> 1] = packed[e >> 1]! | ((e & 1) === 0 ? idx[e]! << 4 : idx[e]!); // element 2k high
  const base = { shape: [...shape], blockSize, packed, quantMap: Float32Array.from(NF4_CODE) };
  if (!doubleQuant) return { ...base, absmax };
  let sum = 0;
  for (const a of absmax) sum += a;
  const offset = Math.fround(sum / absmax.length);
  const centred = absmax.map((a) => Math.fround(a - offset));
  const q2 = blockwise(centred, NESTED_BLOCK, DYN_MIDS);
  return { ...base, nested: { codes: q2.idx, absmax: q2.absmax, offset, blockSize: NESTED_BLOCK, quantMap: Float32Array.from(DYNAMIC_MAP) } };
};

/** The f32 absmax of every block (dequantising the nested statistics: code·scale + offset, in f32 steps). */
export const absmaxOf = (q: Nf4Quantized): Float32Array => {
  if (q.absmax) return q.absmax;
  const n = q.nested!;
  return Float32Array.from(n.codes, (c, b) => Math.fround(Math.fround(n.quantMap[c]! * n.absmax[Math.floor(b / n.blockSize)]!) + n.offset));
};

/**
 * The weight back in f32: code[index]·absmax per element (bitsandbytes `dequantize_4bit`).
 * @example dequantizeNf4(quantizeNf4(values, [out, inn])) // Float32Array of out·inn
 */
export const dequantizeNf4 = (q: Nf4Quantized): Float32Array => {
  const n = numel(q.shape), absmax = absmaxOf(q);
  return Float32Array.from({ length: n }, (_, e) => {
    const byte = q.packed[e >> 1]!;
    return Math.fround(q.quantMap[(e & 1) === 0 ? byte >> 4 : byte & 15]! * absmax[Math.floor(e / q.blockSize)]!);
  });
};

/** Bytes as little-endian u32 words (zero-padded): how the kernel reads codes. */
const words = (b: Uint8Array): Uint32Array => {
  const w = new Uint32Array(Math.ceil(b.length / 4));
  for (let i = 0; i < b.length; i++) w[i >> 2] = (w[i >> 2]! | (b[i]! << ((i & 3) * 8))) >>> 0;
  return w;
};

/**
 * The leaf `linear` reads: codes as u32 words and the statistics as small tensors (about 0.516 byte per parameter
 * with double quantisation). Only 2-D weights (out, in).
 * @example const w = nf4Weight(quantizeNf4(values, [out, inn])); linear(x, w)
 */
export const nf4Weight = (q: Nf4Quantized, shared: { readonly quantMap?: Tensor; readonly nestedMap?: Tensor } = {}): Nf4Weight => {
  if (q.shape.length !== 2) throw new ShapeError(`nf4Weight: a projection weight is (out, in), got (${q.shape.join(', ')})`);
  const f32 = (a: Float32Array) => fromStorage(a, [a.length], 'f32');
  const base = {
    kind: 'nf4' as const, shape: [q.shape[0]!, q.shape[1]!] as [number, number], blockSize: q.blockSize,
    codes: fromStorage(words(q.packed), [Math.ceil(q.packed.length / 4)], 'u32'), quantMap: shared.quantMap ?? f32(q.quantMap),
  };
  if (!q.nested) return { ...base, absmax: f32(q.absmax!) };
  const n = q.nested;
  if (n.blockSize !== NESTED_BLOCK) throw new ShapeError(`nf4Weight: nested blocks of ${n.blockSize}; the kernel reads blocks of ${NESTED_BLOCK}`);
  return {
    ...base, absmaxCodes: fromStorage(words(n.codes), [Math.ceil(n.codes.length / 4)], 'u32'), absmax2: f32(n.absmax),
    offset: f32(Float32Array.of(n.offset)), nestedMap: shared.nestedMap ?? f32(n.quantMap),
  };
};

/**
 * QLoRA's base: every projection quantised to NF4 (embeddings, norms and the LM head stay as they are, as in
 * Hugging Face). Reads each weight to the host once.
 * @example const base = await quantizeBase(params); const adapters = lora(base, { r: 64, alpha: 16, key: key(0) })
 */
export const quantizeBase = async (params: LlamaParams<Weight>, opts: QuantizeOpts = {}): Promise<LlamaParams<Weight>> => {
  // One copy of the two code books serves every weight.
  const shared = { quantMap: fromStorage(Float32Array.from(NF4_CODE), [16], 'f32'), nestedMap: fromStorage(Float32Array.from(DYNAMIC_MAP), [256], 'f32') };
  const q = async (w: Weight): Promise<Weight> => {
    if (!isTensor(w)) return w;
    return nf4Weight(quantizeNf4(await data(w), w.shape, opts), shared);
  };
  const layers: LlamaLayer<Weight>[] = [];
  for (const l of params.layers) {
    layers.push({ ...l, wq: await q(l.wq), wk: await q(l.wk), wv: await q(l.wv), wo: await q(l.wo), w1: await q(l.w1), w2: await q(l.w2), w3: await q(l.w3) });
  }
  return { ...params, layers };
};

/**
 * Bytes held per base projection parameter (the seven projections of every layer, under any LoRA): the GPU
 * buffers where they are realised there, else 4 bytes per stored element. Full f32 weights give 4; NF4 with
 * double quantisation ≈ 0.52 (tensors shared between weights, the code books, count once).
 * @example projectionBytes(await quantizeBase(params)).bytesPerParam // ≈ 0.52
 */
export const projectionBytes = (params: LlamaParams<Weight>): { params: number; bytes: number; bytesPerParam: number } => {
  let n = 0, bytes = 0;
  const seen = new Set<unknown>(); // shared code books count once
  const add = (t: Tensor | undefined) => { if (t && !seen.has(t.node)) { seen.add(t.node); bytes += t.node.gpu?.bytes ?? t.size * 4; } };
  const count = (w: Weight): void => {
    if (isTensor(w)) { n += w.size; add(w); return; }
    if (w.kind === 'lora') { count(w.base); return; }
    n += w.shape[0] * w.shape[1];
    [w.codes, w.quantMap, w.absmax, w.absmaxCodes, w.absmax2, w.offset, w.nestedMap].forEach(add);
  };
  for (const l of params.layers) for (const k of ['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'] as const) count(l[k]);
  return { params: n, bytes, bytesPerParam: bytes / Math.max(1, n) };
};
