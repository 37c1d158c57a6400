// The scheduler's output as plain data: kernels, their operands and stores, and the options that shape them.

import type { Node } from '../node.js';
import type { Shape } from '../shape.js';
import type { Idx } from './idx.js';
import type { Cond, Expr, Reduction } from './expr.js';

/**
 * A matmul operand read in place: element (b, r, c) at offset + b·batch + r·row + c·col. Or, with `value`, one
 * computed on load (a fused prologue: elementwise and movement ops over `batch`, `row` and `col`); its slot is
 * then -1, its strides only say which way its data runs, and `node` is the operand it computes.
 */
export interface Operand {
  readonly slot: number;
  readonly offset: number;
  readonly strides: { readonly batch: number; readonly row: number; readonly col: number; readonly batchDims?: readonly (readonly [number, number])[] };
  readonly value?: Expr;
  readonly node?: Node;
}

/** Every node a kernel writes: its `out`, and an elementwise kernel's other outputs or each of a matmul's stores. */
export const kernelOuts = (k: Kernel): readonly Node[] => {
  if (k.kind === 'elementwise') return k.also ? [k.out, ...k.also.map((o) => o.out)] : [k.out];
  if (k.kind !== 'matmul') return [k.out];
  const own = k.stores ? [...new Set(k.stores.map((s) => s.out))] : [k.out];
  return k.rows ? [...own, k.rows.out] : own;
};

/**
 * A row kernel folded into the matmul that computes its rows (core/schedule/rows.ts): each workgroup's tile spans
 * whole rows of the product, so the rows' reductions finish inside it. Its expressions read the value the matmul
 * stores at (row, col) as `acc`, other buffers from the matmul's inputs, and `e` is the column; `out` gets `value`
 * per row (`perRow`) or per element.
 */
export interface RowEpilogue { readonly out: Node; readonly reductions: readonly Reduction[]; readonly value: Expr; readonly perRow: boolean }

/** One more output of an elementwise kernel: `value` stored at the kernel's element e of `out`. */
export interface ElementOut { readonly out: Node; readonly value: Expr }

export interface KernelBase { readonly out: Node; readonly inputs: readonly Node[] }
export interface AttnView { readonly offset: number; readonly strides: readonly number[] }
/**
 * One of several stores a matmul kernel makes from its accumulator: `value` (over the matmul's row and col)
 * goes to element `at` of `out` where every cond holds. Several may write one output (the parts of a
 * concatenation); the first store's output is the kernel's `out`.
 */
export interface Store { readonly out: Node; readonly value: Expr; readonly at: Idx; readonly conds: readonly Cond[] }
export type Kernel =
  /** `also`: other outputs of the same element count, each stored at element e (core/schedule/outputs.ts). */
  | (KernelBase & { readonly kind: 'elementwise'; readonly shape: Shape; readonly value: Expr; readonly also?: readonly ElementOut[] })
  | (KernelBase & { readonly kind: 'row'; readonly shape: Shape; readonly axes: readonly number[]; readonly reductions: readonly Reduction[]; readonly value: Expr; readonly perRow: boolean; readonly outIdx: Idx })
  | (KernelBase & { readonly kind: 'matmul'; readonly batch: number; readonly M: number; readonly N: number; readonly K: number; readonly a: Operand; readonly b: Operand; readonly epilogue: Expr | null; readonly batchShape: Shape; readonly c: Operand | null; readonly stores?: readonly Store[]; readonly rows?: RowEpilogue })
  | (KernelBase & { readonly kind: 'gather' | 'scatterAdd' })
  /** NF4 matmul (ops/nf4.ts): inputs are the op's sources (x, codes, code book, statistics). */
  | (KernelBase & { readonly kind: 'nf4' })
  /**
   * Fused attention (ops/attention.ts): inputs as the op's sources, except that q, k and v may be read in place
   * through a strided view of a stored node (`views[i]`, over the source's shape; absent: contiguous).
   */
  | (KernelBase & { readonly kind: 'attention'; readonly views?: readonly (AttnView | null)[] })
  /** writeAt: inputs [dst, src, pos]; `lastUse` when this kernel is the only reader of dst (it may write in place). */
  | (KernelBase & { readonly kind: 'update'; readonly axis: number; readonly lastUse: boolean });

export interface ScheduleOpts {
  /** false: every elementwise/reduce op is its own kernel (views still fold). For testing fusion. */
  readonly fuse?: boolean;
  /** Most buffers a kernel may read (the adapter's storage-buffer limit less the output). Default 7. */
  readonly maxInputs?: number;
  /**
   * Matmul operands computed on load: the most work (ops plus buffers read) per operand element, where each
   * element feeds 128 or more multiply-adds (scaled down for fewer). 0 turns prologues off. Default 32. A CPU
   * adapter wants a smaller budget: lavapipe computes a tile's operands in a scalar loop.
   */
  readonly prologueBudget?: number;
  /**
   * Matmuls with fewer rows run as one GEMV per row (core/wgsl/matmul.ts skinnyRows), which takes no row epilogue:
   * row kernels are not folded into them. Default 2 (only M = 1); a CPU adapter's is larger.
   */
  readonly skinnyRows?: number;
}
