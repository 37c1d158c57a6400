// Elementwise primitives: each op is one record — shape/dtype rule, VJP, CPU meaning, WGSL meaning.
// Everything pointwise that is not here (exp, sigmoid, gelu…) is a composition in ops/math.ts.

import { isFloat, coerce, type DType } from '../core/dtype.js';
import type { ElementwiseOp } from '../core/node.js';
import { broadcastShapes, DTypeError, fmt } from '../core/shape.js';
import { apply, Tensor } from '../core/tensor.js';
import { fillOp, lift, scalar, type TensorLike } from './lift.js';

type Rule = ElementwiseOp['infer'];
const sameDtype = (name: string, float = false, out?: DType): Rule => (src) => {
  const d = src[0]!.dtype;
  for (const s of src) {
    if (s.dtype !== d) throw new DTypeError(`${name}: dtype mismatch: ${src.map((x) => `${x.dtype}${fmt(x.shape)}`).join(' vs ')}`);
  }
  if (float && !isFloat(d)) throw new DTypeError(`${name}: needs a float dtype, got ${d}${fmt(src[0]!.shape)}`);
  return { shape: broadcastShapes(name, ...src.map((s) => s.shape)), dtype: out ?? d };
};

const unary = (name: string, cpu: (x: number) => number, wgsl: (x: string) => string, vjp: ElementwiseOp['vjp']): ElementwiseOp =>
  ({ name, kind: 'elementwise', infer: sameDtype(name, true), cpu: (x) => cpu(x[0]!), wgsl: (x) => wgsl(x[0]!), vjp });

const LN2 = Math.LN2;
export const exp2Op = unary('exp2', (x) => 2 ** x, (x) => `exp2(${x})`, (g, out) => [mul(g, mul(out, LN2))]);
export const log2Op = unary('log2', Math.log2, (x) => `log2(${x})`, (g, _o, [x]) => [mul(g, recip(mul(x!, LN2)))]);
export const sinOp = unary('sin', Math.sin, (x) => `sin(${x})`, (g, _o, [x]) => [mul(g, sin(add(x!, Math.PI / 2)))]);
export const sqrtOp = unary('sqrt', Math.sqrt, (x) => `sqrt(${x})`, (g, out) => [mul(g, recip(mul(out, 2)))]);
// −g·out·out, multiplied in that order: g·out first keeps a/b's ∂b = −(g·a·(1/b))·(1/b) in range where (1/b)² alone
// under- or overflows (b = 1e30 or 1e−20 in f32).
export const recipOp = unary('recip', (x) => 1 / x, (x) => `(1.0 / ${x})`, (g, out) => [mul(mul(mul(g, out), out), -1)]);

// Unary primitives whose WGSL meaning is a helper function (declared once per kernel): f32 helpers, called
// through a cast for f16. Each is written so that no intermediate overflows for any input, ±inf included.
// `cost` (the scheduler's recomputation estimate) is what the compositions they replace counted, so fusion
// decisions (a SwiGLU operand computed on load, say) stay as they were.
const fnUnary = (name: string, cost: number, cpu: (x: number) => number, fn: string, prelude: string, vjp: ElementwiseOp['vjp']): ElementwiseOp => ({
  name, kind: 'elementwise', cost, infer: sameDtype(name, true), cpu: (x) => cpu(x[0]!), vjp, wgslPrelude: prelude,
  wgsl: (x, _i, _a, out) => (out === 'f32' ? `${fn}(${x[0]})` : `${out}(${fn}(f32(${x[0]})))`),
});

/** σ(x) = 1/(1 + e⁻ˣ), from e^(−|x|) only (never overflows); derivative σ(1 − σ) read from the output, so a
 * saturated unit gives 0, not inf·0. */
export const sigmoidOp = fnUnary('sigmoid', 6, (x) => { const e = Math.exp(-Math.abs(x)); return (x >= 0 ? 1 : e) / (1 + e); }, 'cml_sigmoid',
  'fn cml_sigmoid(x: f32) -> f32 { let e = exp(-abs(x)); return select(e, 1.0, x >= 0.0) / (1.0 + e); }',
  (g, out) => [mul(g, mul(out, sub(1, out)))]);

