// Slice groups: one matmul kernel storing every slice of its product that stored nodes take (q/k/v weight updates,
// the parts of the SwiGLU backward), instead of writing the product for other kernels to read.

import type { Node } from '../node.js';
import { numel } from '../shape.js';
import { flatIndex, iadd, iconst, idxKey, span, unflatten, type Idx } from './idx.js';
import type { Cond } from './expr.js';
import type { Kernel, Store } from './kernel.js';
import { isInput, isMatmulNode, matmulRowCol, sameShape, type Ctx } from './graph.js';
import { buildBody } from './build.js';

/** Stored nodes that each take slices of one matmul's result (through slices, transposes, reshapes and pads,
 * then elementwise ops): for each placement, the member's index over the matmul's (row, col), and where it lies. */
export interface SliceGroup { readonly m: Node; readonly via: readonly Node[]; readonly members: readonly { readonly x: Node; readonly idx: readonly Idx[]; readonly conds: readonly Cond[] }[] }

/** A movement op's index over its output, given its source's index (the inverse of moveIdx), or null. */
const moveBack = (n: Node, idx: readonly Idx[], conds: Cond[]): Idx[] | null => {
  const arg = n.arg as Record<string, unknown>;
  switch (n.op.name) {
    case 'reshape': return unflatten(flatIndex(idx, n.src[0]!.shape), n.shape);
    case 'permute': return (arg.perm as number[]).map((p) => idx[p]!);
    case 'pad': return idx.map((v, d) => iadd(v, iconst((arg.pads as [number, number][])[d]![0])));
    case 'shrink': return idx.map((v, d) => {
      const [lo, hi] = (arg.bounds as [number, number][])[d]!;
      if (lo !== 0 || hi !== n.src[0]!.shape[d]) conds.push({ idx: v, lo, hi });
      return iadd(v, iconst(-lo));
    });
    default: return null;
  }
};

/**
 * Matmuls whose every reader leads, through views and elementwise ops, only to stored nodes that take their own
 * slices of the result: the weights of a concatenated projection (q, k, v), each updated from its slice of the
 * gradient; or one node made of several parts, each a function of the product (the SwiGLU backward,
 * [dA·up·silu′(gate) | dA·silu(gate)]). One matmul kernel then stores them all, instead of writing the product
 * for other kernels to read. Keyed by each member.
 */
export const sliceGroups = (order: readonly Node[], users: ReadonlyMap<Node, number>, mat: ReadonlySet<Node>, roots: ReadonlySet<Node>): Map<Node, SliceGroup> => {
  const readers = new Map<Node, Node[]>();
  for (const n of order) if (!isInput(n)) for (const s of n.src) { const r = readers.get(s); if (r) r.push(n); else readers.set(s, [n]); }
  type Member = SliceGroup['members'][number];
  // Every reader of `from`, up to the stored nodes it feeds (each a member, at the index it has there).
  const collect = (from: Node, idx: readonly Idx[], conds: readonly Cond[], g: { members: Member[]; via: Set<Node> }): boolean => {
    const rs = readers.get(from) ?? [];
    if (rs.length === 0 || new Set(rs).size !== rs.length || g.members.length + g.via.size > 64) return false;
    for (const n of rs) {
      const cs = [...conds];
      const at = n.op.kind === 'movement' ? moveBack(n, idx, cs) : n.op.kind === 'elementwise' && sameShape(n.shape, from.shape) ? idx : null;
      if (!at) return false;
      if (mat.has(n)) {
        if (n.op.kind !== 'elementwise' || n.dtype !== 'f32') return false;
        const key = (b: { x: Node; idx: readonly Idx[]; conds: readonly Cond[] }) => `${b.x.id}|${b.idx.map(idxKey)}|${b.conds.map((c) => `${idxKey(c.idx)}:${c.lo}:${c.hi}`)}`;
        if (!g.members.some((b) => key(b) === key({ x: n, idx: at, conds: cs }))) g.members.push({ x: n, idx: at, conds: cs });
        continue;
      }
      g.via.add(n);
      if (!collect(n, at, cs, g)) return false;
    }
    return true;
  };
  const groups = new Map<Node, SliceGroup>();
  for (const m of order) {
    if (isInput(m) || !isMatmulNode(m) || m.shape.length !== 2 || roots.has(m)) continue;
    const g = { m, members: [] as Member[], via: new Set<Node>() };
    if (!collect(m, matmulRowCol(m), [], g) || g.members.length < 2 || !coversExactly(m, g.members)) continue;
    const xs = new Set(g.members.map((b) => b.x));
    // A member something else reads must be the only one: the kernel runs where the last member was due.
    if (xs.size > 1 && [...xs].some((x) => users.has(x))) continue;
    const group = { m, members: g.members, via: [...g.via] };
    for (const x of xs) groups.set(x, group);
  }
  return groups;
};

