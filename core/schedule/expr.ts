// The plain-data form of a fused kernel body: an expression DAG over loads of materialised buffers,
// indexed symbolically. The scheduler builds it; core/wgsl renders it.

import type { DType } from '../dtype.js';
import type { ElementwiseOp, ReduceOp } from '../node.js';
import { idxKey, usesVar, type Idx } from './idx.js';

export interface Cond { readonly idx: Idx; readonly lo: number; readonly hi: number }

export type Expr =
  | { readonly e: 'load'; readonly slot: number; readonly idx: Idx; readonly dtype: DType; readonly elem: boolean }
  | { readonly e: 'op'; readonly op: ElementwiseOp; readonly arg: unknown; readonly src: readonly Expr[]; readonly i: Idx | null; readonly dtype: DType; readonly elem: boolean }
  | { readonly e: 'mask'; readonly conds: readonly Cond[]; readonly src: Expr; readonly dtype: DType; readonly elem: boolean }
  | { readonly e: 'red'; readonly id: number; readonly dtype: DType; readonly elem: false }
  | { readonly e: 'acc'; readonly dtype: DType; readonly elem: true }
  /** A padded region's value where the index is known, when scheduling, to lie outside it. */
  | { readonly e: 'zero'; readonly dtype: DType; readonly elem: false };

/** A reduction computed inside a row kernel: one workgroup per row folds `src` over the row. */
export interface Reduction { readonly id: number; readonly op: ReduceOp; readonly src: Expr; readonly dtype: DType }

/** Element-level (depends on the per-element loop variables `a…`/flat `e`) or row-level. */
export const isElem = (idx: Idx | null): boolean => idx !== null && usesVar(idx, 'a');

/**
 * `x` with input slots renumbered by `slot`, and every load of a slot in `subst` replaced by that value where it
 * reads index `at` (an idxKey, the consumer's own element): null when one reads it at another index.
 */
export const rebase = (x: Expr, slot: readonly number[], subst: ReadonlyMap<number, Expr>, at: string, memo = new Map<Expr, Expr | null>()): Expr | null => {
  if (memo.has(x)) return memo.get(x)!;
  let r: Expr | null;
  switch (x.e) {
    case 'load': {
      const v = subst.get(x.slot);
      r = v === undefined ? { ...x, slot: slot[x.slot]! } : idxKey(x.idx) === at ? v : null;
      break;
    }
    case 'op': {
      const src = x.src.map((s) => rebase(s, slot, subst, at, memo));
      r = src.every((s) => s !== null) ? { ...x, src: src as Expr[], elem: x.elem || src.some((s) => s!.elem) } : null;
      break;
    }
    case 'mask': {
      const src = rebase(x.src, slot, subst, at, memo);
      r = src ? { ...x, src, elem: x.elem || src.elem } : null;
      break;
    }
    default: r = x;
  }
  memo.set(x, r);
  return r;
};
