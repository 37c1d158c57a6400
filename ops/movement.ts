// Movement primitives (reshape, permute, expand, pad, shrink): each one's meaning on every backend is its view
// transform; the scheduler folds them into index math. Compositions (concat, stack, squeeze…) follow.

import type { MovementOp } from '../core/node.js';
import { broadcastShapes, checkShape, fmt, normAxes, normAxis, numel, sameShape, ShapeError, type Shape } from '../core/shape.js';
import { apply, Tensor } from '../core/tensor.js';
import { expandView, padView, permuteView, reshapeView, shrinkView } from '../core/view.js';
import { add } from './elementwise.js';

type Pads = readonly (readonly [number, number])[];

export const reshapeOp: MovementOp<{ shape: Shape }> = {
  name: 'reshape',
  kind: 'movement',
  infer: ([x], { shape }) => {
    checkShape('reshape', shape);
    if (numel(shape) !== numel(x!.shape)) throw new ShapeError(`reshape: cannot reshape ${fmt(x!.shape)} (${numel(x!.shape)} elements) to ${fmt(shape)} (${numel(shape)} elements)`);
    return { shape, dtype: x!.dtype };
  },
  view: (v, { shape }) => reshapeView(v, shape),
  vjp: (g, _o, [x]) => [reshape(g, x!.shape)],
};

export const permuteOp: MovementOp<{ perm: readonly number[] }> = {
  name: 'permute',
  kind: 'movement',
  infer: ([x], { perm }) => {
    const r = x!.shape.length;
    if (perm.length !== r || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
      throw new ShapeError(`permute: [${perm.join(',')}] is not a permutation of the axes of ${fmt(x!.shape)}`);
    }
    return { shape: perm.map((p) => x!.shape[p]!), dtype: x!.dtype };
  },
  view: (v, { perm }) => permuteView(v, perm),
  vjp: (g, _o, _s, { perm }) => [permute(g, perm.map((_, i) => perm.indexOf(i)))],
};

/** Broadcast size-1 dimensions (same rank). Its gradient is the walker's sum over broadcast axes. */
export const expandOp: MovementOp<{ shape: Shape }> = {
  name: 'expand',
  kind: 'movement',
  infer: ([x], { shape }) => {
    checkShape('expand', shape);
    if (shape.length !== x!.shape.length || x!.shape.some((d, i) => d !== shape[i] && d !== 1)) {
      throw new ShapeError(`expand: cannot expand ${fmt(x!.shape)} to ${fmt(shape)}`);
    }
    return { shape, dtype: x!.dtype };
  },
  view: (v, { shape }) => expandView(v, shape),
  vjp: (g) => [g],
};

export const padOp: MovementOp<{ pads: Pads }> = {
  name: 'pad',
  kind: 'movement',
  infer: ([x], { pads }) => {
    if (pads.length !== x!.shape.length || pads.some(([a, b]) => !Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b < 0)) {
      throw new ShapeError(`pad: ${JSON.stringify(pads)} must give [before, after] ≥ 0 for each axis of ${fmt(x!.shape)}`);
    }
    return { shape: x!.shape.map((d, i) => d + pads[i]![0] + pads[i]![1]), dtype: x!.dtype };
  },
  view: (v, { pads }) => padView(v, pads),
  vjp: (g, _o, [x], { pads }) => [shrink(g, pads.map(([a], i) => [a, a + x!.shape[i]!] as const))],
};

export const shrinkOp: MovementOp<{ bounds: Pads }> = {
  name: 'shrink',
  kind: 'movement',
  infer: ([x], { bounds }) => {
    if (bounds.length !== x!.shape.length || bounds.some(([b, e], i) => !Number.isInteger(b) || !Number.isInteger(e) || b < 0 || e < b || e > x!.shape[i]!)) {
      throw new ShapeError(`slice: bounds ${JSON.stringify(bounds)} do not fit ${fmt(x!.shape)}`);
    }
    return { shape: bounds.map(([b, e]) => e - b), dtype: x!.dtype };
  },
  view: (v, { bounds }) => shrinkView(v, bounds),
  vjp: (g, _o, [x], { bounds }) => [pad(g, bounds.map(([b, e], i) => [b, x!.shape[i]! - e] as const))],
};

export const reshape = (x: Tensor, shape: Shape): Tensor => {
  const hole = shape.indexOf(-1);
  let s = shape;
  if (hole >= 0) {
    const rest = numel(shape.filter((_, i) => i !== hole));
    if (rest === 0 || numel(x.shape) % rest !== 0) throw new ShapeError(`reshape: cannot infer -1 in ${fmt(shape)} for ${fmt(x.shape)}`);
    s = shape.map((d, i) => (i === hole ? numel(x.shape) / rest : d));
  }
  return sameShape(s, x.shape) ? x : apply(reshapeOp, [x], { shape: s });
};
export const permute = (x: Tensor, perm: readonly number[]): Tensor =>
  perm.every((p, i) => p === i) && perm.length === x.rank ? x : apply(permuteOp, [x], { perm: perm.map((p) => normAxis('permute', p, x.rank)) });
