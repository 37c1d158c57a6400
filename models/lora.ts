// LoRA (Hu et al. 2021) as pure functions of parameter trees: adapters for chosen projections, the adapted
// parameters that the unchanged `forward` reads (ops/nn.ts `linear` computes x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ), merge
// into dense weights, and disable. Files (PEFT's layout) live in models/peft.ts.

import { allocStorage, isFloat, type FloatDType } from '../core/dtype.js';
import { fmt, sameShape, ShapeError } from '../core/shape.js';
import { isTensor, type Tensor } from '../core/tensor.js';
import { fromStorage } from '../ops/create.js';
import { add, mul, sub } from '../ops/elementwise.js';
import { matmul } from '../ops/matmul.js';
import { nf4Dense } from '../ops/nf4.js';
import { weightShape, type LoraWeight, type Weight } from '../ops/nn.js';
import { split, uniform, type Key } from '../ops/random.js';
import type { LlamaLayer, LlamaParams } from './llama.js';

/** The projections an adapter may sit on: q k v o, gate (w1), down (w2), up (w3). */
export type LoraTarget = 'wq' | 'wk' | 'wv' | 'wo' | 'w1' | 'w2' | 'w3';
export const LORA_TARGETS: readonly LoraTarget[] = ['wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'];

export interface LoraOpts {
  readonly r: number;
  readonly alpha: number;
  /** Dropout rate on the adapter input while training. Default 0. */
  readonly dropout?: number;
  /** Default: all seven (Tulu 2). */
  readonly targets?: readonly LoraTarget[];
  /** Draws A. */
  readonly key: Key;
  /** Scale α/√r (rank-stabilised LoRA) instead of α/r. */
  readonly rslora?: boolean;
}

/** One adapter: A (r, in), B (out, r), as PEFT's `lora_A.weight` and `lora_B.weight`. */
export interface LoraPair { readonly A: Tensor; readonly B: Tensor }

/** The trainable tree: hyperparameters (carried as constants) and one record of adapters per layer. */
export interface LoraAdapters {
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly rslora: boolean;
  readonly targets: readonly LoraTarget[];
  readonly layers: readonly Partial<Record<LoraTarget, LoraPair>>[];
}

/** PEFT's scaling: α/r, or α/√r with rsLoRA (RECIPES-FACTS §6.1). */
export const loraScale = (a: Pick<LoraAdapters, 'r' | 'alpha' | 'rslora'>): number => (a.rslora ? a.alpha / Math.sqrt(a.r) : a.alpha / a.r);

const checkOpts = (o: Omit<LoraOpts, 'key'>): void => {
  if (!Number.isInteger(o.r) || o.r <= 0) throw new RangeError(`lora: r must be a positive integer, got ${o.r}`);
  if (!Number.isFinite(o.alpha)) throw new RangeError(`lora: alpha must be a finite number, got ${o.alpha}`);
  const p = o.dropout ?? 0;
  if (!(p >= 0 && p < 1)) throw new RangeError(`lora: dropout must be in [0, 1), got ${p}`);
  for (const t of o.targets ?? []) if (!LORA_TARGETS.includes(t)) throw new RangeError(`lora: unknown target '${t}' (expected one of ${LORA_TARGETS.join(' ')})`);
};

/**
 * Fresh adapters initialised as PEFT does (`reset_lora_parameters`): A ~ U(±1/√in) (kaiming-uniform with a = √5),
 * B = 0, so the adapted model starts as the base.
 * @example const adapters = lora(params, { r: 64, alpha: 16, dropout: 0.1, key: key(0) })
 */
export const lora = (params: LlamaParams<Weight>, opts: LoraOpts): LoraAdapters => {
  checkOpts(opts);
  const targets = [...(opts.targets ?? LORA_TARGETS)];
  const dtype: FloatDType = isFloat(params.tokEmb.dtype) ? params.tokEmb.dtype : 'f32';
  const keys = split(opts.key, Math.max(1, params.layers.length * targets.length));
  const layers = params.layers.map((l, i) => Object.fromEntries(targets.map((t, j) => {
    const [out, inn] = weightShape(l[t]) as [number, number];
    const u = uniform(keys[i * targets.length + j]!, [opts.r, inn], dtype); // (r, in) in [0, 1)
    const A = mul(sub(mul(u, 2), 1), 1 / Math.sqrt(inn)); // (r, in)
    const B = fromStorage(allocStorage(dtype, out * opts.r), [out, opts.r], dtype); // (out, r) zeros
    return [t, { A, B }];
  })) as Partial<Record<LoraTarget, LoraPair>>);
  return { r: opts.r, alpha: opts.alpha, dropout: opts.dropout ?? 0, rslora: opts.rslora ?? false, targets, layers };
};

