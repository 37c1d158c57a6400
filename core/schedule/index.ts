// The scheduler: graph → kernels, as plain data. Elementwise and movement chains fuse into their consumer;
// reductions whose results are broadcast back over the same rows share one "row kernel" with their prologue
// and epilogue (softmax, rmsNorm, logsumexp are one kernel); matmul takes a fused epilogue and reads
// transposed/broadcast operands in place; views become index math, never copies.

import { toposort, type Node, type ReduceArg, type ReduceOp } from '../node.js';
import { numel, type Shape } from '../shape.js';
import { contiguous, permuteView, reshapeView, type View } from '../view.js';
import { broadcastView } from '../interp.js';
import { bound, flatIndex, iadd, iconst, idxKey, ivar, span, stridedIndex, unflatten, usesVar, type Idx } from './idx.js';
import type { Cond, Expr, Reduction } from './expr.js';
import { foldRows } from './rows.js';

export type { Expr, Reduction, Cond } from './expr.js';

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

/** Every node a kernel writes: its `out`, or each of a matmul's stores. */
export const kernelOuts = (k: Kernel): readonly Node[] => {
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

/** Scheduling state: materialised nodes, consumer counts, and nodes some kernel reads from memory
 * (those cannot be fused away as a matmul epilogue's accumulator). */
interface Ctx { readonly mat: Set<Node>; readonly users: ReadonlyMap<Node, number>; readonly demanded: Set<Node>; readonly reduces: Map<Node, Node[]>; readonly budget: number }

interface KernelBase { readonly out: Node; readonly inputs: readonly Node[] }
export interface AttnView { readonly offset: number; readonly strides: readonly number[] }
/**
 * One of several stores a matmul kernel makes from its accumulator: `value` (over the matmul's row and col)
 * goes to element `at` of `out` where every cond holds. Several may write one output (the parts of a
 * concatenation); the first store's output is the kernel's `out`.
 */
export interface Store { readonly out: Node; readonly value: Expr; readonly at: Idx; readonly conds: readonly Cond[] }
export type Kernel =
  | (KernelBase & { readonly kind: 'elementwise'; readonly shape: Shape; readonly value: Expr })
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
}

const HEAVY = 64;
/**
 * An elementwise value read through a broadcast is materialised when recomputing it would cost this much in all
 * (ops), if it is itself at least BROADCAST_COST ops (a constant or an iota is always recomputed).
 */
const BROADCAST_WORK = 1 << 20;
const BROADCAST_COST = 8;
/** A matmul operand is computed on load from at most this many buffers. */
const PROLOGUE_READS = 4;
const PROLOGUE_BUDGET = 32;
/** The least budget for an operand that one tile spans (computed once per reader, as a kernel would store it). */
const ONCE_BUDGET = 16;
/**
 * Read from a buffer: inputs, and realised nodes that have sources. A realised node without sources (a constant
 * such as full or iota) is computed in place instead: hash-consing makes it the same node as every equal constant,
 * and a jitted step that donated one (optimizer zeros) would otherwise leave other plans bound to a freed buffer.
 */
const isInput = (n: Node) => n.op.kind === 'buffer' || (n.realized && n.src.length > 0);

/**
 * Whether a matmul operand can be computed on load: elementwise and movement ops only (no reduction or other
 * kernel) down to materialised nodes or inputs. Its ops then run once per tile that reads them, instead of a
 * kernel writing the operand out and the matmul reading it back.
 */
