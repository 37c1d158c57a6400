// Neural-network compositions used by Llama: linear, rmsNorm, rope, causal attention, SwiGLU, cross-entropy,
// embedding. Pure functions of other ops (the scheduler fuses them), except attention: the fused primitive of
// ops/attention.ts, so the (T, S) scores are never stored.

import { DTypeError, fmt, ShapeError, type Shape } from '../core/shape.js';
import { isFloat, type FloatDType } from '../core/dtype.js';
import { apply, isTensor, Tensor } from '../core/tensor.js';
import { attentionOp, ropeOnLoadRefusal } from './attention.js';
import { add, cast, equal, iota, logicalNot, maximum, mul, sin, sub, where, exp2 } from './elementwise.js';
import { gather } from './gather.js';
import { onesLike, zeros } from './create.js';
import { nf4Linear, type Nf4Weight } from './nf4.js';
import { bernoulli, type Key } from './random.js';
import { matmul } from './matmul.js';
import { div, rsqrt, silu, square } from './math.js';
import { concat, expandDims, reshape, slice, swapAxes } from './movement.js';
import { logsumexp, mean, sum } from './reduce.js';

/** Rows of input from which linears concatenates its weights (a decode step of a small batch does not). */
const CONCAT_MIN_ROWS = 64;

const isInt = (t: Tensor) => t.dtype === 'i32' || t.dtype === 'u32';

/**
 * A projection weight carrying a low-rank adapter (LoRA, Hu et al. 2021; PEFT `lora/layer.py`): `linear` computes
 * x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ, never the dense W + scale·B·A. Dropout (rate `dropout`, drawn from `key`) acts on
 * the adapter's input only, as PEFT's `lora_dropout`; without a key the adapter branch is not dropped (evaluation).
 */
export interface LoraWeight {
  readonly kind: 'lora';
  readonly base: Weight; // (out, in)
  readonly A: Tensor; // (r, in)
  readonly B: Tensor; // (out, r)
  readonly scale: number;
  readonly dropout: number;
  readonly key?: Tensor;
}

/** What `linear` reads as W: a plain (out, in) tensor, a LoRA-adapted weight, or an NF4-quantised one. */
export type Weight = Tensor | LoraWeight | Nf4Weight;

/** The (out, in) shape of a weight of any kind. */
export const weightShape = (w: Weight): Shape => (isTensor(w) ? w.shape : w.kind === 'lora' ? weightShape(w.base) : w.shape);

/** x with each element kept with probability 1 − p and scaled by 1/(1 − p) (inverted dropout), keyed. */
const dropoutKeyed = (x: Tensor, p: number, key: Tensor | undefined): Tensor => {
  if (p <= 0 || !key) return x;
  if (p >= 1) throw new RangeError(`linear: LoRA dropout must be in [0, 1), got ${p}`);
  return where(bernoulli(key as Key, 1 - p, x.shape), mul(x, 1 / (1 - p)), 0); // (…, in)
};

/** The adapter branch of a LoRA weight: scale·(dropout(x)·Aᵀ)·Bᵀ, the scale applied on the r-wide middle. */
const loraDelta = (x: Tensor, w: LoraWeight): Tensor => {
  const [r, inA] = w.A.shape as [number, number];
  const [outB, rB] = w.B.shape as [number, number];
  const [out, inW] = weightShape(w.base) as [number, number];
  if (w.A.rank !== 2 || w.B.rank !== 2 || r !== rB || inA !== inW || outB !== out) {
    throw new ShapeError(`linear: LoRA A ${fmt(w.A.shape)} and B ${fmt(w.B.shape)} must be (r, in) and (out, r) for a weight ${fmt([out, inW])}`);
  }
  return linear(mul(linear(dropoutKeyed(x, w.dropout, w.key), w.A), w.scale), w.B); // (…, out)
};

/**
 * x·Wᵀ with W stored as in PyTorch/Hugging Face, (out_features, in_features). The transpose is a view. W may also
 * be a LoRA weight (base plus adapter branch) or an NF4 one (dequantised inside the matmul, ops/nf4.ts).
 * @example linear(x, wq) // (B, T, dim), (nHeads·headDim, dim) → (B, T, nHeads·headDim)
 */
export const linear = (x: Tensor, w: Weight): Tensor => {
  if (!isTensor(w)) return w.kind === 'lora' ? add(linear(x, w.base), loraDelta(x, w)) : nf4Linear(x, w);
  if (w.rank !== 2) throw new ShapeError(`linear: weight must be (out, in), got ${fmt(w.shape)}`);
  return matmul(x, swapAxes(w));
};