/** Throws a ShapeError naming the first adapter that does not fit the base (layer count, shape, target). */
export const checkAdapters = (params: LlamaParams<Weight>, a: LoraAdapters): void => {
  if (a.layers.length !== params.layers.length) throw new ShapeError(`lora: adapters have ${a.layers.length} layers, the base has ${params.layers.length}`);
  a.layers.forEach((l, i) => {
    for (const [t, pair] of Object.entries(l) as [string, LoraPair][]) {
      if (!LORA_TARGETS.includes(t as LoraTarget)) throw new ShapeError(`lora: layers[${i}].${t}: unknown target (expected one of ${LORA_TARGETS.join(' ')})`);
      const [out, inn] = weightShape(params.layers[i]![t as LoraTarget]) as [number, number];
      if (!sameShape(pair.A.shape, [a.r, inn])) throw new ShapeError(`lora: layers[${i}].${t}.A is ${fmt(pair.A.shape)}, expected ${fmt([a.r, inn])} for a weight ${fmt([out, inn])}`);
      if (!sameShape(pair.B.shape, [out, a.r])) throw new ShapeError(`lora: layers[${i}].${t}.B is ${fmt(pair.B.shape)}, expected ${fmt([out, a.r])} for a weight ${fmt([out, inn])}`);
    }
  });
};

export interface WithLoraOpts {
  /** Draws each adapter's dropout mask (one key per layer and target); absent: no dropout (evaluation). */
  readonly dropoutKey?: Key;
}

/**
 * Parameters whose targeted projections carry the adapters, for the unchanged `forward`. Train with the adapters
 * as the differentiated argument and the base as a constant: only the adapters get gradients.
 * @example const logits = forward(cfg, withLora(base, adapters), tokens)
 * @example const [loss, g] = valueAndGrad((a: LoraAdapters) => sftLoss(cfg, withLora(base, a, { dropoutKey }), t, l))(adapters)
 */
export const withLora = (base: LlamaParams<Weight>, adapters: LoraAdapters, opts: WithLoraOpts = {}): LlamaParams<Weight> => {
  checkAdapters(base, adapters);
  const scale = loraScale(adapters);
  const drop = adapters.dropout > 0 && opts.dropoutKey;
  const keys = drop ? split(opts.dropoutKey!, Math.max(1, base.layers.length * LORA_TARGETS.length)) : [];
  const layers = base.layers.map((l, i) => {
    const out: Record<string, Weight | Tensor> = { ...l };
    LORA_TARGETS.forEach((t, j) => {
      const pair = adapters.layers[i]![t];
      if (!pair) return;
      const w: LoraWeight = { kind: 'lora', base: l[t], A: pair.A, B: pair.B, scale, dropout: drop ? adapters.dropout : 0, ...(drop ? { key: keys[i * LORA_TARGETS.length + j]! } : {}) };
      out[t] = w;
    });
    return out as unknown as LlamaLayer<Weight>;
  });
  return { ...base, layers };
};

/** The weight as a dense tensor: an NF4 weight is dequantised (as open-instruct's `merge_lora.py --qlora`). */
const dense = (w: Weight): Tensor => (isTensor(w) ? w : w.kind === 'nf4' ? nf4Dense(w) : add(dense(w.base), mul(matmul(w.B, w.A), w.scale)));

/**
 * Dense parameters W + s·B·A for every adapted projection (NF4 bases dequantised first): a plain model.
 * @example saveLlama('merged', cfg, merge(base, adapters))()
 */
export const merge = (params: LlamaParams<Weight>, adapters: LoraAdapters): LlamaParams => {
  const adapted = withLora(params, adapters);
  return {
    ...params,
    layers: adapted.layers.map((l) => ({ ...l, wq: dense(l.wq), wk: dense(l.wk), wv: dense(l.wv), wo: dense(l.wo), w1: dense(l.w1), w2: dense(l.w2), w3: dense(l.w3) })),
  };
};

/**
 * The base alone: every LoRA weight replaced by the weight under it (DPO's reference model).
 * @example const ref = forward(cfg, disable(withLora(base, adapters)), tokens)
 */
export const disable = <W extends Weight>(params: LlamaParams<W>): LlamaParams<Weight> => {
  const strip = (w: Weight): Weight => (!isTensor(w) && w.kind === 'lora' ? strip(w.base) : w);
  return {
    ...params,
    layers: params.layers.map((l) => ({ ...l, wq: strip(l.wq), wk: strip(l.wk), wv: strip(l.wv), wo: strip(l.wo), w1: strip(l.w1), w2: strip(l.w2), w3: strip(l.w3) })),
  };
};