const prologueable = (o: Node, ctx: Ctx, uses: number): boolean => {
  const { mat, budget } = ctx;
  if (budget <= 0 || isInput(o) || mat.has(o) || o.dtype !== 'f32') return false;
  // Each element of the operand is computed once per tile reading it, and feeds `uses` multiply-adds. Where one
  // tile spans all its uses (64 or fewer: every adapter's tile is at least 64 wide), it is computed once per
  // reader, as a kernel storing it would compute it once: the whole budget applies, and literals are not counted
  // (SwiGLU's silu(gate)·up into the down projection, 64 wide in stories260K, and into its weight gradient: one
  // kernel fewer per layer on lavapipe). Not for a GEMV's matrix (uses 1): its time is the matrix's vec4 loads,
  // which a computed operand gives up.
  // On a CPU adapter too (a small budget) up to ONCE_BUDGET: RoPE's backward with the q/k/v gradients' concatenation,
  // computed by the input gradient and the weight gradient of the q/k/v projection (one kernel fewer per layer).
  const once = uses <= 64 && uses > 1;
  const most = once ? Math.max(budget, ONCE_BUDGET) : (budget * Math.min(uses, 128)) / 128;
  const seen = new Set<Node>();
  const reads = new Set<Node>();
  const stack = [o];
  let ops = 0;
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    // A reduction under it, or a per-row value of one (rmsNorm's 1/rms), is a row kernel's output whatever
    // happens: it is read like a materialised node.
    const rowValue = n.op.kind === 'reduce' || (numel(n.shape) < numel(o.shape) && reducesUnder(n, ctx).length > 0);
    if (isInput(n) || mat.has(n) || rowValue) { reads.add(n); continue; }
    if (n.op.kind !== 'elementwise' && n.op.kind !== 'movement') return false;
    if (n.op.kind === 'elementwise' && !n.op.identity && !(once && n.src.length === 0) && (ops += n.op.cost ?? 1) + reads.size > most) return false;
    stack.push(...n.src);
  }
  return reads.size <= PROLOGUE_READS && ops + reads.size <= most;
};

/** Kernels in execution order for computing `roots` (realised nodes and buffers are inputs). */
export const schedule = (roots: readonly Node[], opts: ScheduleOpts = {}): Kernel[] => {
  const fuse = opts.fuse !== false;
  const budget = fuse ? opts.prologueBudget ?? PROLOGUE_BUDGET : 0;
  const order = toposort(roots);
  const users = new Map<Node, number>();
  for (const n of order) if (!isInput(n)) for (const s of n.src) users.set(s, (users.get(s) ?? 0) + 1);
  const mat = new Set<Node>(roots.filter((r) => !isInput(r)));
  // Cost of recomputing a node inline; shared expensive nodes are materialised once instead.
  const cost = new Map<Node, number>();
  const rowed = new Set<Node>(); // nodes with a reduction under them, short of materialised ones
  for (const n of order) {
    const k = n.op.kind;
    if (isInput(n)) { cost.set(n, 0); continue; }
    if (k === 'custom') { mat.add(n); cost.set(n, 0); continue; }
    if (!fuse && k !== 'movement' && n.src.length > 0 && !(k === 'elementwise' && n.op.identity)) mat.add(n);
    const c = (k === 'reduce' ? 8 : k === 'elementwise' ? n.op.cost ?? 1 : 1) + n.src.reduce((a, s) => a + (mat.has(s) ? 0 : cost.get(s) ?? 0), 0);
    cost.set(n, c);
    if ((users.get(n) ?? 0) >= 2 && c > HEAVY && k !== 'movement') mat.add(n);
    // A costly value broadcast to many times its size (RoPE's cos/sin table, over batch and heads) is stored once,
    // rather than recomputed for every element it reaches. Not per-row values of reductions: row kernels own those.
    const reduced = k === 'reduce' || n.src.some((s) => !mat.has(s) && rowed.has(s));
    if (reduced) rowed.add(n);
    if (fuse && (k === 'elementwise' || n.op.name === 'expand')) {
      for (let b of n.src) {
        let times = numel(n.shape) / numel(b.shape);
        while (!isInput(b) && !mat.has(b) && b.op.kind === 'movement') {
          if (b.op.name === 'expand') times *= numel(b.shape) / numel(b.src[0]!.shape);
          b = b.src[0]!;
        }
        if (isInput(b) || mat.has(b) || rowed.has(b) || b.op.kind !== 'elementwise' || cost.get(b)! < BROADCAST_COST) continue;
        if ((times - 1) * numel(b.shape) * cost.get(b)! >= BROADCAST_WORK) mat.add(b);
      }
    }
    // A shared elementwise result of a matmul used nowhere else (a residual stream: x + attn(x)) is stored by that
    // matmul's epilogue at no extra cost, rather than recomputed — rereading every term — by each consumer.
    if (fuse && k === 'elementwise' && (users.get(n) ?? 0) >= 2 && n.src.some((s) => soleMatmul(s, users))) mat.add(n);
  }
  const ctx: Ctx = { mat, users, demanded: new Set(), reduces: new Map(), budget };
  // Matmul operands that cannot be computed on load are materialised up front, so every matmul reading them
  // (through transposes or broadcasts) reads the same buffer in place.
  // An operand whose view cannot be expressed as strides (a reshape of transposed heads, say) is materialised
  // once below its outer transposes, so a matmul reading it transposed (a weight gradient) shares that buffer.
  for (const n of order) {
    if (isInput(n) || !isMatmulNode(n)) continue;
    for (const [i, o] of n.src.entries()) {
      if (fuse && prologueable(o, ctx, operandUses(n, i))) continue;
      let top = o;
      while (!isInput(top) && (top.op.name === 'permute' || isIdentityOp(top))) top = top.src[0]!;
      let b = top;
      while (!isInput(b) && (b.op.kind === 'movement' || isIdentityOp(b))) b = b.src[0]!;
      if (!isInput(b)) mat.add(b);
      if (top !== b && !viewChain(top, mat)) mat.add(top);
    }
  }
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
  return fuse ? foldRows(kernels.reverse(), maxInputs) : kernels.reverse();
};