/** softplus(x) = log(1 + eˣ) = max(x, 0) + log1p(e^(−|x|)); derivative σ(x) at every point, 0 included.
 * WGSL has no log1p: below e^(−|x|) = 1/8 it is its series to the 8th power (relative error < 7e-9). */
export const softplusOp = fnUnary('softplus', 12, (x) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x))), 'cml_softplus',
  `fn cml_softplus(x: f32) -> f32 {
  let e = exp(-abs(x));
  let l = select(log(1.0 + e), e * (1.0 - e * (0.5 - e * (0.33333334 - e * (0.25 - e * (0.2 - e * (0.16666667 - e * (0.14285715 - e * 0.125))))))), e < 0.125);
  return select(x, 0.0, x < 0.0) + l;
}`,
  (g, _o, [x]) => [mul(g, apply(sigmoidOp, [x!]))]);

/** tanh x; derivative 1 − tanh² read from the output (0 when saturated: 2σ(2x) − 1 gave NaN below −50 in f32).
 * WGSL: its Taylor series to x⁷ below |x| = 1/8 (keeps tanh(tiny) = tiny), else (1 − e)/(1 + e) with e = e^(−2|x|). */
export const tanhOp = fnUnary('tanh', 10, Math.tanh, 'cml_tanh',
  `fn cml_tanh(x: f32) -> f32 {
  let a = abs(x);
  let x2 = x * x;
  let e = exp(-2.0 * a);
  let t = (1.0 - e) / (1.0 + e);
  return select(select(t, -t, x < 0.0), x * (1.0 - x2 * (0.33333334 - x2 * (0.13333334 - x2 * 0.053968254))), a < 0.125);
}`,
  (g, out) => [mul(g, sub(1, mul(out, out)))]);

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);
/** erf in f64: below 2.5 the series 2/√π·e^(−x²)·Σ (2x²)ⁿ x/(2n+1)!! (all terms positive: no cancellation), above
 * it 1 − erfc by erfc's continued fraction e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))) (A&S 7.1.2, 7.1.14). */
const erfCpu = (x: number): number => {
  const a = Math.abs(x);
  if (!(a < 6)) return Number.isNaN(x) ? x : Math.sign(x); // |erf| rounds to 1 beyond 5.9 in f64
  let r: number;
  if (a < 2.5) {
    const q = 2 * a * a;
    let [t, s] = [a, a];
    for (let n = 1; n < 200 && t > s * 1e-17; n++) { t *= q / (2 * n + 1); s += t; }
    r = TWO_OVER_SQRT_PI * Math.exp(-a * a) * s;
  } else {
    let f = a;
    for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
    r = 1 - Math.exp(-a * a) / (Math.sqrt(Math.PI) * f);
  }
  return x < 0 ? -r : x === 0 ? x : r;
};
/** The error function; derivative 2/√π·e^(−x²). WGSL: the same two forms in f32 (series below 1.5, a 24-term
 * continued fraction to 4, ±1 beyond), with e^(−x²) from x² split exactly by fma; within 4 f32 ulps of erf. */
export const erfOp = fnUnary('erf', 24, erfCpu, 'cml_erf',
  `fn cml_erf(x: f32) -> f32 {
  let a = abs(x);
  if (a >= 4.0) { return sign(x); }
  let hi = a * a;
  let e = exp(-hi) * (1.0 - fma(a, a, -hi));
  var r: f32;
  if (a < 1.5) {
    let q = 2.0 * hi;
    var t = a;
    var s = a;
    for (var n = 1; n < 40; n++) {
      t = t * q / f32(2 * n + 1);
      s = s + t;
      if (t < s * 3e-8) { break; }
    }
    r = 1.1283791671 * e * s;
  } else {
    var f = a;
    for (var k = 24; k >= 1; k--) { f = a + f32(k) * 0.5 / f; }
    r = 1.0 - e / (1.7724538509 * f);
  }
  return select(r, -r, x < 0.0);
}`,
  (g, _o, [x]) => [mul(g, mul(exp2(mul(mul(x!, x!), -Math.LOG2E)), TWO_OVER_SQRT_PI))]);

