// Row lookup (gather, e.g. embeddings) and its adjoint scatter-add; oneHot as a composition.

import { allocStorage, type DType } from '../core/dtype.js';
import type { CustomOp } from '../core/node.js';
import { DTypeError, fmt, numel, ShapeError } from '../core/shape.js';
import { apply, type Tensor } from '../core/tensor.js';
import { materialize } from '../core/interp.js';
import { indexRangeError } from '../core/wgsl/indexing.js';
import { cast, equal, iota } from './elementwise.js';
import { expandDims } from './movement.js';

const checkIndex = (op: string, idx: { dtype: DType; shape: readonly number[] }) => {
  if (idx.dtype !== 'i32' && idx.dtype !== 'u32') throw new DTypeError(`${op}: indices must be i32 or u32, got ${idx.dtype}${fmt(idx.shape)}`);
};

const rowOf = (op: string, i: number, n: number, k: number): number => {
  if (!(i >= 0 && i < n)) throw indexRangeError(op, i, k, n);
  return i;
};

/**
 * table (V, …rest), idx (…I) → (…I, …rest). An index out of [0, V) is a ShapeError naming it, its position and
 * the range on every backend: at realisation when the indices come from the host; on WebGPU, for indices computed
 * on the device, at the next readback (the kernel reports into the device's fault words).
 */
export const gatherOp: CustomOp<null> = {
  name: 'gather',
  kind: 'custom',
  template: 'gather',
  infer: ([table, idx]) => {
    checkIndex('gather', idx!);
    if (table!.shape.length < 1) throw new ShapeError(`gather: table must have rank ≥ 1, got ${fmt(table!.shape)}`);
    return { shape: [...idx!.shape, ...table!.shape.slice(1)], dtype: table!.dtype };
  },
  cpu: ([table, idx], _a, out) => {
    const t = materialize(table!, 'f64');
    const ix = materialize(idx!, 'i32');
    const V = table!.view.shape[0]!;
    const row = numel(table!.view.shape.slice(1));
    const res = allocStorage(out.dtype, numel(out.shape));
    for (let k = 0; k < ix.length; k++) {
      const i = rowOf('gather', ix[k]!, V, k);
      res.set(t.subarray(i * row, (i + 1) * row), k * row);
    }
    return res;
  },
  vjp: (g, _o, [table, idx]) => [scatterAdd(g, idx!, table!.shape[0]!), null],
};

/** updates (…I, …rest), idx (…I) → (n, …rest): row idx[k] receives the sum of updates[k]. */
export const scatterAddOp: CustomOp<{ n: number }> = {
  name: 'scatterAdd',
  kind: 'custom',
  template: 'scatterAdd',
  infer: ([upd, idx], { n }) => {
    checkIndex('scatterAdd', idx!);
    const r = idx!.shape.length;
    if (upd!.shape.length < r || idx!.shape.some((d, i) => upd!.shape[i] !== d)) {
      throw new ShapeError(`scatterAdd: updates ${fmt(upd!.shape)} must start with the index shape ${fmt(idx!.shape)}`);
    }
    return { shape: [n, ...upd!.shape.slice(r)], dtype: upd!.dtype };
  },
  cpu: ([upd, idx], { n }, out) => {
    const u = materialize(upd!, 'f64');
    const ix = materialize(idx!, 'i32');
    const row = numel(out.shape.slice(1));
    const acc = new Float64Array(numel(out.shape));
    for (let k = 0; k < ix.length; k++) {
      const i = rowOf('scatterAdd', ix[k]!, n, k);
      for (let j = 0; j < row; j++) acc[i * row + j] = acc[i * row + j]! + u[k * row + j]!;
    }
    const res = allocStorage(out.dtype, acc.length);
    res.set(acc);
    return res;
  },
  vjp: (g, _o, [, idx]) => [gather(g, idx!), null],
};

/** Rows of `table` picked by integer `idx`. @example gather(tokEmb, tokens) // (V, dim), (B, T) → (B, T, dim) */
export const gather = (table: Tensor, idx: Tensor): Tensor => apply(gatherOp, [table, idx]);
export const scatterAdd = (updates: Tensor, idx: Tensor, n: number): Tensor => apply(scatterAddOp, [updates, idx], { n });

/** (…) integer classes → (…, n) one-hot in `dtype`. */
export const oneHot = (idx: Tensor, n: number, dtype: DType = 'f32'): Tensor =>
  cast(equal(expandDims(idx, -1), iota(n, idx.dtype)), dtype);
