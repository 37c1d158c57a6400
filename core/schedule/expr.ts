// The plain-data form of a fused kernel body: an expression DAG over loads of materialised buffers,
// indexed symbolically. The scheduler builds it; core/wgsl renders it.

import type { DType } from '../dtype.js';
import type { ElementwiseOp, ReduceOp } from '../node.js';
import { usesVar, type Idx } from './idx.js';

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
