// Pointwise ops: mostly compositions (no kernel, no gradient rule of their own; the scheduler fuses them), and
// the exported face of the few primitives whose stability or derivative a composition cannot give (sigmoid, softplus).

import { apply, type Tensor } from '../core/tensor.js';
import { add, exp2, log2, mul, maximum, neg, recip, reluOp, sigmoidOp, softplusOp, sqrt, sub, where, less, sin } from './elementwise.js';
import { lift, scalar, type TensorLike } from './lift.js';

const LOG2E = Math.LOG2E;
const LN2 = Math.LN2;

export const div = (a: TensorLike, b: TensorLike): Tensor => { const [x, y] = lift('div', [a, b]); return mul(x!, recip(y!)); };
export const exp = (x: Tensor): Tensor => exp2(mul(x, LOG2E));
export const log = (x: Tensor): Tensor => mul(log2(x), LN2);
export const rsqrt = (x: Tensor): Tensor => recip(sqrt(x));
export const square = (x: Tensor): Tensor => mul(x, x);
/** cos x = 1 − 2 sin²(x/2): exact in f32 where sin(x + π/2) would round the shifted angle. */
export const cos = (x: Tensor): Tensor => { const s = sin(mul(x, 0.5)); return sub(1, mul(mul(s, s), 2)); };
/** x^p for x > 0 (as exp2(p·log2 x)). */
export const pow = (x: TensorLike, p: TensorLike): Tensor => { const [a, b] = lift('pow', [x, p]); return exp2(mul(b!, log2(a!))); };
export const abs = (x: Tensor): Tensor => maximum(x, neg(x));
export const minimum = (a: TensorLike, b: TensorLike): Tensor => { const [x, y] = lift('minimum', [a, b]); return neg(maximum(neg(x!), neg(y!))); };
export const clamp = (x: Tensor, lo: TensorLike, hi: TensorLike): Tensor => minimum(maximum(x, lo), hi);
export const relu = (x: Tensor): Tensor => apply(reluOp, [x]);
/** Logistic σ(x) = 1/(1 + e⁻ˣ): a primitive, stable for every x; its gradient σ(1 − σ) is 0 (not NaN) when saturated.
 * @example sigmoid(tensor([-100, 0, 100])) // [0, 0.5, 1] */
export const sigmoid = (x: Tensor): Tensor => apply(sigmoidOp, [x]);
export const tanh = (x: Tensor): Tensor => sub(mul(sigmoid(mul(x, 2)), 2), 1);
export const silu = (x: Tensor): Tensor => mul(x, sigmoid(x));
/** GELU, tanh approximation (Hendrycks & Gimpel): 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))). */
export const gelu = (x: Tensor): Tensor =>
  mul(mul(x, 0.5), add(tanh(mul(add(x, mul(mul(x, square(x)), 0.044715)), Math.sqrt(2 / Math.PI))), 1));
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
