// Phase 1: which nodes get a buffer. Roots, custom ops, shared costly values, values broadcast far, residuals a
// matmul can store, and matmul operands that cannot be computed on load; everything else is inlined.

import type { Node } from '../node.js';
import { numel } from '../shape.js';
import { isIdentityOp, isInput, isMatmulNode, operandUses, reducesUnder, soleMatmul, type Ctx } from './graph.js';
import { viewChain } from './views.js';

/** A node whose inline cost passes this (ops) is stored once when two or more consumers read it. */
const HEAVY = 64;
/**
 * An elementwise value read through a broadcast is materialised when recomputing it would cost this much in all
 * (ops), if it is itself at least BROADCAST_COST ops (a constant or an iota is always recomputed).
 */
const BROADCAST_WORK = 1 << 20;
const BROADCAST_COST = 8;
/** A matmul operand is computed on load from at most this many buffers. */
const PROLOGUE_READS = 4;
export const PROLOGUE_BUDGET = 32;
/** The least budget for an operand that one tile spans (computed once per reader, as a kernel would store it). */
const ONCE_BUDGET = 16;

/**
 * Whether a matmul operand can be computed on load: elementwise and movement ops only (no reduction or other
 * kernel) down to materialised nodes or inputs. Its ops then run once per tile that reads them, instead of a
 * kernel writing the operand out and the matmul reading it back.
 */
export const prologueable = (o: Node, ctx: Ctx, uses: number): boolean => {
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

/**
 * Whether a reduction's value reaches two or more readers and only elementwise values of its own size (through
 * reshapes) or further reductions downstream: never broadcast back over the rows it folded. Looks at most 64 nodes.
 */
const foldedOnce = (n: Node, readers: ReadonlyMap<Node, readonly Node[]>): boolean => {
  let v = n;
  while (readers.get(v)?.length === 1 && readers.get(v)![0]!.op.name === 'reshape') v = readers.get(v)![0]!;
  if ((readers.get(v)?.length ?? 0) < 2) return false;
  const seen = new Set<Node>([v]);
  const stack = [v];
  while (stack.length) {
    for (const r of readers.get(stack.pop()!) ?? []) {
      if (seen.has(r) || r.op.kind === 'reduce') continue;
      if (r.op.name !== 'reshape' && !(r.op.kind === 'elementwise' && numel(r.shape) === numel(n.shape))) return false;
      if (seen.size > 64) return false;
      seen.add(r);
      stack.push(r);
    }
  }
  return true;
};

/**
 * Which nodes get a buffer (the scheduling context): roots, custom ops, shared values too costly to recompute,
 * values broadcast far, residuals a matmul stores, and matmul operands that cannot be computed on load.
 */
export const materialise = (order: readonly Node[], roots: readonly Node[], fuse: boolean, budget: number): Ctx => {
  const users = new Map<Node, number>();
  const readers = new Map<Node, Node[]>();
  for (const n of order) {
    if (isInput(n)) continue;
    for (const s of n.src) { users.set(s, (users.get(s) ?? 0) + 1); const r = readers.get(s); if (r) r.push(n); else readers.set(s, [n]); }
  }
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
    // A reduction whose value several readers take, none broadcasting it back over what it folded (a norm weight's
    // gradient: its square for the global norm, AdamW's two moments), is folded once, not once per reader's row
    // kernel. One that goes back over its rows (softmax's and logsumexp's max) stays inside its row kernel.
    if (fuse && k === 'reduce' && foldedOnce(n, readers)) mat.add(n);
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
  const ctx: Ctx = { mat, users, demanded: new Set(), reduces: new Map(), budget, alias: new Map() };
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
  return ctx;
};
