// Phase 2: one kernel per materialised node. Its domain (elements, rows of a reduction, or a matmul's tile), and
// its value as an expression over loads of buffers, with the matmul's operands read in place or computed on load.

import type { Node, ReduceOp } from '../node.js';
import { numel, type Shape } from '../shape.js';
import { contiguous, type View } from '../view.js';
import { broadcastView } from '../interp.js';
import { bound, flatIndex, iconst, idxKey, ivar, span, unflatten, usesVar, type Idx } from './idx.js';
import type { Expr, Reduction } from './expr.js';
import type { Kernel, Operand } from './kernel.js';
import { effective, inlineReach, isIdentityOp, isInput, isMatmulNode, onlyFeeds, reducesUnder, rowsOf, matmulRowCol, sameShape, type Ctx } from './graph.js';
import { prologueable } from './materialise.js';
import { batchLayout, broadcastIdx, moveIdx, nominalView, storeView, viewChain } from './views.js';

/** A root that only reshapes a node used nowhere else is written directly by that node's kernel. */
export const buildKernel = (root: Node, ctx: Ctx): Kernel => {
  const { mat, users } = ctx;
  const st = storeView(root, ctx);
  if (st) {
    mat.delete(st.m);
    const k = buildBody(st.m, ctx);
    if (k.kind === 'matmul') {
      const r = st.m.shape.length;
      return { ...k, out: root, c: { slot: -1, offset: st.view.offset, strides: { ...batchLayout(st.view, k.batchShape.length), row: st.view.strides[r - 2]!, col: st.view.strides[r - 1]! } } };
    }
    mat.add(st.m);
  }
  let x = root;
  while ((x.op.name === 'reshape' || isIdentityOp(x)) && !isInput(x.src[0]!) && users.get(x.src[0]!) === 1 && x.src[0]!.op.kind !== 'movement') x = x.src[0]!;
  // x's value goes straight into root's buffer, byte for byte the same layout: kernels already built that bind x's
  // buffer (a matmul reading the reshape as a view of x, beside an NF4 kernel binding the reshape) read root's.
  if (x !== root) { if (mat.delete(x)) ctx.alias.set(x, root); }
  return { ...buildBody(x, ctx), out: root };
};


/**
 * One kernel computing `x`. With `sib`, part of a slice group's kernel: the buffers read go to the group's
 * `inputs`, and with `idx` the body is `x`'s value at that index, `acc` being the accumulator of matmul `acc`.
 */
