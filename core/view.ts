// Strided views: how movement ops (reshape, permute, expand, pad, shrink) become index math instead of copies.
// A view maps a multi-index of its shape to offset + Σ idx·stride in a base buffer; outside `mask` it reads 0.

import { contiguousStrides, type Shape } from './shape.js';

export interface View {
  readonly shape: Shape;
  readonly strides: readonly number[];
  readonly offset: number;
  /** Per dimension [lo, hi): the region backed by data; null when everything is. */
  readonly mask: readonly (readonly [number, number])[] | null;
}

export const contiguous = (shape: Shape): View => ({ shape, strides: contiguousStrides(shape), offset: 0, mask: null });

export const isContiguous = (v: View): boolean => {
  if (v.offset !== 0 || v.mask) return false;
  const c = contiguousStrides(v.shape);
  return v.shape.every((d, i) => d === 1 || v.strides[i] === c[i]);
};

const fullMask = (v: View) => v.mask ?? v.shape.map((d) => [0, d] as const);
const tidyMask = (shape: Shape, m: readonly (readonly [number, number])[]) =>
  m.every(([lo, hi], i) => lo <= 0 && hi >= shape[i]!) ? null : m.map(([lo, hi], i) => [Math.max(0, lo), Math.min(shape[i]!, hi)] as const);

export const permuteView = (v: View, perm: readonly number[]): View => ({
  shape: perm.map((p) => v.shape[p]!),
  strides: perm.map((p) => v.strides[p]!),
  offset: v.offset,
  mask: v.mask ? perm.map((p) => v.mask![p]!) : null,
});

/** Expand size-1 dimensions (same rank) to `shape`. */
export const expandView = (v: View, shape: Shape): View => ({
  shape,
  strides: v.strides.map((s, i) => (v.shape[i] === shape[i] ? s : 0)),
  offset: v.offset,
  mask: v.mask ? v.mask.map(([lo, hi], i) => (v.shape[i] === shape[i] ? [lo, hi] as const : lo < hi ? [0, shape[i]!] as const : [0, 0] as const)) : null,
});

export const padView = (v: View, pads: readonly (readonly [number, number])[]): View => {
  const shape = v.shape.map((d, i) => d + pads[i]![0] + pads[i]![1]);
  const m = fullMask(v).map(([lo, hi], i) => [lo + pads[i]![0], hi + pads[i]![0]] as const);
  return {
    shape,
    strides: v.strides,
    offset: v.offset - v.strides.reduce((a, s, i) => a + s * pads[i]![0], 0),
    mask: tidyMask(shape, m),
  };
};

export const shrinkView = (v: View, bounds: readonly (readonly [number, number])[]): View => {
  const shape = bounds.map(([b, e]) => e - b);
  const m = v.mask ? tidyMask(shape, v.mask.map(([lo, hi], i) => [lo - bounds[i]![0], hi - bounds[i]![0]] as const)) : null;
  return {
    shape,
    strides: v.strides,
    offset: v.offset + v.strides.reduce((a, s, i) => a + s * bounds[i]![0], 0),
    mask: m,
  };
};

/** Reshape without copying when the strides allow it; null when a copy is needed. */
export const reshapeView = (v: View, shape: Shape): View | null => {
  if (v.mask) return v.shape.every((d, i) => v.mask![i]![0] === 0 && v.mask![i]![1] === d) ? reshapeView({ ...v, mask: null }, shape) : null;
  // Drop size-1 dims, then match groups of old and new dims with equal products.
  const old = v.shape.map((d, i) => [d, v.strides[i]!] as const).filter(([d]) => d !== 1);
  const strides = new Array<number>(shape.length).fill(0);
  let oi = 0;
  let ni = 0;
  while (ni < shape.length) {
    if (shape[ni] === 1) { ni++; continue; }
    if (oi >= old.length) return null;
    // Take old dims until their product matches a run of new dims.
    let po = old[oi]![0];
    let pn = shape[ni]!;
    const oStart = oi;
    const nStart = ni;
    while (po !== pn) {
      if (po < pn) { oi++; if (oi >= old.length) return null; po *= old[oi]![0]; }
      else { ni++; if (ni >= shape.length) return null; pn *= shape[ni]!; }
    }
    for (let k = oStart; k < oi; k++) if (old[k]![1] !== old[k + 1]![1] * old[k + 1]![0]) return null;
    let acc = old[oi]![1];
    for (let k = ni; k >= nStart; k--) {
      if (shape[k] === 1) continue;
      strides[k] = acc;
      acc *= shape[k]!;
    }
    oi++; ni++;
  }
  if (oi !== old.length) return null;
  return { shape, strides, offset: v.offset, mask: null };
};

/** Offset of a multi-index in the base buffer, or -1 where the view is masked (reads zero). */
export const offsetOf = (v: View, idx: readonly number[]): number => {
  let o = v.offset;
  for (let i = 0; i < idx.length; i++) {
    const k = idx[i]!;
    if (v.mask && (k < v.mask[i]![0] || k >= v.mask[i]![1])) return -1;
    o += k * v.strides[i]!;
  }
  return o;
};