// The no-op shortcuts ask for one entry per axis: a shorter list goes to the op's rule, which refuses it.
export const pad = (x: Tensor, pads: Pads): Tensor => (pads.length === x.rank && pads.every(([a, b]) => a === 0 && b === 0) ? x : apply(padOp, [x], { pads }));
export const shrink = (x: Tensor, bounds: Pads): Tensor => {
  if (bounds.length === x.rank && bounds.every(([b, e], i) => b === 0 && e === x.shape[i])) return x;
  // The window of a pad that is exactly its source (a slice's cotangent sliced again) is the source itself.
  const { op, arg, src } = x.node;
  if (op === padOp && (arg as { pads: Pads }).pads.every(([a], i) => bounds[i]![0] === a && bounds[i]![1] === a + src[0]!.shape[i]!)) return new Tensor(src[0]!);
  return apply(shrinkOp, [x], { bounds });
};

/** Numpy-style broadcast to `shape` (leading dimensions may be added). */
export const broadcastTo = (x: Tensor, shape: Shape): Tensor => {
  const full = broadcastShapes('broadcastTo', x.shape, shape);
  if (!sameShape(full, shape)) throw new ShapeError(`broadcastTo: cannot broadcast ${fmt(x.shape)} to ${fmt(shape)}`);
  const lifted = reshape(x, [...Array<number>(shape.length - x.rank).fill(1), ...x.shape]);
  return sameShape(lifted.shape, shape) ? lifted : apply(expandOp, [lifted], { shape });
};

/** Reverse the axes, or apply `perm`. */
export const transpose = (x: Tensor, perm?: readonly number[]): Tensor => permute(x, perm ?? [...Array(x.rank).keys()].reverse());
/** Swap two axes (default: the last two). */
export const swapAxes = (x: Tensor, a = -2, b = -1): Tensor => {
  const p = [...Array(x.rank).keys()];
  const i = normAxis('swapAxes', a, x.rank), j = normAxis('swapAxes', b, x.rank);
  [p[i], p[j]] = [p[j]!, p[i]!];
  return permute(x, p);
};

export const squeeze = (x: Tensor, axes?: number | readonly number[]): Tensor => {
  const ax = axes === undefined ? x.shape.flatMap((d, i) => (d === 1 ? [i] : [])) : normAxes('squeeze', axes, x.rank);
  for (const a of ax) if (x.shape[a] !== 1) throw new ShapeError(`squeeze: axis ${a} of ${fmt(x.shape)} has size ${x.shape[a]}, not 1`);
  return reshape(x, x.shape.filter((_, i) => !ax.includes(i)));
};

export const expandDims = (x: Tensor, axis: number): Tensor => {
  const a = normAxis('expandDims', axis, x.rank + 1);
  return reshape(x, [...x.shape.slice(0, a), 1, ...x.shape.slice(a)]);
};

/** x[starts[i] : ends[i]] along each axis (missing axes are taken whole). */
export const slice = (x: Tensor, starts: readonly number[], ends?: readonly number[]): Tensor =>
  shrink(x, x.shape.map((d, i) => [starts[i] ?? 0, ends?.[i] ?? d] as const));

/** Join along an axis: each part padded into place, then summed (fuses into one kernel). */
export const concat = (xs: readonly Tensor[], axis = 0): Tensor => {
  const first = xs[0];
  if (!first) throw new ShapeError('concat: no tensors');
  const a = normAxis('concat', axis, first.rank);
  for (const x of xs) {
    if (x.rank !== first.rank || x.shape.some((d, i) => i !== a && d !== first.shape[i])) {
      throw new ShapeError(`concat: shapes ${xs.map((t) => fmt(t.shape)).join(', ')} differ off axis ${a}`);
    }
  }
  const total = xs.reduce((s, x) => s + x.shape[a]!, 0);
  let at = 0;
  const parts = xs.map((x) => {
    const pads = x.shape.map((_, i) => (i === a ? [at, total - at - x.shape[a]!] as const : [0, 0] as const));
    at += x.shape[a]!;
    return pad(x, pads);
  });
  return parts.reduce((s, p) => add(s, p));
};

export const stack = (xs: readonly Tensor[], axis = 0): Tensor => {
  const first = xs[0];
  if (!first) throw new ShapeError('stack: no tensors');
  return concat(xs.map((x) => expandDims(x, axis < 0 ? axis + first.rank + 1 : axis)), axis);
};