/**
 * x·Wᵢᵀ for several weights that share the input, as one matmul against their row-wise concatenation, split after
 * (views): one wider matmul, and in the backward pass one weight gradient and one input gradient instead of n.
 * With many rows the matmul reads the concatenation on load (a prologue); with few (decoding) it would be copied
 * on every call, so those inputs keep separate matmuls. An entry that is a list of weights gives one output, x
 * times their concatenation (q and k for one RoPE): with few rows, the small outputs are concatenated instead.
 * LoRA weights over plain bases share the concatenated base matmul and add their adapter branches; any other
 * weight that is not a plain tensor (NF4) takes separate matmuls.
 * @example const [q, k, v] = linears(h, [wq, wk, wv]) // (B, T, dim) → (B, T, out_i) each
 * @example const [qk, v] = linears(h, [[wq, wk], wv]) // qk: (B, T, out_q + out_k)
 */
export const linears = (x: Tensor, ws: readonly (Weight | readonly Weight[])[]): Tensor[] => {
  const groups = ws.map((w) => (isWeightList(w) ? w : [w])); // concat of one tensor is that tensor
  const bases = groups.map((g) => g.map((w) => (!isTensor(w) && w.kind === 'lora' ? w.base : w)));
  if (!bases.every((g) => g.every(isTensor))) return groups.map((g) => concat(g.map((w) => linear(x, w)), -1));
  const plain = linearsPlain(x, bases as Tensor[][]);
  return groups.map((g, i) => {
    if (g.every(isTensor)) return plain[i]!;
    const deltas = g.map((w) => (isTensor(w) ? zeros([...x.shape.slice(0, -1), w.shape[0]!], x.dtype) : loraDelta(x, w as LoraWeight))); // (…, out_j)
    return add(plain[i]!, concat(deltas, -1)); // (…, Σ out_j)
  });
};

const isWeightList = (w: Weight | readonly Weight[]): w is readonly Weight[] => Array.isArray(w);

const linearsPlain = (x: Tensor, groups: readonly (readonly Tensor[])[]): Tensor[] => {
  if (x.size / x.shape[x.rank - 1]! < CONCAT_MIN_ROWS) return groups.map((g) => concat(g.map((w) => linear(x, w)), -1));
  const y = linear(x, concat(groups.map((g) => concat(g, 0)), 0)); // (…, Σ out_i)
  let at = 0;
  return groups.map((g) => {
    const lo = at;
    at += g.reduce((n, w) => n + w.shape[0]!, 0);
    return slice(y, [...Array<number>(y.rank - 1).fill(0), lo], [...y.shape.slice(0, -1), at]); // the whole of y: y
  });
};

/**
 * Root-mean-square normalisation over the last axis (Zhang & Sennrich 2019): x / √(mean(x²) + eps) · weight.
 * @example rmsNorm(x, attnNorm, 1e-5) // (B, T, dim), (dim,) → (B, T, dim)
 */
export const rmsNorm = (x: Tensor, weight: Tensor, eps: number): Tensor => {
  const d = x.shape[x.rank - 1];
  if (weight.rank !== 1 || weight.shape[0] !== d) throw new ShapeError(`rmsNorm: weight ${fmt(weight.shape)} does not match the last axis of ${fmt(x.shape)}`);
  const r = rsqrt(add(mean(square(x), -1, { keepDims: true }), eps)); // (…, 1)
  return mul(mul(x, r), weight); // (…, d)
};

/** cos from sin without the rounding of x + π/2 at large angles: cos x = 1 − 2 sin²(x/2). */
const cosAccurate = (x: Tensor): Tensor => sub(1, mul(square(sin(mul(x, 0.5))), 2));

/**
 * RoPE's cos and sin for integer `positions` of shape (T,) or (B, T), as one table (…, T, 1, headDim): cos in the
 * first half, sin in the second. Angles are position · θ^(−2i/headDim). Build it once per forward and hand it to
 * `rope` in every layer: the scheduler stores it once, instead of every layer recomputing sines per element.
 * @example const table = ropeTable(iota(T), 64, 10000) // (T, 1, 64)
 */
export const ropeTable = (positions: Tensor, headDim: number, theta: number, dtype: FloatDType = 'f32'): Tensor => {
  if (!isInt(positions)) throw new DTypeError(`ropeTable: positions must be i32 or u32, got ${positions.dtype}${fmt(positions.shape)}`);
  if (positions.rank < 1 || positions.rank > 2) throw new ShapeError(`ropeTable: positions must be (T,) or (B, T), got ${fmt(positions.shape)}`);
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) throw new ShapeError(`ropeTable: head dimension must be even, got ${headDim}`);
  const half = headDim / 2;
  const invFreq = exp2(mul(cast(iota(half), dtype), (-2 / headDim) * Math.log2(theta))); // (half,)
  const angle = expandDims(mul(expandDims(cast(positions, dtype), -1), invFreq), -2); // (…, T, 1, half)
  return concat([cosAccurate(angle), sin(angle)], -1); // (…, T, 1, headDim)
};