/** max(x, 0). A primitive so that its derivative reads the output (out > 0): the backward pass then needs
 * only the activation it already keeps, and the pre-activation can stay fused inside its matmul. */
export const reluOp = unary('relu', (x) => (x > 0 || Number.isNaN(x) ? x : 0), (x) => `select(${x}, 0.0, ${x} <= 0.0)`, (g, out) => [mul(g, cast(less(0, out), out.dtype))]);

/** The identity that blocks gradients. */
export const stopGradientOp: ElementwiseOp = {
  name: 'stopGradient', kind: 'elementwise', identity: true, infer: (s) => s[0]!, cpu: (x) => x[0]!, wgsl: (x) => x[0]!, vjp: () => [null],
};

export const castOp: ElementwiseOp<{ dtype: DType }> = {
  name: 'cast',
  kind: 'elementwise',
  infer: (s, a) => ({ shape: s[0]!.shape, dtype: a.dtype }),
  cpu: (x, _i, a) => coerce(a.dtype, x[0]!),
  wgsl: (x, _i, a, _o, src) => (a.dtype === 'bool' ? `(${x[0]} != ${src[0]}(0))` : `${a.dtype}(${x[0]})`),
  vjp: (g, out, [x]) => [isFloat(x!.dtype) && isFloat(out.dtype) ? cast(g, x!.dtype) : null],
};

const binary = (name: string, cpu: (a: number, b: number) => number, wgsl: (a: string, b: string) => string, vjp: ElementwiseOp['vjp'], out?: DType): ElementwiseOp =>
  ({ name, kind: 'elementwise', infer: sameDtype(name, false, out), cpu: (x) => cpu(x[0]!, x[1]!), wgsl: (x) => wgsl(x[0]!, x[1]!), vjp });

export const addOp = binary('add', (a, b) => a + b, (a, b) => `(${a} + ${b})`, (g) => [g, g]);
// x·x (square) gets one cotangent 2·g·x rather than g·x twice: one term for the scheduler, not two to add.
export const mulOp = binary('mul', (a, b) => a * b, (a, b) => `(${a} * ${b})`, (g, _o, [a, b]) =>
  a!.node === b!.node ? [mul(mul(g, a!), 2), null] : [mul(g, b!), mul(g, a!)]);
// WGSL's max of a NaN is unspecified (lavapipe returns the other operand) and compilers fold x != x away: in f32
// NaN is found by its bits and propagated, as Math.max does.
/** Elementwise maximum; at ties the gradient is split evenly, as JAX's lax.max (its `_balanced_eq`) and PyTorch. */
const maxBinary = binary('max', Math.max, () => '', (g, _o, [a, b]) => {
  const share = add(cast(less(b!, a!), a!.dtype), mul(cast(equal(a!, b!), a!.dtype), 0.5));
  return [mul(g, share), mul(g, sub(1, share))];
});
export const maxOp: ElementwiseOp = {
  ...maxBinary,
  wgsl: ([a, b], _i, _a, out) => (out === 'f32' ? `cml_fmax(${a}, ${b})` : `max(${a}, ${b})`),
  wgslPrelude: `fn cml_fmax(a: f32, b: f32) -> f32 {
  let nan = (bitcast<u32>(a) & 0x7fffffffu) > 0x7f800000u || (bitcast<u32>(b) & 0x7fffffffu) > 0x7f800000u;
  return select(max(a, b), a + b, nan);
}`,
};
/** numpy's power: x^p, also for negative x with an integral p (sign from p's parity; NaN for a fractional p),
 * 0^p = 0 or inf, x^0 = 1 and 1^p = 1 even for NaN, (−1)^±inf = 1. WGSL: |x|^p as exp2(p·log2|x|), sign fixed.
 * VJP as JAX's: ∂x = p·x^(p−1) (0 where p = 0), ∂p = log(x)·x^p with log 0 read as 0 (x^p is 0 or inf there). */
