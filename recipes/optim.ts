// Optimizers as pure `{ init, update }` over parameter trees (optax-style) and gradient clipping by global norm.
// Everything here builds lazy graph, so a whole update fuses into the jitted training step (recipes/step.ts); no
// host reads, no host numbers that change between steps (the step count lives in the state, lr is a tensor).

import { isFloat } from '../core/dtype.js';
import { isTensor, type Tensor } from '../core/tensor.js';
import { flatten, mapTree, unflatten } from '../core/tree.js';
import { full } from '../ops/create.js';
import { add, cast, exp2, mul, recip, sqrt, sub } from '../ops/elementwise.js';
import { minimum, square } from '../ops/math.js';
import { sum } from '../ops/reduce.js';

/** A learning rate: a constant, or a run-time scalar tensor (a jit number argument, so a schedule never recompiles). */
export type Lr = number | Tensor;

/** An optimizer over trees of the same structure as the parameters it was initialised with. */
export interface Optimizer<S> {
  init(params: unknown): S;
  /** New parameters and state; `lr` overrides the optimizer's own learning rate for this update. */
  update<P>(grads: P, state: S, params: P, lr?: Lr): [P, S];
}

/** AdamW state: the update count (a scalar tensor, 0 before the first update) and the two moment trees. */
export interface AdamState {
  readonly count: Tensor; // ()
  readonly mu: unknown;
  readonly nu: unknown;
}

export interface AdamwOpts {
  readonly lr: Lr;
  readonly b1?: number;
  readonly b2?: number;
  readonly eps?: number;
  readonly weightDecay?: number;
  /**
   * Which leaves decay (path as `layers.0.wq`, record keys in tree order). Default: matrices (rank ≥ 2) decay,
   * vectors (norm weights, biases) do not, the intent of open-instruct's `no_decay = ["bias", "layer_norm.weight"]`
   * groups (finetune.py; note their substring match misses Llama's `input_layernorm.weight`, so OI decays Llama's
   * norms; with Tulu 2's weight decay 0 the difference never shows).
   */
  readonly decay?: (path: string, leaf: Tensor) => boolean;
}

/**
 * Dotted paths of a tree's tensor leaves, in flatten's order (record keys sorted, arrays in order).
 * @example leafPaths({ layers: [{ wq }], norm }) // ['layers.0.wq', 'norm']
 */