/**
 * Rotary position embedding (Su et al. 2021) in the Hugging Face `rotate_half` layout: the first and second halves
 * of each head are the two members of each rotated pair. Takes a `ropeTable`, or integer `positions` of shape
 * (T,) or (B, T) and θ to build one (so generation can offset them).
 * @example rope(q, iota(T), 10000) // (B, T, H, headDim) → (B, T, H, headDim)
 * @example rope(q, ropeTable(iota(T), headDim, 10000)) // the same, with a table shared by every layer
 */
export const rope = (x: Tensor, positionsOrTable: Tensor, theta?: number): Tensor => {
  if (x.rank < 3) throw new ShapeError(`rope: x must be (…, T, H, headDim), got ${fmt(x.shape)}`);
  const [T, D] = [x.shape[x.rank - 3]!, x.shape[x.rank - 1]!];
  if (D % 2 !== 0) throw new ShapeError(`rope: head dimension must be even, got ${fmt(x.shape)}`);
  let table = positionsOrTable;
  if (isInt(table)) {
    if (table.rank < 1 || table.shape[table.rank - 1] !== T) throw new ShapeError(`rope: positions ${fmt(table.shape)} do not match T = ${T} of ${fmt(x.shape)}`);
    if (theta === undefined) throw new RangeError('rope: integer positions need theta (or pass a ropeTable)');
    if (!isFloat(x.dtype)) throw new DTypeError(`rope: x must be a float tensor, got ${x.dtype}${fmt(x.shape)}`);
    table = ropeTable(table, D, theta, x.dtype);
  }
  const tr = table.rank;
  if (tr < 3 || table.shape[tr - 1] !== D || table.shape[tr - 2] !== 1 || table.shape[tr - 3] !== T || table.dtype !== x.dtype) {
    throw new ShapeError(`rope: table ${table.dtype}${fmt(table.shape)} must be ${x.dtype} (…, T, 1, headDim) for x ${x.dtype}${fmt(x.shape)}`);
  }
  const half = D / 2;
  const c = slice(table, Array<number>(tr).fill(0), [...table.shape.slice(0, -1), half]); // (…, T, 1, half)
  const s = slice(table, [...Array<number>(tr - 1).fill(0), half]); // (…, T, 1, half)
  const lo = slice(x, Array<number>(x.rank).fill(0), [...x.shape.slice(0, -1), half]); // (…, T, H, half)
  const hi = slice(x, [...Array<number>(x.rank - 1).fill(0), half]); // (…, T, H, half)
  return concat([sub(mul(lo, c), mul(hi, s)), add(mul(hi, c), mul(lo, s))], -1); // (…, T, H, D)
};

export interface AttentionOpts {
  /** Cache slot of the first query (queries occupy slots offset … offset+T−1). Default 0. */
  readonly offset?: number | Tensor;
  /** (B,) i32: first valid key slot of each row (left padding in batched generation). Default 0. */
  readonly start?: Tensor;
  /**
   * A `ropeTable` to rotate q and k by first, query t and key t alike. Self-attention from slot 0 (S = T, no
   * offset or start) rotates them on load inside the attention kernels, so the rotated heads are never stored,
   * forward or backward; otherwise `rope` is applied to each.
   */
  readonly rope?: Tensor;
}

/**
 * Scaled dot-product attention with a causal mask (Vaswani et al. 2017) and grouped-query heads (Ainslie et al.
 * 2023): query head h reads kv head ⌊h / (H/Hkv)⌋. Query slot p attends key slots s with start ≤ s ≤ p (a padding
 * query, p < start, attends only itself); key slot s is index s of k and v. One fused primitive (ops/attention.ts):
 * the (T, S) scores are never stored, forward or backward.
 * @example causalAttention(q, k, v) // (B, T, H, D), (B, S, Hkv, D), (B, S, Hkv, D) → (B, T, H, D)
 */
