// The public autodiff API over pytrees: vjp, grad, valueAndGrad. Inputs are tagged with fresh identity nodes so
// that the same tensor passed twice, or a constant shared with the outside, is told apart.

import { backward, GradError, type Adjoint } from '../core/autodiff.js';
import type { ElementwiseOp } from '../core/node.js';
import { fmt, sameShape, ShapeError, type Shape } from '../core/shape.js';
import { apply, isTensor, type Tensor } from '../core/tensor.js';
import { flatten, unflatten } from '../core/tree.js';
import { add } from './elementwise.js';
import { zeros, full } from './create.js';
import { reshape } from './movement.js';
import { sum } from './reduce.js';

let nextTag = 1;
/** Identity that marks a differentiation input; its VJP passes the cotangent through (for grad of grad). */
export const tagOp: ElementwiseOp<{ id: number }> = {
  name: 'tag', kind: 'elementwise', identity: true, infer: (s) => s[0]!, cpu: (x) => x[0]!, wgsl: (x) => x[0]!, vjp: (g) => [g],
};
const tag = (t: Tensor): Tensor => apply(tagOp, [t], { id: nextTag++ });

const sumTo = (g: Tensor, shape: Shape): Tensor => {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  if (lead < 0) throw new ShapeError(`grad: cotangent ${fmt(g.shape)} has lower rank than its input ${fmt(shape)}`);
  const axes = g.shape.flatMap((d, i) => (i < lead || (shape[i - lead] === 1 && d !== 1) ? [i] : []));
  return reshape(sum(g, axes, { keepDims: true }), shape);
};

const adjoint: Adjoint = { add, sumTo };

/**
 * Reverse-mode linearisation: returns f(primals) and a function from output cotangents to input cotangents
 * (same tree structures). Unused inputs get zeros.
 * @example const [y, back] = vjp((x) => mul(x, x), tensor([3])); back(tensor([1])) // [6]
 */
export const vjp = <P, O>(f: (p: P) => O, primals: P): [O, (ct: O) => P] => {
  const { leaves, def } = flatten(primals);
  const tagged = leaves.map(tag);
  const out = f(unflatten<P>(def, tagged));
  const back = (ct: O): P => {
    const o = flatten(out), c = flatten(ct);
    if (o.leaves.length !== c.leaves.length) throw new GradError(`vjp: cotangent has ${c.leaves.length} leaves, output has ${o.leaves.length}`);
    o.leaves.forEach((t, i) => {
      const u = c.leaves[i]!;
      if (!sameShape(t.shape, u.shape) || t.dtype !== u.dtype) {
        throw new ShapeError(`vjp: cotangent ${i} is ${u.dtype}${fmt(u.shape)}, output is ${t.dtype}${fmt(t.shape)}`);
      }
    });
    const gs = backward(o.leaves, c.leaves, tagged, adjoint);
    return unflatten<P>(def, gs.map((g, i) => g ?? zeros(leaves[i]!.shape, leaves[i]!.dtype)));
  };
  return [out, back];
};

export interface GradOpts { readonly hasAux?: boolean }

const scalarOut = (v: unknown, name: string): Tensor => {
  if (!isTensor(v) || v.size !== 1) throw new GradError(`${name}: the function must return a scalar tensor${isTensor(v) ? `, got ${fmt(v.shape)}` : ''}`);
  return v;
};

/**
 * Value and gradient of a scalar function with respect to its first argument (a pytree).
 * With `hasAux`, f returns [value, aux] and the result is [[value, aux], grads].
 * @example const [loss, g] = valueAndGrad(lossFn)(params, batch)
 */
export function valueAndGrad<P, R extends unknown[]>(f: (p: P, ...rest: R) => Tensor, opts?: { hasAux?: false }): (p: P, ...rest: R) => [Tensor, P];
export function valueAndGrad<P, R extends unknown[], A>(f: (p: P, ...rest: R) => readonly [Tensor, A], opts: { hasAux: true }): (p: P, ...rest: R) => [[Tensor, A], P];
export function valueAndGrad(f: (p: unknown, ...rest: unknown[]) => unknown, opts: GradOpts = {}) {
  return valueAndGradAs('valueAndGrad', f, opts);
}

/** valueAndGrad whose errors name the function the caller used. */
const valueAndGradAs = (name: string, f: (p: unknown, ...rest: unknown[]) => unknown, opts: GradOpts = {}) =>
  (p: unknown, ...rest: unknown[]): unknown => {
    let aux: unknown;
    const [value, back] = vjp((q: unknown) => {
      const r = f(q, ...rest);
      if (!opts.hasAux) return scalarOut(r, name);
      if (!Array.isArray(r) || r.length !== 2) throw new GradError(`${name}: with hasAux the function must return [value, aux]`);
      aux = r[1];
      return scalarOut(r[0], name);
    }, p);
    const g = back(full(value.shape, 1, value.dtype));
    return opts.hasAux ? [[value, aux], g] : [value, g];
  };

/** Gradient of a scalar function with respect to its first argument (a pytree of tensors). */
export const grad = <P, R extends unknown[]>(f: (p: P, ...rest: R) => Tensor) => (p: P, ...rest: R): P =>
  (valueAndGradAs('grad', f as (p: unknown, ...rest: unknown[]) => unknown)(p, ...rest) as [Tensor, P])[1];
