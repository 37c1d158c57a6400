// Pointwise ops: mostly compositions (no kernel, no gradient rule of their own; the scheduler fuses them), and
// the exported face of the primitives whose stability or derivative a composition cannot give (sigmoid, tanh,
// softplus, erf, pow).

import { apply, type Tensor } from '../core/tensor.js';
import { isFloat } from '../core/dtype.js';
import { DTypeError, fmt } from '../core/shape.js';
import { add, erfOp, exp2, log2, mul, maximum, neg, powOp, recip, reluOp, sigmoidOp, softplusOp, sqrt, sub, tanhOp, where, less, sin } from './elementwise.js';
import { broadcastTo } from './movement.js';
import { lift, scalar, type TensorLike } from './lift.js';

/** x itself when its dtype is a float: ops that scale by a fraction first say so, not the scaling. */
const float = (op: string, x: Tensor): Tensor => {
  if (!isFloat(x.dtype)) throw new DTypeError(`${op}: needs a float dtype, got ${x.dtype}${fmt(x.shape)}`);
  return x;
};

const LOG2E = Math.LOG2E;
const LN2 = Math.LN2;

export const div = (a: TensorLike, b: TensorLike): Tensor => { const [x, y] = lift('div', [a, b]); return mul(x!, recip(y!)); };
export const exp = (x: Tensor): Tensor => exp2(mul(float('exp', x), LOG2E));
export const log = (x: Tensor): Tensor => mul(log2(x), LN2);
export const rsqrt = (x: Tensor): Tensor => recip(sqrt(x));
export const square = (x: Tensor): Tensor => mul(x, x);
/** cos x = 1 − 2 sin²(x/2): exact in f32 where sin(x + π/2) would round the shifted angle. */
export const cos = (x: Tensor): Tensor => { const s = sin(mul(float('cos', x), 0.5)); return sub(1, mul(mul(s, s), 2)); };
/** Exponents taken by repeated multiplication (values exact to rounding and equal on every backend, gradient
 * p·x^(p−1) finite everywhere, 0 at x = 0 for p ≥ 2). */
const MAX_MUL_EXPONENT = 16;
/**
 * x^p with numpy's meaning: negative bases with an integral exponent keep their sign (pow(−2, 3) = −8), a
 * fractional exponent of a negative base is NaN, x^0 = 1. A known small integer exponent (0…16, a number) is
 * repeated multiplication; otherwise the `pow` primitive. Gradients as JAX: ∂x = p·x^(p−1), ∂p = log(x)·x^p.
 * @example pow(tensor([-2, 3]), 3) // [-8, 27]
 */
export const pow = (x: TensorLike, p: TensorLike): Tensor => {
  const [a, b] = lift('pow', [x, p]);
  if (typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= MAX_MUL_EXPONENT) {
    if (p === 0) return broadcastTo(scalar(1, a!.dtype), a!.shape);
    // Binary powers: x^13 = x^8·x^4·x.
    let [acc, sq, k] = [null as Tensor | null, a!, p];
    for (;;) {
      if (k & 1) acc = acc ? mul(acc, sq) : sq;
      k >>= 1;
      if (!k) return acc!;
      sq = mul(sq, sq);
    }
  }
  return apply(powOp, [a!, b!]);
};
/** |x|. Gradient at 0 is +1, JAX's convention (lax.abs: select(x ≥ 0, g, −g)); PyTorch gives sign(0) = 0. */
export const abs = (x: Tensor): Tensor => where(less(x, 0), neg(x), x);
/** Elementwise minimum; at ties the gradient is split evenly (as `maximum`, and as JAX's lax.min). */
export const minimum = (a: TensorLike, b: TensorLike): Tensor => { const [x, y] = lift('minimum', [a, b]); return neg(maximum(neg(x!), neg(y!))); };
/** x clamped to [lo, hi], as minimum(maximum(x, lo), hi): at a bound (x = lo or x = hi) the gradient is split
 * evenly between x and the bound, as in JAX's jnp.clip (built the same way); PyTorch's clamp gives x all of it. */
export const clamp = (x: Tensor, lo: TensorLike, hi: TensorLike): Tensor => minimum(maximum(x, lo), hi);
/** max(x, 0); gradient 0 at x = 0 (as JAX's jax.nn.relu and PyTorch). */
export const relu = (x: Tensor): Tensor => apply(reluOp, [x]);
/** Logistic σ(x) = 1/(1 + e⁻ˣ): a primitive, stable for every x; its gradient σ(1 − σ) is 0 (not NaN) when saturated.
 * @example sigmoid(tensor([-100, 0, 100])) // [0, 0.5, 1] */
export const sigmoid = (x: Tensor): Tensor => apply(sigmoidOp, [x]);
/** tanh: a primitive whose gradient 1 − tanh² is 0 (not NaN) when saturated. @example tanh(tensor([-50, 0])) // [-1, 0] */
export const tanh = (x: Tensor): Tensor => apply(tanhOp, [x]);
/** The error function (a primitive, within a few f32 ulps on WebGPU). @example erf(tensor([0, 1])) // [0, 0.8427008] */
export const erf = (x: Tensor): Tensor => apply(erfOp, [x]);
export const silu = (x: Tensor): Tensor => mul(x, sigmoid(x));
export interface GeluOpts {
  /** true (the default, as JAX's jax.nn.gelu and camelid until now): the tanh approximation; false: the exact
   * erf form, PyTorch's default (torch.nn.functional.gelu with approximate='none'). */
  readonly approximate?: boolean;
}
/**
 * GELU (Hendrycks & Gimpel). Default: the tanh approximation 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))); with
 * `{ approximate: false }` the exact x·Φ(x) = 0.5x(1 + erf(x/√2)).
 * @example gelu(tensor([1]), { approximate: false }) // [0.8413447]
 */
export const gelu = (x: Tensor, opts: GeluOpts = {}): Tensor =>
  float('gelu', x) && opts.approximate === false
    ? mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1))
    : mul(mul(x, 0.5), add(tanh(mul(add(x, mul(mul(x, square(x)), 0.044715)), Math.sqrt(2 / Math.PI))), 1));
/** log(1 + eˣ): a primitive that neither overflows nor loses precision for large |x|, with derivative σ(x) at
 * every point (0.5 at 0; a max(x,0)+log1p(e^−|x|) composition would give 0 there through relu's and abs's kinks).
 * @example softplus(tensor([0, 100])) // [0.6931472, 100] */
export const softplus = (x: Tensor): Tensor => apply(softplusOp, [x]);
/** log σ(x) = −softplus(−x), stable for large |x|; gradient σ(−x) = 1 − σ(x) everywhere (0.5 at 0), which is what
 * DPO's −log σ(βΔ) needs at its start, where the policy equals the reference and every Δ is exactly 0.
 * @example logSigmoid(tensor([-100, 0])) // [-100, -0.6931472] */
export const logSigmoid = (x: Tensor): Tensor => neg(softplus(neg(x)));
/** Sign of x in {-1, 0, 1}. */
export const sign = (x: Tensor): Tensor => where(less(0, x), scalar(1, x.dtype), where(less(x, 0), scalar(-1, x.dtype), scalar(0, x.dtype)));