export const causalAttention = (q: Tensor, k: Tensor, v: Tensor, opts: AttentionOpts = {}): Tensor => {
  const bad = () => new ShapeError(`causalAttention: q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${fmt(v.shape)} must be (B, T, H, D), (B, S, Hkv, D), (B, S, Hkv, D) with Hkv dividing H`);
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) throw bad();
  const [B, T, H, D] = q.shape as [number, number, number, number];
  const Hkv = k.shape[2]!;
  if (k.shape[0] !== B || k.shape[3] !== D || H % Hkv !== 0 || v.shape.some((d, i) => d !== k.shape[i])) throw bad();
  const { offset = 0, start, rope: table } = opts;
  if (table) {
    const g = { B, T, H, D, S: k.shape[1]!, Hkv };
    const refused = ropeOnLoadRefusal(g, { kv: headMajor(k) ? 'bhsd' : 'bshd', offset: typeof offset === 'number' ? offset : null, start: !!start }, table, q.dtype);
    if (refused) return causalAttention(rope(q, table), rope(k, table), v, { offset, ...(start ? { start } : {}) });
  }
  if (typeof offset !== 'number' && (offset.dtype !== 'i32' || offset.rank !== 0)) throw new DTypeError(`causalAttention: a tensor offset must be an i32 scalar, got ${offset.dtype}${fmt(offset.shape)}`);
  if (start && (start.rank !== 1 || start.shape[0] !== B || start.dtype !== 'i32')) throw new ShapeError(`causalAttention: start must be (B,) = (${B},) i32, got ${start.dtype}${fmt(start.shape)}`);
  // Keys and values that are head-major underneath (a KV cache) are read in that layout, not copied.
  const [kh, vh] = [headMajor(k), headMajor(v)];
  const kv = kh && vh ? { kv: 'bhsd' as const, k: kh, v: vh } : { kv: 'bshd' as const, k, v };
  const extra = [...(typeof offset === 'number' ? [] : [offset]), ...(start ? [start] : []), ...(table ? [table] : [])];
  const arg = { part: 'out', kv: kv.kv, offset: typeof offset === 'number' ? offset : null, start: !!start, ...(table ? { rope: true } : {}) } as const;
  const packed = apply(attentionOp, [q, kv.k, kv.v, ...extra], arg);
  return reshape(slice(packed, [0], [B * T * H * D]), [B, T, H, D]); // O, without the saved logsumexps
};

/** x's source when x is exactly its (B, Hkv, S, D) source seen as (B, S, Hkv, D). */
const headMajor = (x: Tensor): Tensor | null => {
  const { op, arg, src } = x.node;
  return op.name === 'permute' && (arg as { perm: readonly number[] }).perm.join() === '0,2,1,3' ? new Tensor(src[0]!) : null;
};

/**
 * The SwiGLU feed-forward block (Shazeer 2020): W2 · (silu(W1·x) ⊙ W3·x), weights as (out, in).
 * @example swiglu(x, w1, w3, w2) // (B, T, dim), (hidden, dim), (hidden, dim), (dim, hidden) → (B, T, dim)
 */
export const swiglu = (x: Tensor, w1: Weight, w3: Weight, w2: Weight): Tensor => {
  const [gate, up] = linears(x, [w1, w3]) as [Tensor, Tensor]; // (…, hidden) each
  return linear(mul(silu(gate), up), w2); // (…, dim)
};

export interface CrossEntropyOpts { readonly ignoreIndex?: number }

/**
 * Mean token cross-entropy −log softmax(logits)[target] over targets ≠ ignoreIndex (default −100); 0 when no target
 * counts. The target logit is picked by comparing against iota (a one-hot select), so ignored (or out-of-range) targets never index
 * memory: an out-of-range target other than ignoreIndex picks nothing and costs the full logsumexp.
 * @example crossEntropy(logits, labels) // (B, T, V), (B, T) i32 → ()
 */
export const crossEntropy = (logits: Tensor, targets: Tensor, opts: CrossEntropyOpts = {}): Tensor => {
  const V = logits.shape[logits.rank - 1]!;
  if (!isInt(targets)) throw new DTypeError(`crossEntropy: targets must be i32 or u32, got ${targets.dtype}${fmt(targets.shape)}`);
  if (logits.rank !== targets.rank + 1 || targets.shape.some((d, i) => d !== logits.shape[i])) {
    throw new ShapeError(`crossEntropy: logits ${fmt(logits.shape)} must be targets ${fmt(targets.shape)} plus a class axis`);
  }
  const hit = equal(expandDims(targets, -1), iota(V, targets.dtype)); // (…, V)
  const picked = sum(where(hit, logits, 0), -1); // (…)
  // An ignore index the targets' dtype cannot hold (−100 for u32 targets) ignores nothing.
  const ignore = opts.ignoreIndex ?? -100;
  const counted = targets.dtype === 'u32' && ignore < 0 ? onesLike(picked) : cast(logicalNot(equal(targets, ignore)), logits.dtype); // (…)
  const nll = mul(sub(logsumexp(logits, -1), picked), counted); // (…)
  return div(sum(nll), maximum(sum(counted), 1)); // ()
};

/**
 * Rows of an embedding table picked by token ids (a gather).
 * @example embedding(tokEmb, tokens) // (V, dim), (B, T) i32 → (B, T, dim)
 */
export const embedding = (table: Tensor, ids: Tensor): Tensor => gather(table, ids);
