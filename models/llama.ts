// The Llama-2 decoder as a pure function of a parameter tree: forward (with an optional KV cache), the parameter
// shapes a config implies, and random initialisation. No file formats here (models/load.ts) and no sampling loop
// (models/generate.ts). Weights are stored as in Hugging Face checkpoints, (out_features, in_features).

import { isFloat, type FloatDType } from '../core/dtype.js';
import { fmt, sameShape, ShapeError, type Shape } from '../core/shape.js';
import type { Tensor } from '../core/tensor.js';
import { full, ones, zeros } from '../ops/create.js';
import { add, iota, maximum, mul, sub, where } from '../ops/elementwise.js';
import { pad, permute, reshape, slice } from '../ops/movement.js';
import { writeAt } from '../ops/update.js';
import { causalAttention, embedding, linear, linears, rmsNorm, rope, ropeTable, swiglu, weightShape, type Weight } from '../ops/nn.js';
import { normal, split, type Key } from '../ops/random.js';
import type { LlamaConfig } from './config.js';

export type { LlamaConfig } from './config.js';

// Names mirror llama2.c / Meta's checkpoints (Hugging Face names live only in load.ts).
/** One decoder block; `W` is the projections' weight type: plain tensors, or any `Weight` that `linear` reads (LoRA,
 * NF4; models/lora.ts, models/nf4.ts). */
export interface LlamaLayer<W extends Weight = Tensor> {
  readonly attnNorm: Tensor; // (dim,)
  readonly wq: W; // (nHeads·headDim, dim)
  readonly wk: W; // (nKvHeads·headDim, dim)
  readonly wv: W; // (nKvHeads·headDim, dim)
  readonly wo: W; // (dim, nHeads·headDim)
  readonly ffnNorm: Tensor; // (dim,)
  readonly w1: W; // (hiddenDim, dim): gate
  readonly w2: W; // (dim, hiddenDim): down
  readonly w3: W; // (hiddenDim, dim): up
}

export interface LlamaParams<W extends Weight = Tensor> {
  readonly tokEmb: Tensor; // (vocabSize, dim)
  readonly layers: readonly LlamaLayer<W>[];
  readonly norm: Tensor; // (dim,)
  /** (vocabSize, dim); absent when `cfg.tieEmbeddings` (the output projection is tokEmb). */
  readonly out?: Tensor;
}

export type LayerKey = keyof LlamaLayer;
export const layerKeys: readonly LayerKey[] = ['attnNorm', 'wq', 'wk', 'wv', 'wo', 'ffnNorm', 'w1', 'w2', 'w3'];

/** The shape of each layer weight under a config. */
export const layerShapes = (c: LlamaConfig): Record<LayerKey, Shape> => ({
  attnNorm: [c.dim], wq: [c.nHeads * c.headDim, c.dim], wk: [c.nKvHeads * c.headDim, c.dim], wv: [c.nKvHeads * c.headDim, c.dim],
  wo: [c.dim, c.nHeads * c.headDim], ffnNorm: [c.dim], w1: [c.hiddenDim, c.dim], w2: [c.dim, c.hiddenDim], w3: [c.hiddenDim, c.dim],
});

/** The shape of each non-layer weight; `out` only when the embeddings are not tied. */
export const topShapes = (c: LlamaConfig): { tokEmb: Shape; norm: Shape; out?: Shape } => ({
  tokEmb: [c.vocabSize, c.dim], norm: [c.dim], ...(c.tieEmbeddings ? {} : { out: [c.vocabSize, c.dim] }),
});

/** Throws a ShapeError naming the first parameter whose shape the config does not imply. */
export const checkParams = (c: LlamaConfig, p: LlamaParams<Weight>): void => {
  const check = (name: string, t: Weight | undefined, s: Shape) => {
    if (!t) throw new ShapeError(`llama: parameter ${name} is missing (expected ${fmt(s)} from config)`);
    if (!sameShape(weightShape(t), s)) throw new ShapeError(`llama: parameter ${name}: expected ${fmt(s)} from config, got ${fmt(weightShape(t))}`);
  };
  const top = topShapes(c);
  check('tokEmb', p.tokEmb, top.tokEmb);
  check('norm', p.norm, top.norm);
  if (top.out) check('out', p.out, top.out);
  if (p.layers.length !== c.nLayers) throw new ShapeError(`llama: ${p.layers.length} layers, config says ${c.nLayers}`);
  const ls = layerShapes(c);
  p.layers.forEach((l, i) => layerKeys.forEach((k) => check(`layers[${i}].${k}`, l[k], ls[k])));
};

export interface InitOpts {
  readonly dtype?: FloatDType;
  /** Standard deviation of the normal init of matrices (Hugging Face's initializer_range). Default 0.02. */
  readonly std?: number;
}

/**
 * Random parameters for tests and benchmarks: matrices ~ N(0, std²), norm weights 1.
 * @example const params = initParams(cfg, key(0)); forward(cfg, params, tokens)
 */
