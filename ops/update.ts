// writeAt: a block of `src` written into `dst` at a run-time position along one axis — the KV-cache update.
// On WebGPU, when `dst` is consumed (a donated jit argument or a scratch value used once) the kernel writes only
// the block, in place; otherwise it copies `dst` first.

import { allocStorage } from '../core/dtype.js';
import type { CustomOp } from '../core/node.js';
import { DTypeError, fmt, numel, ShapeError, normAxis } from '../core/shape.js';
import { apply, type Tensor } from '../core/tensor.js';
import { materialize } from '../core/interp.js';
import { add, cast, equal, iota, less, where } from './elementwise.js';
import { scalar } from './lift.js';
import { matmul } from './matmul.js';
import { reshape, swapAxes } from './movement.js';

/** (…, T, …) bool: slot ∈ [pos, pos+L) along `axis`, broadcastable to dst. */
const windowMask = (dst: Tensor, L: number, pos: Tensor, axis: number): Tensor => {
  const slot = reshape(iota(dst.shape[axis]!), dst.shape.map((d, i) => (i === axis ? d : 1))); // (1…, T, 1…)
  return where(less(slot, pos), scalar(0, 'bool'), less(slot, add(pos, L)));
};

export const writeAtOp: CustomOp<{ axis: number }> = {
  name: 'writeAt',
  kind: 'custom',
  template: 'update',
  infer: ([dst, src, pos], { axis }) => {
    if (src!.dtype !== dst!.dtype) throw new DTypeError(`writeAt: dst ${dst!.dtype}${fmt(dst!.shape)} and src ${src!.dtype}${fmt(src!.shape)} differ in dtype`);
    if (pos!.dtype !== 'i32' || pos!.shape.length !== 0) throw new DTypeError(`writeAt: the position must be an i32 scalar, got ${pos!.dtype}${fmt(pos!.shape)}`);
    if (src!.shape.length !== dst!.shape.length || src!.shape.some((d, i) => i !== axis && d !== dst!.shape[i]) || src!.shape[axis]! > dst!.shape[axis]!) {
      throw new ShapeError(`writeAt: cannot write ${fmt(src!.shape)} into ${fmt(dst!.shape)} along axis ${axis}`);
    }
    return { shape: dst!.shape, dtype: dst!.dtype };
  },
  cpu: ([dst, src, pos], { axis }, out) => {
    const d = materialize(dst!, out.dtype), s = materialize(src!, out.dtype);
    const p = materialize(pos!, 'i32')[0]!;
    const shape = out.shape, T = shape[axis]!, L = src!.view.shape[axis]!;
    if (p < 0 || p + L > T) throw new ShapeError(`writeAt: slots ${p}…${p + L - 1} do not fit axis ${axis} of ${fmt(shape)}`);
    const res = allocStorage(out.dtype, numel(shape));
    res.set(d);
    const inner = numel(shape.slice(axis + 1)), outer = numel(shape.slice(0, axis));
    for (let o = 0; o < outer; o++) {
      for (let l = 0; l < L; l++) res.set(s.subarray((o * L + l) * inner, (o * L + l + 1) * inner), (o * T + p + l) * inner);
    }
    return res;
  },
  vjp: (g, _o, [dst, src, pos], { axis }) => {
    const L = src!.shape[axis]!, T = dst!.shape[axis]!;
    // d/dsrc: the window of g, picked by a (L, T) one-hot matrix along the axis.
    const pick = cast(equal(reshape(add(iota(L), cast(pos!, 'i32')), [L, 1]), reshape(iota(T), [1, T])), g.dtype); // (L, T)
    const gT = swapAxes(g, axis, -1); // (…, T) with the axis last
    const gs = swapAxes(matmul(gT, swapAxes(pick, 0, 1)), axis, -1); // (…, L) → src layout
    return [where(windowMask(dst!, L, pos!, axis), 0, g), gs, null];
  },
};

/**
 * dst with src written at pos … pos+L−1 along `axis` (pos an i32 scalar tensor, so it can change per call).
 * @example writeAt(cacheK, kNew, pos, 2) // (B, nKv, maxT, hd), (B, nKv, 1, hd), () → (B, nKv, maxT, hd)
 */
export const writeAt = (dst: Tensor, src: Tensor, pos: Tensor, axis: number): Tensor =>
  apply(writeAtOp, [dst, src, pos], { axis: normAxis('writeAt', axis, dst.rank) });