/** Stored nodes that each take slices of one matmul's result (through slices, transposes, reshapes and pads,
 * then elementwise ops): for each placement, the member's index over the matmul's (row, col), and where it lies. */
interface SliceGroup { readonly m: Node; readonly via: readonly Node[]; readonly members: readonly { readonly x: Node; readonly idx: readonly Idx[]; readonly conds: readonly Cond[] }[] }

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
const sliceGroups = (order: readonly Node[], users: ReadonlyMap<Node, number>, mat: ReadonlySet<Node>, roots: ReadonlySet<Node>): Map<Node, SliceGroup> => {
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
const buildStores = (g: SliceGroup, ctx: Ctx, maxInputs: number): Kernel | null => {
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

/** Inline nodes reachable from `root` without crossing materialised ones (matmuls are listed, not entered). */
const inlineReach = (root: Node, mat: ReadonlySet<Node>): Node[] => {
  const seen = new Set<Node>();
  const out: Node[] = [];
  const stack = [...root.src];
  while (stack.length) {
    const n = stack.pop()!;
    const isMatmul = n.op.kind === 'custom' && n.op.template === 'matmul';
    if (seen.has(n) || (mat.has(n) && !isMatmul) || isInput(n)) continue;
    seen.add(n);
    out.push(n);
    if (n.op.kind !== 'custom') stack.push(...n.src);
  }
  return out;
};

const sameShape = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);
const isIdentityOp = (n: Node) => n.op.kind === 'elementwise' && n.op.identity === true;
/** A 2-D matmul whose rows are x's leading dimensions flattened (x = f(reshape(m)), a linear layer's output). */
const rowsOf = (m: Node, x: Node): boolean =>
  m.shape.length === 2 && x.shape.length > 2 && x.shape[x.shape.length - 1] === m.shape[1] && numel(x.shape) === numel(m.shape);

/** The (row, col) index variables of a 2-D matmul's result (a dimension of 1 is the constant 0). */
const matmulRowCol = (m: Node): [Idx, Idx] => [m.shape[0] === 1 ? iconst(0) : ivar('row', m.shape[0]!), m.shape[1] === 1 ? iconst(0) : ivar('col', m.shape[1]!)];

/** Whether `s` is a matmul's result (perhaps reshaped) that nothing else reads. */
const soleMatmul = (s: Node, users: ReadonlyMap<Node, number>): boolean => {
  while ((s.op.name === 'reshape' || isIdentityOp(s)) && users.get(s) === 1 && !isInput(s)) s = s.src[0]!;
  return isMatmulNode(s) && users.get(s) === 1 && !isInput(s);
};

/** Multiply-adds each element of a matmul's operand `i` feeds: N for A, M for B. */
const operandUses = (m: Node, i: number): number => m.shape[m.shape.length - 1 - (i === 0 ? 0 : 1)]!;
const isMatmulNode = (n: Node) => n.op.kind === 'custom' && n.op.template === 'matmul';

/** A root that only reshapes a node used nowhere else is written directly by that node's kernel. */
const buildKernel = (root: Node, ctx: Ctx): Kernel => {
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
  if (x !== root) mat.delete(x);
  return { ...buildBody(x, ctx), out: root };
};

/**
 * A root that only permutes/reshapes a matmul's result (e.g. attention heads back to (B, T, dim)) lets the
 * matmul store straight into the root's layout: the view, over the matmul's shape, of offsets in the root.
 */
const storeView = (root: Node, ctx: Ctx): { m: Node; view: View } | null => {
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

/**
 * What a reduction really folds: sum(reshape(sum(x, A2)), A) — a mean of row sums, say — is one sum of x over
 * A2 ∪ A when the inner result is used only there and the reshape only drops the reduced dimensions.
 */
const effective = (r: Node, users: ReadonlyMap<Node, number>): { src: Node; axes: readonly number[] } => {
  const own = { src: r.src[0]!, axes: (r.arg as ReduceArg).axes };
  let n = r.src[0]!;
  while (!isInput(n) && users.get(n) === 1 && (n.op.name === 'reshape' || isIdentityOp(n))) n = n.src[0]!;
  if (n === r.src[0] || n.op !== r.op || isInput(n) || users.get(n) !== 1) return own;
  const inner = effective(n, users);
  const kept = inner.src.shape.flatMap((d, i) => (inner.axes.includes(i) ? [] : [i]));
  if (!sameShape(kept.map((i) => inner.src.shape[i]!), r.src[0]!.shape)) return own;
  const axes = [...inner.axes, ...own.axes.map((a) => kept[a]!)].sort((a, b) => a - b);
  return { src: inner.src, axes };
};

/** The inline node under `root` reading the most buffers while still reading at most `max`. */
const largestFitting = (root: Node, ctx: Ctx, max: number): Node | null => {
  let best: Node | null = null;
  let bestCount = 1;
  for (const n of inlineReach(root, ctx.mat)) {
    if (n.op.kind === 'movement' || n.op.kind === 'custom') continue;
    const reads = new Set<Node>();
    const stack = [...n.src];
    const seen = new Set<Node>();
    while (stack.length) {
      const m = stack.pop()!;
      if (seen.has(m)) continue;
      seen.add(m);
      if (isInput(m) || ctx.mat.has(m)) reads.add(m);
      else stack.push(...m.src);
    }
    if (reads.size <= max && reads.size > bestCount) { best = n; bestCount = reads.size; }
  }
  return best;
};

/** Reductions an elementwise node depends on without crossing materialised nodes (memoised per schedule). */
const reducesUnder = (n: Node, ctx: Ctx): Node[] => {
  let r = ctx.reduces.get(n);
  if (!r) { r = inlineReach(n, ctx.mat).filter((m) => m.op.kind === 'reduce'); ctx.reduces.set(n, r); }
  return r;
};

/** True when every path from `m` up to `x` runs through nodes used once (so nothing else inlines them). */
const onlyFeeds = (m: Node, x: Node, users: ReadonlyMap<Node, number>): boolean => {
  const memo = new Map<Node, boolean>();
  const reaches = (n: Node): boolean => {
    if (n === m) return true;
    if (memo.has(n)) return memo.get(n)!;
    memo.set(n, false);
    const r = n.op.kind !== 'custom' && n.op.kind !== 'reduce' && n.src.some(reaches);
    memo.set(n, r);
    return r;
  };
  reaches(x);
  for (const [n, r] of memo) if (r && n !== x && users.get(n) !== 1) return false;
  return users.get(m) === 1;
};

/**
 * One kernel computing `x`. With `sib`, part of a slice group's kernel: the buffers read go to the group's
 * `inputs`, and with `idx` the body is `x`'s value at that index, `acc` being the accumulator of matmul `acc`.
 */
const buildBody = (x: Node, ctx: Ctx, sib?: { readonly inputs: Node[]; readonly idx?: readonly Idx[]; readonly acc?: Node }): Kernel => {
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

/** Index into a broadcast operand: leading dims dropped, size-1 dims pinned to 0. */
const broadcastIdx = (idx: readonly Idx[], out: Shape, src: Shape): Idx[] => {
  const lead = out.length - src.length;
  return src.map((d, i) => (d === 1 ? iconst(0) : idx[i + lead]!));
};

/** Source index of a movement node (and pad validity conditions). */
const moveIdx = (n: Node, idx: readonly Idx[]): { idx: Idx[]; conds: Cond[] } => {
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
const viewChain = (o: Node, mat: ReadonlySet<Node>): { base: Node; view: View } | null => {
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
const batchLayout = (v: View, nb: number): { batch: number; batchDims?: [number, number][] } => {
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
const nominalView = (o: Node): View => {
  let b = o;
  while (b.op.kind === 'movement' || isIdentityOp(b)) b = b.src[0]!;
  return viewChain(o, new Set([b]))?.view ?? broadcastView(contiguous(o.shape), o.shape);
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