export const initParams = (c: LlamaConfig, k: Key, opts: InitOpts = {}): LlamaParams => {
  const { dtype = 'f32', std = 0.02 } = opts;
  const keys = split(k, c.nLayers + 2);
  const matrix = (kk: Key, s: Shape) => mul(normal(kk, s, dtype), std);
  const ls = layerShapes(c);
  const layers = keys.slice(2).map((lk) => {
    const [kq, kk, kv, ko, k1, k2, k3] = split(lk, 7) as [Key, Key, Key, Key, Key, Key, Key];
    return {
      attnNorm: ones(ls.attnNorm, dtype), wq: matrix(kq, ls.wq), wk: matrix(kk, ls.wk), wv: matrix(kv, ls.wv), wo: matrix(ko, ls.wo),
      ffnNorm: ones(ls.ffnNorm, dtype), w1: matrix(k1, ls.w1), w2: matrix(k2, ls.w2), w3: matrix(k3, ls.w3),
    };
  });
  const top = topShapes(c);
  return {
    tokEmb: matrix(keys[0]!, top.tokEmb), layers, norm: ones(top.norm, dtype),
    ...(top.out ? { out: matrix(keys[1]!, top.out) } : {}),
  };
};

/** Keys and values of one layer, head-major so that a decode step writes one contiguous slot per head. */
export interface KvLayer {
  readonly k: Tensor; // (B, nKvHeads, maxT, headDim)
  readonly v: Tensor; // (B, nKvHeads, maxT, headDim)
}

export interface KvCache {
  readonly layers: readonly KvLayer[];
  /** Slots written so far: the next forward writes slots length … length+T−1. A number is baked into the graph; an
   * i32 scalar tensor is read at run time, so one compiled decode step serves every position. */
  readonly length: number | Tensor;
  /** (B,) i32 first real slot of each row (rows left-padded to a common prompt length); absent = 0. */
  readonly start?: Tensor;
}

/**
 * An empty cache of `maxT` slots for a batch.
 * @example let cache = emptyCache(cfg, 1, 64); ({ logits, cache } = forward(cfg, params, prompt, { cache }));
 */
export const emptyCache = (c: LlamaConfig, batch: number, maxT: number, opts: { dtype?: FloatDType; start?: Tensor } = {}): KvCache => {
  const z = zeros([batch, c.nKvHeads, maxT, c.headDim], opts.dtype ?? 'f32'); // (B, nKvHeads, maxT, headDim)
  return { layers: Array.from({ length: c.nLayers }, () => ({ k: z, v: z })), length: 0, ...(opts.start ? { start: opts.start } : {}) };
};

/**
 * The cache update, kept in one small function so a backend can make it in place: slots offset … offset+T−1 of
 * `cache` take `x`, everything else is kept (a functional select of a padded copy).
 * @example cacheWrite(layer.k, kNew, 7) // (B, nKv, maxT, hd), (B, nKv, 1, hd) → (B, nKv, maxT, hd)
 */
export const cacheWrite = (cache: Tensor, x: Tensor, offset: number | Tensor): Tensor => {
  if (typeof offset !== 'number') return writeAt(cache, x, offset, 2); // in place when the cache is donated
  const [maxT, T] = [cache.shape[2]!, x.shape[2]!];
  if (offset < 0 || offset + T > maxT) throw new ShapeError(`cacheWrite: slots ${offset}…${offset + T - 1} do not fit a cache of ${maxT} slots ${fmt(cache.shape)}`);
  const slots: [number, number][] = [[0, 0], [0, 0], [offset, maxT - offset - T], [0, 0]];
  const inWindow = pad(full([1, 1, T, 1], 1, 'bool'), slots); // (1, 1, maxT, 1)
  return where(inWindow, pad(x, slots), cache); // (B, nKv, maxT, hd)
};

interface LayerIn {
  readonly x: Tensor; // (B, T, dim)
  readonly rot: Tensor; // (…, T, 1, headDim): ropeTable of the positions
  readonly kv?: { readonly layer: KvLayer; readonly offset: number | Tensor; readonly start?: Tensor };
}