export const powOp: ElementwiseOp = {
  ...binary('pow', (x, p) => (p === 0 || x === 1 ? 1 : x === -1 && Math.abs(p) === Infinity ? 1 : Math.pow(x, p)), () => '',
    (g, out, [x, p]) => {
      const dx = where(equal(p!, 0), 0, mul(p!, apply(powOp, [x!, sub(p!, 1)])));
      const logx = mul(log2(where(equal(x!, 0), 1, x!)), LN2);
      return [mul(g, dx), mul(g, mul(out, logx))];
    }),
  infer: sameDtype('pow', true),
  cost: 6,
  wgsl: ([x, p], _i, _a, out) => (out === 'f32' ? `cml_pow(${x}, ${p})` : `${out}(cml_pow(f32(${x}), f32(${p})))`),
  wgslPrelude: `fn cml_pow(x: f32, p: f32) -> f32 {
  let a = abs(x);
  if (p == 0.0 || x == 1.0 || (a == 1.0 && abs(p) == f32_bits(0x7f800000u))) { return 1.0; }
  let inf = f32_bits(0x7f800000u);
  // 0^p: 0 for p > 0, inf for p < 0 (lavapipe's exp2(p·log2 0) gives 0 for both); NaN for a NaN p.
  let r = select(exp2(p * log2(a)), select(select(0.0, inf, p < 0.0), p, (bitcast<u32>(p) & 0x7fffffffu) > 0x7f800000u), a == 0.0);
  if (bitcast<u32>(x) >= 0x80000000u) { // sign bit set: negative, −0 or −inf
    if (floor(p) != p) { return select(f32_bits(0x7fc00000u), r, a == 0.0 || a == inf); } // (−inf)^2.5 = inf, (−0)^2.5 = 0
    return select(r, -r, fract(p * 0.5) == 0.5);
  }
  return r;
}`,
};

export const cmpltOp = binary('cmplt', (a, b) => (a < b ? 1 : 0), (a, b) => `(${a} < ${b})`, () => [null, null], 'bool');
export const cmpeqOp = binary('cmpeq', (a, b) => (a === b ? 1 : 0), (a, b) => `(${a} == ${b})`, () => [null, null], 'bool');

export const whereOp: ElementwiseOp = {
  name: 'where',
  kind: 'elementwise',
  infer: ([c, a, b]) => {
    if (c!.dtype !== 'bool') throw new DTypeError(`where: condition must be bool, got ${c!.dtype}${fmt(c!.shape)}`);
    if (a!.dtype !== b!.dtype) throw new DTypeError(`where: branches differ in dtype: ${a!.dtype}${fmt(a!.shape)} vs ${b!.dtype}${fmt(b!.shape)}`);
    return { shape: broadcastShapes('where', c!.shape, a!.shape, b!.shape), dtype: a!.dtype };
  },
  cpu: (x) => (x[0] ? x[1]! : x[2]!),
  wgsl: (x) => `select(${x[2]}, ${x[1]}, ${x[0]})`,
  vjp: (g, _o, [c]) => [null, where(c!, g, 0), where(c!, 0, g)],
};

/** 0..n-1 as a 1-D tensor: the index source behind arange, oneHot, masks and random counters. */
export const iotaOp: ElementwiseOp<{ n: number; dtype: DType }> = {
  name: 'iota',
  kind: 'elementwise',
  infer: (_s, a) => ({ shape: [a.n], dtype: a.dtype }),
  cpu: (_x, i) => i,
  wgsl: (_x, i, a) => `${a.dtype}(${i})`,
};

