// Graph facts the scheduler's phases share: what is an input, who reads what, what a kernel may inline.

import type { Node, ReduceArg } from '../node.js';
import { numel, type Shape } from '../shape.js';
import { iconst, ivar, type Idx } from './idx.js';

/** Scheduling state: materialised nodes, consumer counts, and nodes some kernel reads from memory
 * (those cannot be fused away as a matmul epilogue's accumulator). */
export interface Ctx {
  readonly mat: Set<Node>;
  readonly users: ReadonlyMap<Node, number>;
  readonly demanded: Set<Node>;
  readonly reduces: Map<Node, Node[]>;
  readonly budget: number;
  /** A stored node whose kernel writes it into the buffer of a reshape (or identity) of it: read there instead. */
  readonly alias: Map<Node, Node>;
}

/**
 * Read from a buffer: inputs, and realised nodes that have sources. A realised node without sources (a constant
 * such as full or iota) is computed in place instead: hash-consing makes it the same node as every equal constant,
 * and a jitted step that donated one (optimizer zeros) would otherwise leave other plans bound to a freed buffer.
 */
export const isInput = (n: Node) => n.op.kind === 'buffer' || (n.realized && n.src.length > 0);

/** Inline nodes reachable from `root` without crossing materialised ones (matmuls are listed, not entered). */
export const inlineReach = (root: Node, mat: ReadonlySet<Node>): Node[] => {
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

export const sameShape = (a: Shape, b: Shape) => a.length === b.length && a.every((d, i) => d === b[i]);
export const isIdentityOp = (n: Node) => n.op.kind === 'elementwise' && n.op.identity === true;
/** A 2-D matmul whose rows are x's leading dimensions flattened (x = f(reshape(m)), a linear layer's output). */
export const rowsOf = (m: Node, x: Node): boolean =>
  m.shape.length === 2 && x.shape.length > 2 && x.shape[x.shape.length - 1] === m.shape[1] && numel(x.shape) === numel(m.shape);

/** The (row, col) index variables of a 2-D matmul's result (a dimension of 1 is the constant 0). */
export const matmulRowCol = (m: Node): [Idx, Idx] => [m.shape[0] === 1 ? iconst(0) : ivar('row', m.shape[0]!), m.shape[1] === 1 ? iconst(0) : ivar('col', m.shape[1]!)];

/** Whether `s` is a matmul's result (perhaps reshaped) that nothing else reads. */
export const soleMatmul = (s: Node, users: ReadonlyMap<Node, number>): boolean => {
  while ((s.op.name === 'reshape' || isIdentityOp(s)) && users.get(s) === 1 && !isInput(s)) s = s.src[0]!;
  return isMatmulNode(s) && users.get(s) === 1 && !isInput(s);
};

/** Multiply-adds each element of a matmul's operand `i` feeds: N for A, M for B. */
export const operandUses = (m: Node, i: number): number => m.shape[m.shape.length - 1 - (i === 0 ? 0 : 1)]!;
export const isMatmulNode = (n: Node) => n.op.kind === 'custom' && n.op.template === 'matmul';

/**
 * What a reduction really folds: sum(reshape(sum(x, A2)), A) — a mean of row sums, say — is one sum of x over
 * A2 ∪ A when the inner result is used only there and the reshape only drops the reduced dimensions.
 */
export const effective = (r: Node, users: ReadonlyMap<Node, number>): { src: Node; axes: readonly number[] } => {
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
export const largestFitting = (root: Node, ctx: Ctx, max: number): Node | null => {
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
export const reducesUnder = (n: Node, ctx: Ctx): Node[] => {
  let r = ctx.reduces.get(n);
  if (!r) { r = inlineReach(n, ctx.mat).filter((m) => m.op.kind === 'reduce'); ctx.reduces.set(n, r); }
  return r;
};

/** True when every path from `m` up to `x` runs through nodes used once (so nothing else inlines them). */
export const onlyFeeds = (m: Node, x: Node, users: ReadonlyMap<Node, number>): boolean => {
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
