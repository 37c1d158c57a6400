// The scheduler: graph → kernels, as plain data. Elementwise and movement chains fuse into their consumer;
// reductions whose results are broadcast back over the same rows share one "row kernel" with their prologue
// and epilogue (softmax, rmsNorm, logsumexp are one kernel); matmul takes a fused epilogue and reads
// transposed/broadcast operands in place; views become index math, never copies.

import { toposort, type Node } from '../node.js';
import { kernelOuts, type Kernel, type ScheduleOpts } from './kernel.js';
import { isInput, largestFitting } from './graph.js';
import { materialise } from './materialise.js';
import { buildStores, sliceGroups, type SliceGroup } from './slices.js';
import { buildKernel } from './build.js';
import { foldRows } from './rows.js';
import { mergeOutputs } from './outputs.js';
import { PROLOGUE_BUDGET } from './materialise.js';

export type { Expr, Reduction, Cond } from './expr.js';
export { kernelOuts, type AttnView, type ElementOut, type Kernel, type Operand, type RowEpilogue, type ScheduleOpts, type Store } from './kernel.js';
export { rowDomain } from './build.js';

/** Kernels in execution order for computing `roots` (realised nodes and buffers are inputs). */
export const schedule = (roots: readonly Node[], opts: ScheduleOpts = {}): Kernel[] => {
  const fuse = opts.fuse !== false;
  const budget = fuse ? opts.prologueBudget ?? PROLOGUE_BUDGET : 0;
  const order = toposort(roots);
  const ctx = materialise(order, roots, fuse, budget);
  const { mat, users } = ctx;
  const kernels: Kernel[] = [];
  const maxInputs = opts.maxInputs ?? 7;
  const groups = fuse ? sliceGroups(order, users, mat, new Set(roots)) : new Map<Node, SliceGroup>();
  const done = new Set<Node>();
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i]!;
    if (!mat.has(n) || isInput(n) || done.has(n)) continue;
    const g = groups.get(n);
    const stored = g ? buildStores(g, ctx, maxInputs) : null;
    if (stored) {
      for (const o of [g!.m, ...kernelOuts(stored)]) done.add(o);
      kernels.push(stored);
      continue;
    }
    let k = buildKernel(n, ctx);
    // Too many buffers for one kernel: a matmul first gives up computing its operands on load; otherwise the
    // largest inline subexpression that fits is materialised, and the kernel rebuilt.
    while (k.inputs.length + (k.kind === 'matmul' ? 1 : 0) > maxInputs) {
      const computed = k.kind === 'matmul' ? [k.a.node, k.b.node].find((o) => o !== undefined) : undefined;
      if (computed) { mat.add(computed); k = buildKernel(n, ctx); continue; }
      const split = largestFitting(k.out, ctx, maxInputs);
      if (!split) break;
      mat.add(split);
      k = buildKernel(n, ctx);
    }
    kernels.push(k);
  }
  if (ctx.alias.size) kernels.forEach((k, i) => { kernels[i] = { ...k, inputs: k.inputs.map((n) => ctx.alias.get(n) ?? n) } as Kernel; });
  return fuse ? mergeOutputs(foldRows(kernels.reverse(), maxInputs, opts.skinnyRows), maxInputs) : kernels.reverse();
};