const block = (c: LlamaConfig, p: LlamaLayer<Weight>, { x, rot, kv }: LayerIn): { x: Tensor; kv?: KvLayer } => {
  const [B, T] = x.shape as [number, number];
  const h = rmsNorm(x, p.attnNorm, c.normEps); // (B, T, dim)
  const [H, Hkv, D] = [c.nHeads, c.nKvHeads, c.headDim];
  // q and k heads side by side, rotated by one kernel (with a cache) or by attention as it loads them (without);
  // attention reads q, k and v in place.
  const [qkp, vp] = linears(h, [[p.wq, p.wk], p.wv]) as [Tensor, Tensor]; // one matmul: (B, T, ·) each
  const qk = kv ? rope(reshape(qkp, [B, T, H + Hkv, D]), rot) : reshape(qkp, [B, T, H + Hkv, D]); // (B, T, nHeads + nKvHeads, headDim)
  const q = slice(qk, [0, 0, 0, 0], [B, T, H, D]); // (B, T, nHeads, headDim)
  let k = slice(qk, [0, 0, H, 0], [B, T, H + Hkv, D]); // (B, T, nKvHeads, headDim)
  let v = reshape(vp, [B, T, Hkv, D]); // (B, T, nKvHeads, headDim)
  let written: KvLayer | undefined;
  if (kv) {
    written = {
      k: cacheWrite(kv.layer.k, permute(k, [0, 2, 1, 3]), kv.offset), // (B, nKvHeads, maxT, headDim)
      v: cacheWrite(kv.layer.v, permute(v, [0, 2, 1, 3]), kv.offset), // (B, nKvHeads, maxT, headDim)
    };
    // A run-time offset attends over every slot (later ones are masked as the future); a static one slices.
    const S = typeof kv.offset === 'number' ? kv.offset + T : written.k.shape[2]!;
    k = permute(slice(written.k, [0, 0, 0, 0], [B, c.nKvHeads, S, c.headDim]), [0, 2, 1, 3]); // (B, S, nKvHeads, headDim)
    v = permute(slice(written.v, [0, 0, 0, 0], [B, c.nKvHeads, S, c.headDim]), [0, 2, 1, 3]); // (B, S, nKvHeads, headDim)
  }
  const a = causalAttention(q, k, v, kv ? { offset: kv.offset, ...(kv.start ? { start: kv.start } : {}) } : { rope: rot }); // (B, T, nHeads, headDim)
  const x1 = add(x, linear(reshape(a, [B, T, c.nHeads * c.headDim]), p.wo)); // (B, T, dim)
  const x2 = add(x1, swiglu(rmsNorm(x1, p.ffnNorm, c.normEps), p.w1, p.w3, p.w2)); // (B, T, dim)
  return written ? { x: x2, kv: written } : { x: x2 };
};

export interface ForwardOpts {
  /** (T,) or (B, T) i32 RoPE positions. Default: offset … offset+T−1 (less each row's cache `start`). */
  readonly positions?: Tensor;
  /** Return the final normed hidden states (B, T, dim) instead of logits (to apply the LM head in chunks). */
  readonly hidden?: boolean;
}
export interface CachedForwardOpts extends ForwardOpts {
  readonly cache: KvCache;
}

/**
 * Logits for every position of a batch of token ids. With a cache, the tokens continue it (slots cache.length …)
 * and the updated cache comes back alongside: prefill is a cached forward of the prompt, decode one of T = 1.
 * @example
 * const logits = forward(cfg, params, tokens); // (B, T) i32 → (B, T, vocabSize)
 * const { logits: next, cache } = forward(cfg, params, last, { cache: prev });
 */
export function forward(c: LlamaConfig, params: LlamaParams<Weight>, tokens: Tensor, opts?: ForwardOpts): Tensor;
export function forward(c: LlamaConfig, params: LlamaParams<Weight>, tokens: Tensor, opts: CachedForwardOpts): { logits: Tensor; cache: KvCache };
export function forward(c: LlamaConfig, params: LlamaParams<Weight>, tokens: Tensor, opts: ForwardOpts & { cache?: KvCache } = {}): Tensor | { logits: Tensor; cache: KvCache } {
  if (tokens.rank !== 2 || (tokens.dtype !== 'i32' && tokens.dtype !== 'u32')) throw new ShapeError(`llama: tokens must be (B, T) i32, got ${tokens.dtype}${fmt(tokens.shape)}`);
  checkParams(c, params);
  const [B, T] = tokens.shape as [number, number];
  const { cache } = opts;
  const offset = cache?.length ?? 0;
  if (cache && (cache.layers.length !== c.nLayers || cache.layers[0]!.k.shape[0] !== B)) {
    throw new ShapeError(`llama: cache has ${cache.layers.length} layers of ${fmt(cache.layers[0]?.k.shape ?? [])}, expected ${c.nLayers} with batch ${B}`);
  }
  const slots = add(iota(T), offset); // (T,)
  const positions = opts.positions ?? (cache?.start ? maximum(sub(reshape(slots, [1, T]), reshape(cache.start, [B, 1])), 0) : slots); // (T,) or (B, T)
  const rot = ropeTable(positions, c.headDim, c.ropeTheta, isFloat(params.tokEmb.dtype) ? params.tokEmb.dtype : 'f32'); // (…, T, 1, headDim), shared by the layers
  let x = embedding(params.tokEmb, tokens); // (B, T, dim)
  const layers: KvLayer[] = [];
  params.layers.forEach((p, i) => {
    const kv = cache ? { layer: cache.layers[i]!, offset, ...(cache.start ? { start: cache.start } : {}) } : undefined;
    const r = block(c, p, kv ? { x, rot, kv } : { x, rot });
    x = r.x; // (B, T, dim)
    if (r.kv) layers.push(r.kv);
  });
  const normed = rmsNorm(x, params.norm, c.normEps); // (B, T, dim)
  const logits = opts.hidden ? normed : linear(normed, c.tieEmbeddings ? params.tokEmb : params.out!); // (B, T, vocabSize)
  return cache ? { logits, cache: { ...cache, layers, length: typeof offset === 'number' ? offset + T : add(offset, T) } } : logits;
}
