// Row kernels folded into the matmul that computes their rows: rmsNorm's 1/rms after a residual projection, the
// rmsNorm backward after an input gradient. Where one workgroup's tile spans whole rows of the product (N at most
// ROW_EPILOGUE_MAX_N: every adapter's tile is at least that wide), the rows' reductions finish in the matmul's
// epilogue, its invocations combining their partial sums through workgroup memory: one kernel instead of two,
// and the product is not read back by the second.

import type { Node } from '../node.js';
import { numel } from '../shape.js';
import { flatIndex, idxKey } from './idx.js';
import { rebase, type Expr } from './expr.js';
import { kernelOuts, type Kernel, type RowEpilogue } from './kernel.js';
import { rowDomain } from './build.js';

const ROW_EPILOGUE_MAX_N = 64;

type Matmul = Extract<Kernel, { kind: 'matmul' }>;
type Row = Extract<Kernel, { kind: 'row' }>;

/** The matmul `m` with row kernel `r` folded in, or null when it cannot take it. */
const fold = (m: Matmul, r: Row, maxInputs: number, minRows: number): Matmul | null => {
  const x = m.out;
  const last = r.shape.length - 1;
  if (m.stores || m.rows || m.c || m.batch !== 1 || m.M < minRows || m.N < 2 || m.N > ROW_EPILOGUE_MAX_N || x.dtype !== 'f32') return null;
  if (r.out.dtype !== 'f32' || r.axes.length !== 1 || r.axes[0] !== last || r.shape[last] !== m.N || numel(r.shape) !== m.M * m.N) return null;
  if (r.reductions.some((d) => d.dtype !== 'f32') || numel(x.shape) !== m.M * m.N) return null;
  const own = r.inputs.indexOf(x);
  if (own < 0) return null;
  const inputs = [...m.inputs];
  const slot = r.inputs.map((n) => { let s = inputs.indexOf(n); if (s < 0 && n !== x) { s = inputs.length; inputs.push(n); } return s; });
  if (inputs.length + 2 > maxInputs + 1) return null;
  const at = idxKey(flatIndex(rowDomain(r.shape, r.axes).domainIdx, r.shape)); // x is contiguous, of r's size
  const memo = new Map<Expr, Expr | null>();
  const acc = new Map<number, Expr>([[own, { e: 'acc', dtype: x.dtype, elem: true }]]); // the stored value, read at r's own element
  const reductions = r.reductions.map((d) => ({ ...d, src: rebase(d.src, slot, acc, at, memo) }));
  const value = rebase(r.value, slot, acc, at, memo);
  if (!value || reductions.some((d) => d.src === null)) return null;
  const rows: RowEpilogue = { out: r.out, reductions: reductions as RowEpilogue['reductions'], value, perRow: r.perRow };
  return { ...m, inputs, rows };
};

/**
 * Fold each row kernel into the matmul producing the rows it reduces, where one can take it. The fused kernel runs
 * where the matmul was when everything else the row kernel reads is computed by then, else where the row kernel
 * was when nothing in between reads the product.
 */
export const foldRows = (kernels: readonly Kernel[], maxInputs: number, minRows = 2): Kernel[] => {
  const ks = [...kernels];
  for (let j = 0; j < ks.length; j++) {
    const r = ks[j]!;
    if (r.kind !== 'row') continue;
    const producer = new Map<Node, number>();
    ks.forEach((k, i) => kernelOuts(k).forEach((o) => producer.set(o, i)));
    const candidates = r.inputs.map((n) => producer.get(n) ?? -1).filter((i) => i >= 0 && ks[i]!.kind === 'matmul').sort((a, b) => b - a);
    for (const i of candidates) {
      const m = ks[i] as Matmul;
      const fused = fold(m, r, maxInputs, minRows);
      if (!fused) continue;
      const early = r.inputs.every((n) => n === m.out || (producer.get(n) ?? -1) < i);
      const outs = new Set(kernelOuts(m));
      const late = ks.slice(i + 1, j).every((k) => !k.inputs.some((n) => outs.has(n)));
      if (!early && !late) continue;
      if (early) { ks[i] = fused; ks.splice(j, 1); } else { ks[j] = fused; ks.splice(i, 1); }
      j--;
      break;
    }
  }
  return ks;
};
