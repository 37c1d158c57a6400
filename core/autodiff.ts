// The reverse-mode walker. Each op's VJP rule returns lazy graph, so gradients are themselves differentiable
// and fuse with the forward pass. Summing over broadcast dimensions happens once, here, not in every rule.

import { Tensor } from './tensor.js';
import { toposort, type Node } from './node.js';
import type { Shape } from './shape.js';

/** The few linear ops the walker needs, supplied by ops/ (core knows no particular op). */
export interface Adjoint {
  readonly add: (a: Tensor, b: Tensor) => Tensor;
  /** Sum a cotangent of a broadcast shape down to `shape`. */
  readonly sumTo: (g: Tensor, shape: Shape) => Tensor;
}

export class GradError extends Error { override name = 'GradError'; }

/**
 * Cotangents of `inputs` given cotangents of `outputs`; null where an input does not influence any output
 * (a symbolic zero: the caller decides how to materialise it).
 */
export const backward = (outputs: readonly Tensor[], cotangents: readonly Tensor[], inputs: readonly Tensor[], adj: Adjoint): (Tensor | null)[] => {
  const inputSet = new Set(inputs.map((t) => t.node));
  const order = toposort(outputs.map((t) => t.node));
  // Only nodes that depend on an input carry cotangents.
  const active = new Set<Node>();
  for (const n of order) if (inputSet.has(n) || n.src.some((s) => active.has(s))) active.add(n);
  const ct = new Map<Node, Tensor>();
  const accumulate = (n: Node, g: Tensor) => {
    const prev = ct.get(n);
    ct.set(n, prev ? adj.add(prev, g) : g);
  };
  outputs.forEach((o, i) => { if (active.has(o.node)) accumulate(o.node, cotangents[i]!); });
  for (let k = order.length - 1; k >= 0; k--) {
    const n = order[k]!;
    const g = ct.get(n);
    if (!g || inputSet.has(n)) continue;
    const rule = n.op.vjp;
    if (!rule) throw new GradError(`grad: op '${n.op.name}' on ${JSON.stringify(n.shape)} has no gradient rule`);
    const src = n.src.map((s) => new Tensor(s));
    const gs = rule(g, new Tensor(n), src, n.arg as never);
    n.src.forEach((s, i) => {
      const gi = gs[i];
      if (!gi || !active.has(s)) return;
      accumulate(s, adj.sumTo(gi, s.shape));
    });
    ct.delete(n);
  }
  return inputs.map((t) => ct.get(t.node) ?? null);
};