export const buildBody = (x: Node, ctx: Ctx, sib?: { readonly inputs: Node[]; readonly idx?: readonly Idx[]; readonly acc?: Node }): Kernel => {
  const { mat, users, demanded } = ctx;
  const inputs: Node[] = sib?.inputs ?? [];
  const slotOf = (n: Node) => { let s = inputs.indexOf(n); if (s < 0) { s = inputs.length; inputs.push(n); } return s; };
  const need = (n: Node) => { mat.add(n); demanded.add(n); };
  const op = x.op;
  if (op.kind === 'custom' && op.template !== 'matmul') {
    const src = x.src.map((s) => { while (isIdentityOp(s) && !mat.has(s)) s = s.src[0]!; return s; });
    if (op.template === 'attention') {
      // q, k and v that are views of a stored node (v, a slice of the fused q/k/v projection) are read in place:
      // rows contiguous, and (for the vec4 loads of a head dimension divisible by 4) 16-byte aligned.
      const views = src.map((s, i) => {
        if (i > 2 || isInput(s) || mat.has(s)) return null;
        const vc = viewChain(s, mat);
        const v = vc?.view, D = s.shape[s.shape.length - 1]!;
        const aligned = v && (D % 4 !== 0 || [v.offset, ...v.strides.slice(0, -1)].every((t) => t % 4 === 0));
        return vc && v && v.strides[v.strides.length - 1] === 1 && aligned ? { base: vc.base, view: { offset: v.offset, strides: v.strides } } : null;
      });
      const bound = src.map((s, i) => views[i]?.base ?? s);
      for (const s of bound) if (!isInput(s)) need(s);
      // Attention binds its sources positionally, repeats included.
      return { kind: 'attention', out: x, inputs: bound, ...(views.some((v) => v) ? { views: views.map((v) => v?.view ?? null) } : {}) };
    }
    for (const s of src) if (!isInput(s)) need(s);
    src.forEach(slotOf);
    if (op.template === 'update') return { kind: 'update', out: x, inputs, axis: (x.arg as { axis: number }).axis, lastUse: users.get(x.src[0]!) === 1 };
    if (op.template === 'nf4') return { kind: 'nf4', out: x, inputs };
    return { kind: op.template, out: x, inputs };
  }

  // The kernel's domain: a row kernel when a reduction over the output's rows is inside; else a matmul with
  // this node as its epilogue; else one invocation per element.
  let shape: Shape = x.shape;
  let axes: readonly number[] = [];
  let perRow = false;
  let mm: Node | null = null;
  if (sib?.idx) {
    mm = sib.acc!;
  } else if (op.kind === 'reduce') {
    ({ src: { shape }, axes } = effective(x, users));
    perRow = true;
  } else if (op.kind === 'custom') {
    mm = x;
  } else {
    const reach = inlineReach(x, mat);
    const reds = reach.filter((n) => n.op.kind === 'reduce');
    const full = reds.find((n) => sameShape(effective(n, users).src.shape, x.shape));
    const rowLevel = reds.find((n) => numel(n.shape) === numel(x.shape));
    const red = full ?? rowLevel;
    if (red) {
      ({ src: { shape }, axes } = effective(red, users));
      perRow = !full;
    } else {
      const fits = (n: Node) => sameShape(n.shape, x.shape) || rowsOf(n, x) || (n.shape.length === 2 && sameShape([n.shape[1]!, n.shape[0]!], x.shape));
      mm = reach.find((n) => isMatmulNode(n) && fits(n) && !demanded.has(n) && onlyFeeds(n, x, users)) ?? null;
      if (mm) mat.delete(mm);
    }
  }
  const inA = (d: number) => axes.includes(d);
  const keep = shape.map((n, d) => (inA(d) ? 1 : n));
  const rows = numel(keep);
  let domainIdx: readonly Idx[];
  let rowIdx: readonly Idx[] = [];
  if (sib?.idx) {
    domainIdx = sib.idx;
  } else if (axes.length) {
    ({ rowIdx, domainIdx } = rowDomain(shape, axes));
  } else if (mm && rowsOf(mm, x)) {
    // x's leading dimensions are the matmul's rows, flattened: the matmul's row index, unflattened.
    const [row, col] = matmulRowCol(mm);
    domainIdx = [...unflatten(row, x.shape.slice(0, -1)), col];
  } else if (mm) {
    const b = shape.slice(0, -2);
    domainIdx = [...unflatten(ivar('batch', numel(b)), b), shape[shape.length - 2] === 1 ? iconst(0) : ivar('row', shape[shape.length - 2]!), shape[shape.length - 1] === 1 ? iconst(0) : ivar('col', shape[shape.length - 1]!)];
  } else {
    domainIdx = unflatten(ivar('e', numel(shape)), shape);
  }
  const reductions: Reduction[] = [];
  const redOf = new Map<Node, Expr>();
  const memo = new Map<string, Expr>();
  const elemOf = (i: Idx | null) => i !== null && usesVar(i, 'e');
  const isIdentity = (idx: readonly Idx[], want: readonly Idx[]) => idx.length === want.length && idx.every((v, d) => idxKey(v) === idxKey(want[d]!));
  // Where the epilogue reads the matmul's accumulator: its own (row, col) in the kernel's domain, swapped when the
  // kernel computes the transposed product.
  let transposed = false;
  const accIdx = (m: Node): readonly Idx[] => {
    if (sib?.idx) return matmulRowCol(m);
    if (transposed) return [domainIdx[1]!, domainIdx[0]!];
    return rowsOf(m, x) ? matmulRowCol(m) : domainIdx;
  };

  // A per-row value (logsumexp = log Σ exp(x − max) + max, say) of reductions this kernel cannot compute is
  // materialised whole — one kernel computing all of its reductions — rather than reduction by reduction.
  const rowValueElsewhere = (n: Node): boolean => {
    const rs = reducesUnder(n, ctx);
    return rs.length > 0 && rs.some((r) => numel(r.shape) === numel(n.shape)) && rs.every((r) => {
      const eff = effective(r, users);
      return !(sameShape(eff.src.shape, shape) && sameShape(eff.axes, axes));
    });
  };

  const load = (n: Node, idx: readonly Idx[]): Expr => {
    const flat = flatIndex(idx, n.shape);
    return { e: 'load', slot: slotOf(n), idx: flat, dtype: n.dtype, elem: elemOf(flat) };
  };

  const walk = (n: Node, idx: readonly Idx[]): Expr => {
    const key = `${n.id}|${idx.map(idxKey).join(',')}`;
    const hit = memo.get(key);
    if (hit) return hit;
    const r = walkNew(n, idx);
    memo.set(key, r);
    return r;
  };

  const walkNew = (n: Node, idx: readonly Idx[]): Expr => {
    if (n !== x && (isInput(n) || mat.has(n))) { if (!isInput(n)) demanded.add(n); return load(n, idx); }
    const o = n.op;
    switch (o.kind) {
      case 'buffer': return load(n, idx);
      case 'elementwise': {
        if (o.identity) return walk(n.src[0]!, idx);
        if (n !== x && rowValueElsewhere(n)) { need(n); return load(n, idx); }
        const src = n.src.map((s) => walk(s, broadcastIdx(idx, n.shape, s.shape)));
        const i = n.src.length === 0 && n.shape.length === 1 ? idx[0]! : null;
        return { e: 'op', op: o, arg: n.arg, src, i, dtype: n.dtype, elem: src.some((s) => s.elem) || elemOf(i) };
      }
      case 'movement': {
        const { idx: si, conds: all } = moveIdx(n, idx);
        // Conditions the index's range already decides (a matmul storing one part of a concatenation).
        const spans = all.map((c) => span(c.idx));
        if (spans.some((s, j) => s && (s[1] < all[j]!.lo || s[0] >= all[j]!.hi))) return { e: 'zero', dtype: n.dtype, elem: false };
        const conds = all.filter((c, j) => !(spans[j] && spans[j][0] >= c.lo && spans[j][1] < c.hi));
        const inner = walk(n.src[0]!, si);
        return conds.length ? { e: 'mask', conds, src: inner, dtype: n.dtype, elem: inner.elem || conds.some((c) => elemOf(c.idx)) } : inner;
      }
      case 'reduce': {
        const eff = effective(n, users);
        const aligned = axes.length > 0 && sameShape(eff.src.shape, shape) && sameShape(eff.axes, axes)
          && idxKey(flatIndex(idx, n.shape)) === idxKey(flatIndex(rowIdx, rowIdx.map(bound)));
        if (!aligned && n !== x) { need(n); return load(n, idx); }
        let red = redOf.get(n);
        if (!red) {
          const src = walk(eff.src, domainIdx);
          const id = reductions.length;
          reductions.push({ id, op: o as ReduceOp, src, dtype: n.dtype });
          red = { e: 'red', id, dtype: n.dtype, elem: false };
          redOf.set(n, red);
        }
        return red;
      }
      case 'custom':
        if (n === mm && isIdentity(idx, accIdx(mm))) return { e: 'acc', dtype: n.dtype, elem: true };
        need(n);
        return load(n, idx);
    }
  };

  if (op.kind === 'custom') return matmulKernel(x, null, slotOf, inputs, need, ctx, walk);
  if (sib?.idx) return { kind: 'elementwise', out: x, inputs, shape: x.shape, value: walk(x, domainIdx) };
  if (mm) {
    const m = mm;
    const value = walk(x, domainIdx);
    if (!mat.has(m)) return matmulKernel(m, { out: x, value }, slotOf, inputs, need, ctx, walk);
    if (m.shape.length === 2 && x.shape.length === 2 && m.shape[0] === x.shape[1] && m.shape[1] === x.shape[0]) {
      // Read transposed (a weight update reading its gradient): the kernel computes the transposed product, whose
      // epilogue then reads it in place.
      mat.delete(m); demanded.delete(m); memo.clear(); inputs.length = 0; transposed = true;
      const valueT = walk(x, domainIdx);
      if (!mat.has(m)) return matmulKernel(m, { out: x, value: valueT }, slotOf, inputs, need, ctx, walk, true);
    }
    return { kind: 'elementwise', out: x, inputs, shape: x.shape, value: walkFresh() };
  }
  function walkFresh(): Expr {
    // The matmul was read at another index, so it is materialised: redo the body as a plain kernel.
    memo.clear(); inputs.length = 0; mm = null;
    domainIdx = unflatten(ivar('e', numel(x.shape)), x.shape);
    return walk(x, domainIdx);
  }
  if (!axes.length) return { kind: 'elementwise', out: x, inputs, shape, value: walk(x, domainIdx) };
  const value = perRow ? walk(x, unflatten(ivar('row', rows), x.shape)) : walk(x, domainIdx);
  return { kind: 'row', out: x, inputs, shape, axes, reductions, value, perRow, outIdx: perRow ? ivar('row', rows) : flatIndex(domainIdx, shape) };
};

