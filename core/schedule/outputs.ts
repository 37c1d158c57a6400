// Elementwise kernels with several outputs. A stored elementwise value that only one later elementwise kernel of the
// same element count reads, each element at its own index, is computed and stored by that kernel instead: AdamW's
// new moments m and v, which the parameter update reads, are one pass over (g, m, v, θ) writing (m, v, θ) rather
// than three kernels each reading the gradient again.

import type { Node } from '../node.js';
import { numel } from '../shape.js';
import { flatIndex, idxKey, ivar, unflatten } from './idx.js';
import { rebase, type Expr } from './expr.js';
import { kernelOuts, type ElementOut, type Kernel } from './kernel.js';

type Elementwise = Extract<Kernel, { kind: 'elementwise' }>;

/** `k` computing and storing `p`'s outputs too, or null when they do not fit in `maxInputs + 1` bindings. */
const absorb = (k: Elementwise, p: Elementwise, maxInputs: number): Elementwise | null => {
  const n = numel(k.shape);
  const own = k.inputs.flatMap((x, s) => (kernelOuts(p).includes(x) ? [s] : []));
  const inputs = k.inputs.filter((_, s) => !own.includes(s));
  const slotOf = (x: Node) => { let s = inputs.indexOf(x); if (s < 0) { s = inputs.length; inputs.push(x); } return s; };
  const kSlots = k.inputs.map((x, s) => (own.includes(s) ? -1 : slotOf(x)));
  const pSlots = p.inputs.map(slotOf);
  const outs = 1 + (k.also?.length ?? 0) + 1 + (p.also?.length ?? 0);
  if (inputs.length + outs > maxInputs + 1) return null;
  // Both kernels' element e is flat element e of every output (same element count, contiguous stores).
  const at = idxKey(flatIndex(unflatten(ivar('e', n), k.shape), k.shape));
  const memo = new Map<Expr, Expr | null>();
  const pOuts: ElementOut[] = [{ out: p.out, value: p.value }, ...(p.also ?? [])].map((o) => ({ ...o, value: rebase(o.value, pSlots, new Map(), at, memo)! }));
  const subst = new Map(own.map((s) => [s, pOuts.find((o) => o.out === k.inputs[s])!.value] as const));
  const kmemo = new Map<Expr, Expr | null>();
  const value = rebase(k.value, kSlots, subst, at, kmemo);
  const also = (k.also ?? []).map((o) => ({ ...o, value: rebase(o.value, kSlots, subst, at, kmemo) }));
  if (!value || also.some((o) => o.value === null)) return null;
  return { ...k, inputs, value, also: [...(also as ElementOut[]), ...pOuts] };
};

/**
 * Merge each elementwise kernel into the later elementwise kernel that alone reads its outputs, where the reader
 * has the same element count, reads them only at its own element, and the buffers fit. The merged kernel runs where
 * the reader was: everything the producer read is computed by then, and nothing in between reads its outputs.
 */
export const mergeOutputs = (kernels: readonly Kernel[], maxInputs: number): Kernel[] => {
  const ks = [...kernels];
  for (let j = 0; j < ks.length; j++) {
    const k = ks[j]!;
    if (k.kind !== 'elementwise') continue;
    const producer = new Map<Node, number>();
    ks.forEach((x, i) => kernelOuts(x).forEach((o) => producer.set(o, i)));
    const candidates = [...new Set(k.inputs.map((x) => producer.get(x) ?? -1))].filter((i) => i >= 0 && i < j).sort((a, b) => b - a);
    for (const i of candidates) {
      const p = ks[i]!;
      if (p.kind !== 'elementwise' || numel(p.shape) !== numel(k.shape)) continue;
      const outs = new Set(kernelOuts(p));
      if (ks.some((x, xi) => xi !== j && x.inputs.some((n) => outs.has(n)))) continue;
      const merged = absorb(ks[j] as Elementwise, p, maxInputs);
      if (!merged) continue;
      ks[j] = merged;
      ks.splice(i, 1);
      j--;
    }
  }
  return ks;
};