/**
 * Whether the members' placements write each of their elements exactly once: every condition bounds `row` or
 * `col` itself, and each placement fills the box its index spans (the index maps are one-to-one), the boxes of
 * one member are disjoint, and their volumes add up to its size.
 */
const coversExactly = (m: Node, members: SliceGroup['members']): boolean => {
  const boxes = new Map<Node, (readonly [number, number])[][]>();
  for (const b of members) {
    if (b.conds.some((c) => c.idx.k !== 'var')) return false;
    const vars = new Map<string, readonly [number, number]>();
    let points = 1;
    for (const v of matmulRowCol(m)) {
      if (v.k !== 'var') continue;
      const lo = Math.max(0, ...b.conds.filter((c) => idxKey(c.idx) === v.name).map((c) => c.lo));
      const hi = Math.min(v.max, ...b.conds.filter((c) => idxKey(c.idx) === v.name).map((c) => c.hi));
      if (hi <= lo) return false;
      vars.set(v.name, [lo, hi - 1]);
      points *= hi - lo;
    }
    const box = b.idx.map((i) => span(i, vars));
    if (box.some((s) => s === null)) return false;
    const spans = box as (readonly [number, number])[];
    if (spans.some(([lo, hi], d) => lo < 0 || hi >= b.x.shape[d]!) || spans.reduce((a, [lo, hi]) => a * (hi - lo + 1), 1) !== points) return false;
    const mine = boxes.get(b.x) ?? [];
    if (mine.some((o) => o.every(([lo, hi], d) => lo <= spans[d]![1] && spans[d]![0] <= hi))) return false;
    mine.push(spans);
    boxes.set(b.x, mine);
  }
  return [...boxes].every(([x, bs]) => bs.reduce((a, s) => a + s.reduce((v, [lo, hi]) => v * (hi - lo + 1), 1), 0) === numel(x.shape));
};

/**
 * The kernel of a slice group: the matmul, each member's value computed from the accumulator and stored where
 * its slice lies. Null when it cannot be one kernel (the buffers do not fit, or a member reads the product
 * elsewhere than at its own element); the members are then built as usual.
 */
export const buildStores = (g: SliceGroup, ctx: Ctx, maxInputs: number): Kernel | null => {
  const { mat, demanded } = ctx;
  if (g.via.some((n) => mat.has(n) || demanded.has(n))) return null; // stored for another reader: not a view any more
  for (;;) {
    const inputs: Node[] = [];
    mat.delete(g.m);
    const stores: Store[] = [];
    for (const b of g.members) {
      const body = buildBody(b.x, ctx, { inputs, idx: b.idx, acc: g.m });
      if (mat.has(g.m) || demanded.has(g.m) || body.kind !== 'elementwise') { mat.add(g.m); return null; }
      stores.push({ out: b.x, value: body.value, at: flatIndex(b.idx, b.x.shape), conds: b.conds });
    }
    const k = buildBody(g.m, ctx, { inputs });
    mat.add(g.m);
    if (k.kind !== 'matmul') return null;
    if (k.inputs.length + stores.length <= maxInputs + 1) return { ...k, out: stores[0]!.out, stores };
    const computed = [k.a.node, k.b.node].find((o) => o !== undefined);
    if (!computed) return null;
    mat.add(computed); // too many buffers: read the operand from memory, as a lone matmul would
  }
};