export const leafPaths = (tree: unknown): string[] => {
  const out: string[] = [];
  const walk = (x: unknown, path: string): void => {
    if (isTensor(x)) out.push(path);
    else if (Array.isArray(x)) x.forEach((v, i) => walk(v, path ? `${path}.${i}` : String(i)));
    else if (typeof x === 'object' && x !== null) {
      for (const k of Object.keys(x).sort()) walk((x as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
    }
  };
  walk(tree, '');
  return out;
};

const asDtype = (x: Lr, t: Tensor): Lr => (typeof x === 'number' ? x : cast(x, t.dtype));

/**
 * AdamW with PyTorch's semantics (torch/optim/adamw.py; RECIPES-FACTS §7), per leaf at update t = 1, 2, …:
 * θ ← θ − lr·λ·θ (decoupled decay, first); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 * θ ← θ − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)  (ε outside the square root, as torch's implementation form).
 * The bias corrections come from the count in the state, so one compiled step serves every t.
 * @example
 * const opt = adamw({ lr: 1e-3, weightDecay: 0.01 });
 * let state = opt.init(params);
 * [params, state] = opt.update(grads, state, params);
 */
export const adamw = (opts: AdamwOpts): Optimizer<AdamState> => {
  const { b1 = 0.9, b2 = 0.999, eps = 1e-8, weightDecay = 0 } = opts;
  // torch.optim.AdamW's ranges (NaN is outside every one): b1 = 1 would divide by a zero bias correction.
  const ranges: readonly (readonly [string, number, number, string])[] = [['lr', typeof opts.lr === 'number' ? opts.lr : 0, Infinity, 'lr ≥ 0'],
    ['b1', b1, 1, '0 ≤ b1 < 1'], ['b2', b2, 1, '0 ≤ b2 < 1'], ['eps', eps, Infinity, 'eps ≥ 0'], ['weightDecay', weightDecay, Infinity, 'weightDecay ≥ 0']];
  const bad = ranges.find(([, v, below]) => !(v >= 0 && v < below));
  if (bad) throw new RangeError(`adamw: ${bad[0]} must satisfy ${bad[3]}, got ${bad[1]}`);
  const decays = opts.decay ?? ((_p: string, t: Tensor) => t.rank >= 2);
  return {
    init: (params) => {
      const first = flatten(params).leaves[0];
      const dtype = first && isFloat(first.dtype) ? first.dtype : 'f32';
      return { count: full([], 0, dtype), mu: mapTree(params, (p) => full(p.shape, 0, p.dtype)), nu: mapTree(params, (p) => full(p.shape, 0, p.dtype)) };
    },
    update: (grads, state, params, lr = opts.lr) => {
      const t = add(state.count, 1); // ()
      // 1 − β^t as 1 − 2^(t·log2 β): t is a run-time value, never a constant in the kernel.
      const bc1 = sub(1, exp2(mul(t, Math.log2(b1)))); // ()
      const bc2 = sub(1, exp2(mul(t, Math.log2(b2)))); // ()
      const step = mul(recip(bc1), asDtype(lr, bc1)); // () lr / (1 − β1^t)
      const rootBc2 = recip(sqrt(bc2)); // () 1 / √(1 − β2^t)
      const p = flatten(params), g = flatten(grads), m = flatten(state.mu), v = flatten(state.nu);
      if (g.leaves.length !== p.leaves.length || m.leaves.length !== p.leaves.length) {
        throw new TypeError(`adamw: ${p.leaves.length} parameters, ${g.leaves.length} gradients, ${m.leaves.length} moments (trees must match)`);
      }
      const paths = leafPaths(params);
      const P: Tensor[] = [], M: Tensor[] = [], V: Tensor[] = [];
      p.leaves.forEach((w, i) => {
        const gi = g.leaves[i]!;
        const lri = asDtype(lr, w);
        const decayed = weightDecay !== 0 && decays(paths[i]!, w) ? mul(w, typeof lri === 'number' ? 1 - lri * weightDecay : sub(1, mul(lri, weightDecay))) : w; // θ(1 − lr·λ)
        const mi = add(mul(m.leaves[i]!, b1), mul(gi, 1 - b1)); // like w
        const vi = add(mul(v.leaves[i]!, b2), mul(square(gi), 1 - b2)); // like w
        const denom = add(mul(sqrt(vi), cast(rootBc2, w.dtype)), eps); // like w
        P.push(sub(decayed, mul(mul(mi, recip(denom)), cast(step, w.dtype)))); // like w
        M.push(mi);
        V.push(vi);
      });
      return [unflatten<never>(p.def, P), { count: t, mu: unflatten(m.def, M), nu: unflatten(v.def, V) }];
    },
  };
};

/**
 * The global L2 norm of a tree: √(Σ_leaves Σ g²), as torch's clip_grad_norm_ computes `total` (the norm of the
 * per-leaf norms). Accumulated in f32 at least.
 * @example globalNorm({ a: tensor([3]), b: tensor([4]) }) // 5
 */
export const globalNorm = (tree: unknown): Tensor => {
  const ls = flatten(tree).leaves;
  if (ls.length === 0) return full([], 0, 'f32');
  const parts = ls.map((g) => sum(square(g))); // () each
  return sqrt(parts.reduce((a, b) => add(a, cast(b, a.dtype)))); // ()
};

/**
 * Clipping by global norm with torch.nn.utils.clip_grad_norm_'s coefficient: g ← g · min(maxNorm / (total + 1e-6), 1);
 * returns the clipped tree and `total` (the norm before clipping).
 * @example const { grads, norm } = clipByGlobalNorm(g, 1.0);
 */
export const clipByGlobalNorm = <T>(grads: T, maxNorm: number): { grads: T; norm: Tensor } => {
  if (!(maxNorm > 0 && maxNorm < Infinity)) throw new RangeError(`clipByGlobalNorm: maxNorm must be a positive finite number, got ${maxNorm}`);
  const norm = globalNorm(grads); // ()
  const coef = minimum(mul(recip(add(norm, 1e-6)), maxNorm), 1); // ()
  return { grads: mapTree(grads, (g) => mul(g, cast(coef, g.dtype))), norm };
};
