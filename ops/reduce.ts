// Reduction primitives (sum, max over any axes, keeping them as size-1 dims) and the compositions built on
// them: mean, var, logsumexp, softmax, logSoftmax, argmax, min.

import type { ReduceArg, ReduceOp } from '../core/node.js';
import { DTypeError, fmt, normAxes, ShapeError } from '../core/shape.js';
import { apply, type Tensor } from '../core/tensor.js';
import { isFloat, type DType } from '../core/dtype.js';
import { add, cast, equal, iota, less, mul, neg, stopGradient, sub, where } from './elementwise.js';
import { abs, div, exp, log } from './math.js';
import { broadcastTo, reshape } from './movement.js';

const refuseBool = (name: string, x: { readonly dtype: DType; readonly shape: readonly number[] }) => {
  if (x.dtype === 'bool') throw new ShapeError(`${name}: cannot reduce a bool tensor ${fmt(x.shape)}; cast it first`);
};

const reduceRule = (name: string): ReduceOp['infer'] => ([x], { axes }: ReduceArg) => {
  refuseBool(name, x!);
  return { shape: x!.shape.map((d, i) => (axes.includes(i) ? 1 : d)), dtype: x!.dtype };
};

const lowest = (d: DType): number => (isFloat(d) ? -Infinity : d === 'u32' ? 0 : -2147483648);

export const sumOp: ReduceOp = {
  name: 'sum',
  kind: 'reduce',
  infer: reduceRule('sum'),
  identity: () => 0,
  cpu: (acc, x) => acc + x,
  wgsl: (acc, x) => `${acc} + ${x}`,
  wgslSubgroup: 'subgroupAdd',
  vjp: (g, _o, [x]) => [broadcastTo(g, x!.shape)],
};

/** Max reduction; tied maxima share the gradient evenly (JAX's reduce_max rule: indicator / count; PyTorch's amax
 * does the same). NaN is skipped on the interpreter (unspecified on WebGPU), where numpy and JAX propagate it. */
export const maxReduceOp: ReduceOp = {
  name: 'max',
  kind: 'reduce',
  infer: reduceRule('max'),
  identity: lowest,
  cpu: (acc, x) => (x > acc ? x : acc),
  wgsl: (acc, x) => `max(${acc}, ${x})`,
  wgslSubgroup: 'subgroupMax',
  vjp: (g, out, [x], { axes }) => {
    const hit = cast(equal(x!, out), x!.dtype);
    return [mul(hit, div(g, apply(sumOp, [hit], { axes })))];
  },
};

export interface ReduceOpts { readonly keepDims?: boolean }
type Axes = number | readonly number[] | undefined;

const reduceWith = (op: ReduceOp, x: Tensor, axis: Axes, keepDims = false): Tensor => {
  const axes = normAxes(op.name, axis, x.rank);
  const r = axes.length ? apply(op, [x], { axes }) : x;
  return keepDims ? r : reshape(r, x.shape.filter((_, i) => !axes.includes(i)));
};

/** Sum over `axis` (one axis, a list, or all when omitted). */
export const sum = (x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor => reduceWith(sumOp, x, axis, opts.keepDims);
export const max = (x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor => reduceWith(maxReduceOp, x, axis, opts.keepDims);
/**
 * Min reduction, as −max(−x) for floats (tied minima share the gradient evenly) and ~max(~x) = −1 − max(−1 − x) for
 * i32, which wraps nowhere (−x would at −2³¹). u32 has no negation: it is refused, naming the casts that work.
 */
export const min = (x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor => {
  refuseBool('min', x);
  if (x.dtype === 'u32') throw new DTypeError(`min: u32 tensors cannot be negated, so min refuses ${fmt(x.shape)} u32; cast to i32 (values below 2³¹) or f64 first`);
  if (isFloat(x.dtype)) return neg(max(neg(x), axis, opts));
  return sub(-1, max(sub(-1, x), axis, opts));
};

/** A composite reduction's own checks, so its errors name it (not the sum or max it is built from): its axes. */
const ownAxes = (name: string, x: Tensor, axis: Axes | undefined): number[] => {
  refuseBool(name, x);
  return normAxes(name, axis, x.rank);
};

export const mean = (x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor => {
  const axes = ownAxes('mean', x, axis);
  return mul(sum(x, axes, opts), 1 / axes.reduce((n, a) => n * x.shape[a]!, 1));
};
/** Population variance (divides by N). */
export const variance = (x: Tensor, axis?: Axes, opts: ReduceOpts = {}): Tensor => {
  const axes = ownAxes('variance', x, axis);
  const d = sub(x, mean(x, axes, { keepDims: true }));
  return mean(mul(d, d), axes, opts);
};

/** log Σ exp(x), stable: the max is subtracted first (and gets no gradient: it cancels). An infinite max is read as
 * 0, so a row of −inf gives −inf (not NaN) and a row holding +inf gives +inf, as JAX and PyTorch. */
export const logsumexp = (x: Tensor, axis: Axes = -1, opts: ReduceOpts = {}): Tensor => {
  const axes = ownAxes('logsumexp', x, axis);
  const mx = max(x, axes, { keepDims: true });
  const m = stopGradient(where(less(abs(mx), Infinity), mx, 0));
  const r = add(log(sum(exp(sub(x, m)), axes, { keepDims: true })), m);
  return opts.keepDims ? r : reshape(r, r.shape.filter((_, i) => !axes.includes(i)));
};

export const softmax = (x: Tensor, axis = -1): Tensor => {
  const axes = ownAxes('softmax', x, axis);
  const e = exp(sub(x, stopGradient(max(x, axes, { keepDims: true }))));
  return div(e, sum(e, axes, { keepDims: true }));
};

export const logSoftmax = (x: Tensor, axis = -1): Tensor => sub(x, logsumexp(x, ownAxes('logSoftmax', x, axis), { keepDims: true }));

/** Index of the first maximum along `axis` (i32): ties go to the lowest index, as numpy, JAX and PyTorch. */
export const argmax = (x: Tensor, axis = -1, opts: ReduceOpts = {}): Tensor => {
  const a = normAxes('argmax', axis, x.rank)[0]!;
  const n = x.shape[a]!;
  const idx = broadcastTo(reshape(iota(n, 'i32'), x.shape.map((d, i) => (i === a ? d : 1))), x.shape);
  const hit = equal(x, max(x, a, { keepDims: true }));
  return min(where(hit, idx, n), a, opts);
};
