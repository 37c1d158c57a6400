// Movement ops as index math: a source index from an output index, strided views of chains of movement ops,
// and the layouts a matmul reads and stores through.

import type { Node } from '../node.js';
import type { Shape } from '../shape.js';
import { contiguous, permuteView, reshapeView, type View } from '../view.js';
import { broadcastView } from '../interp.js';
import { flatIndex, iadd, iconst, stridedIndex, unflatten, type Idx } from './idx.js';
import type { Cond } from './expr.js';
import { isIdentityOp, isInput, isMatmulNode, type Ctx } from './graph.js';

/** Index into a broadcast operand: leading dims dropped, size-1 dims pinned to 0. */
export const broadcastIdx = (idx: readonly Idx[], out: Shape, src: Shape): Idx[] => {
  const lead = out.length - src.length;
  return src.map((d, i) => (d === 1 ? iconst(0) : idx[i + lead]!));
};

/** Source index of a movement node (and pad validity conditions). */
export const moveIdx = (n: Node, idx: readonly Idx[]): { idx: Idx[]; conds: Cond[] } => {
  const src = n.src[0]!.shape;
  const arg = n.arg as Record<string, unknown>;
  switch (n.op.name) {
    case 'reshape': return { idx: unflatten(flatIndex(idx, n.shape), src), conds: [] };
    case 'permute': {
      const perm = arg.perm as number[];
      const out = new Array<Idx>(src.length);
      perm.forEach((p, i) => { out[p] = idx[i]!; });
      return { idx: out, conds: [] };
    }
    case 'expand': return { idx: src.map((d, i) => (d === 1 ? iconst(0) : idx[i]!)), conds: [] };
    case 'pad': {
      const pads = arg.pads as [number, number][];
      const conds: Cond[] = [];
      const out = idx.map((v, d) => {
        const [b] = pads[d]!;
        if (b === 0 && pads[d]![1] === 0) return v;
        conds.push({ idx: v, lo: b, hi: b + src[d]! });
        return iadd(v, iconst(-b));
      });
      return { idx: out, conds };
    }
    case 'shrink': return { idx: idx.map((v, d) => iadd(v, iconst((arg.bounds as [number, number][])[d]![0]))), conds: [] };
    default: {
      // Any other movement op: apply its view to a contiguous source and read through the strides.
      const v = n.op.kind === 'movement' ? n.op.view(contiguous(src), n.arg, n.shape) : null;
      if (!v || v.mask) throw new Error(`schedule: movement op '${n.op.name}' has no index rule`);
      return { idx: unflatten(stridedIndex(idx, v.strides, v.offset), src), conds: [] };
    }
  }
};

/** Compose movement ops between `o` and a materialised base into one strided view, if they allow it. */
export const viewChain = (o: Node, mat: ReadonlySet<Node>): { base: Node; view: View } | null => {
  const chain: Node[] = [];
  let b = o;
  while (!isInput(b) && !mat.has(b) && (b.op.kind === 'movement' || isIdentityOp(b))) { if (b.op.kind === 'movement') chain.push(b); b = b.src[0]!; }
  if (!isInput(b) && !mat.has(b)) return null;
  let v: View | null = contiguous(b.shape);
  for (let i = chain.length - 1; i >= 0 && v; i--) {
    const m = chain[i]!;
    v = m.op.kind === 'movement' ? m.op.view(v, m.arg, m.shape) : null;
  }
  return v && !v.mask ? { base: b, view: v } : null;
};

/** Batch addressing of a view: one stride when the batch dimensions flatten, else [size, stride] per merged group. */
export const batchLayout = (v: View, nb: number): { batch: number; batchDims?: [number, number][] } => {
  const dims: [number, number][] = [];
  for (let i = 0; i < nb; i++) {
    const d = v.shape[i]!, st = v.strides[i]!;
    if (d === 1) continue;
    const last = dims[dims.length - 1];
    if (last && last[1] === st * d) { last[0] *= d; last[1] = st; } else dims.push([d, st]);
  }
  if (dims.length === 0) return { batch: 0 };
  if (dims.length === 1) return { batch: dims[0]![1] };
  return { batch: 0, batchDims: dims };
};

/** The strided view of `o` over the first non-movement node under it (its contiguous layout), if one exists. */
export const nominalView = (o: Node): View => {
  let b = o;
  while (b.op.kind === 'movement' || isIdentityOp(b)) b = b.src[0]!;
  return viewChain(o, new Set([b]))?.view ?? broadcastView(contiguous(o.shape), o.shape);
};


/**
 * A root that only permutes/reshapes a matmul's result (e.g. attention heads back to (B, T, dim)) lets the
 * matmul store straight into the root's layout: the view, over the matmul's shape, of offsets in the root.
 */
export const storeView = (root: Node, ctx: Ctx): { m: Node; view: View } | null => {
  let v: View | null = contiguous(root.shape);
  let n = root;
  while (v && n.op.kind === 'movement' && (n.op.name === 'permute' || n.op.name === 'reshape') && !isInput(n.src[0]!) && ctx.users.get(n.src[0]!) === 1) {
    const src = n.src[0]!;
    if (n.op.name === 'permute') {
      const perm = (n.arg as { perm: readonly number[] }).perm;
      v = permuteView(v, perm.map((_, i) => perm.indexOf(i)));
    } else v = reshapeView(v, src.shape);
    n = src;
  }
  return v && n !== root && isMatmulNode(n) && !ctx.demanded.has(n) ? { m: n, view: v } : null;
};