/**
 * A row kernel's index variables over `shape` reduced along `axes`: `row` over the kept dimensions (flattened) and
 * `e` over the reduced ones; `rowIdx` has 0 at the reduced dimensions, `domainIdx` the element's full index.
 */
export const rowDomain = (shape: Shape, axes: readonly number[]): { rowIdx: Idx[]; domainIdx: Idx[] } => {
  const inA = (d: number) => axes.includes(d);
  const rowIdx = unflatten(ivar('row', numel(shape.map((n, d) => (inA(d) ? 1 : n)))), shape.map((n, d) => (inA(d) ? 1 : n)));
  const aDims = shape.flatMap((_, d) => (inA(d) ? [d] : []));
  const aIdx = unflatten(ivar('e', numel(aDims.map((d) => shape[d]!))), aDims.map((d) => shape[d]!));
  return { rowIdx, domainIdx: rowIdx.map((v, d) => (inA(d) ? aIdx[aDims.indexOf(d)]! : v)) };
};

const matmulKernel = (
  m: Node, epi: { out: Node; value: Expr } | null, slotOf: (n: Node) => number, inputs: Node[], need: (n: Node) => void, ctx: Ctx,
  walk: (n: Node, idx: readonly Idx[]) => Expr,
  transposed = false,
): Kernel => {
  const { mat } = ctx;
  const r = m.shape.length;
  const batchShape = m.shape.slice(0, -2);
  // transposed (2-D only): the kernel computes mᵀ = Bᵀ·Aᵀ, each operand read with rows and columns swapped.
  const layout = (v: View) => {
    const [row, col] = [v.strides[r - 2]!, v.strides[r - 1]!];
    return { ...batchLayout(v, r - 2), row: transposed ? col : row, col: transposed ? row : col };
  };
  const operand = (o: Node, uses: number): Operand => {
    let vc = viewChain(o, mat);
    if (!vc && prologueable(o, ctx, uses)) {
      const bIdx = unflatten(ivar('batch', numel(batchShape)), batchShape);
      const [ri, ci] = transposed ? [ivar('col', o.shape[r - 2]!), ivar('row', o.shape[r - 1]!)] : [ivar('row', o.shape[r - 2]!), ivar('col', o.shape[r - 1]!)];
      const idx = [...bIdx.map((v, d) => (o.shape[d] === 1 ? iconst(0) : v)), ri, ci];
      return { slot: -1, offset: 0, strides: layout(nominalView(o)), value: walk(o, idx), node: o };
    }
    if (!vc) {
      need(o);
      vc = { base: o, view: broadcastView(contiguous(o.shape), o.shape) };
    }
    const v = vc.view;
    return { slot: slotOf(vc.base), offset: v.offset, strides: layout(v) };
  };
  const [M, N] = [m.shape[r - 2]!, m.shape[r - 1]!];
  const [x, y] = transposed ? [m.src[1]!, m.src[0]!] : [m.src[0]!, m.src[1]!];
  const a = operand(x, transposed ? M : N);
  const b = operand(y, transposed ? N : M);
  const K = m.src[0]!.shape[r - 1]!;
  return {
    kind: 'matmul', out: epi ? epi.out : m, inputs, batch: numel(batchShape), M: transposed ? N : M, N: transposed ? M : N, K, a, b,
    epilogue: epi ? epi.value : null, batchShape, c: null,
  };
};