export const exp2 = (x: Tensor): Tensor => apply(exp2Op, [x]);
export const log2 = (x: Tensor): Tensor => apply(log2Op, [x]);
export const sin = (x: Tensor): Tensor => apply(sinOp, [x]);
export const sqrt = (x: Tensor): Tensor => apply(sqrtOp, [x]);
export const recip = (x: Tensor): Tensor => apply(recipOp, [x]);
export const stopGradient = <T extends Tensor>(x: T): T => apply(stopGradientOp, [x]) as T;
export const cast = (x: Tensor, dtype: DType): Tensor => (x.dtype === dtype ? x : apply(castOp, [x], { dtype }));

export const add = (a: TensorLike, b: TensorLike): Tensor => apply(addOp, lift('add', [a, b]));
/** The value of a scalar constant (a fill), or null. */
const constant = (t: Tensor): number | null => (t.node.op === fillOp ? (t.node.arg as { value: number }).value : null);

export const mul = (a: TensorLike, b: TensorLike): Tensor => {
  const [x, y] = lift('mul', [a, b]) as [Tensor, Tensor];
  // (u·c₁)·c₂ → u·(c₁c₂) for float constants: one multiply in the kernel where a chain of scalings had several
  // (x·1.5·2·(−1)·log₂e inside tanh, say), rounded once instead of at every step.
  const [cx, cy] = [constant(x), constant(y)];
  if (cx !== null && cy !== null && isFloat(x.dtype)) return scalar(cx * cy, x.dtype);
  const [t, c] = cy !== null ? [x, cy] : cx !== null ? [y, cx] : [null, null];
  if (t && c !== null && isFloat(t.dtype) && t.node.op === mulOp) {
    const [u, v] = t.node.src.map((n) => new Tensor(n)) as [Tensor, Tensor];
    const inner = constant(v) ?? constant(u);
    if (inner !== null && u.dtype === t.dtype) return apply(mulOp, [constant(v) !== null ? u : v, scalar(inner * c, t.dtype)]);
  }
  return apply(mulOp, [x, y]);
};
export const maximum = (a: TensorLike, b: TensorLike): Tensor => apply(maxOp, lift('maximum', [a, b]));
export const less = (a: TensorLike, b: TensorLike): Tensor<'bool'> => apply(cmpltOp, lift('less', [a, b]));
export const equal = (a: TensorLike, b: TensorLike): Tensor<'bool'> => apply(cmpeqOp, lift('equal', [a, b]));
export const greater = (a: TensorLike, b: TensorLike): Tensor<'bool'> => less(b, a);
export const neg = (x: Tensor): Tensor => mul(x, -1);
export const sub = (a: TensorLike, b: TensorLike): Tensor => { const [x, y] = lift('sub', [a, b]); return add(x!, neg(y!)); };
export const logicalNot = (c: Tensor<'bool'>): Tensor<'bool'> => equal(c, scalar(0, 'bool'));
/** a ≤ b as a < b or a = b: not(b < a) would hold for NaN, where every ordered comparison is false (IEEE 754). */
export const lessEqual = (a: TensorLike, b: TensorLike): Tensor<'bool'> => {
  const [x, y] = lift('lessEqual', [a, b]);
  return apply(whereOp, [less(x!, y!), scalar(1, 'bool'), equal(x!, y!)]) as Tensor<'bool'>;
};
export const greaterEqual = (a: TensorLike, b: TensorLike): Tensor<'bool'> => lessEqual(b, a);

/** Pick from `a` where `cond` holds, else from `b` (numbers take the tensor branch's dtype). */
export const where = (cond: Tensor, a: TensorLike, b: TensorLike): Tensor => {
  const [x, y] = lift('where', [a, b], undefined, 1); // the branches are operands 1 and 2
  return apply(whereOp, [cond, x!, y!]);
};

export const iota = (n: number, dtype: DType = 'i32'): Tensor => {
  if (!Number.isInteger(n) || n < 0) throw new DTypeError(`iota: length must be a non-negative integer, got ${n}`);
  return apply(iotaOp, [], { n, dtype });
};
