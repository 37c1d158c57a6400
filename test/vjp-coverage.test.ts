// Which finite-difference check covers each primitive's VJP rule. webgpu.test compares the GPU with the interpreter
// on the same autodiff graph: a wrong VJP rule builds the same wrong graph for both, so only the finite-difference
// table (grad.test: <u, FD along v> = <vjp(u), v>, f64 on the interpreter) can catch one. Here every primitive
// with a VJP rule must be reached, on a path from a differentiated input, by some row of that table; the map
// primitive → rows is printed, and a primitive no row reaches fails the test unless listed below with why.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { toposort, type Node } from '../core/node.js';
import * as C from '../index.js';
import * as attention from '../ops/attention.js';
import * as create from '../ops/create.js';
import * as elementwise from '../ops/elementwise.js';
import * as gather from '../ops/gather.js';
import * as grad from '../ops/grad.js';
import * as lift from '../ops/lift.js';
import * as math from '../ops/math.js';
import * as matmul from '../ops/matmul.js';
import * as movement from '../ops/movement.js';
import * as nf4 from '../ops/nf4.js';
import * as random from '../ops/random.js';
import * as reduce from '../ops/reduce.js';
import * as update from '../ops/update.js';
import { OPS } from './optable.js';
import './setup.js';

C.setBackend('cpu');

/** Primitives whose VJP no finite-difference row reaches, each with where its gradient is pinned instead. */
const ELSEWHERE: Readonly<Record<string, string>> = {
  'elementwise:cast': 'crosses dtypes (composite.test)',
  'elementwise:cmpeq': 'bool result: its VJP is [null, null]',
  'elementwise:tag': 'autodiff bookkeeping (core/autodiff.ts), identity on values',
};

const modules = [attention, create, elementwise, gather, grad, lift, math, matmul, movement, nf4, random, reduce, update];
const primitives = new Map<string, string>(); // kind:name (max is both an elementwise op and a reduction) → export
for (const m of modules) {
  for (const [name, v] of Object.entries(m)) {
    const r = v as { kind?: unknown; name?: unknown; vjp?: unknown } | null;
    if (r && typeof r === 'object' && typeof r.name === 'string' && typeof r.kind === 'string' && typeof r.vjp === 'function') primitives.set(`${r.kind}:${r.name}`, name);
  }
}

/** Ops on a path from one of `inputs` to `out`: the ones whose VJP rule the reverse walk calls. */
const onPath = (out: Node, inputs: ReadonlySet<Node>): Set<string> => {
  const reached = new Set<Node>();
  for (const n of toposort([out])) if (inputs.has(n) || n.src.some((s) => reached.has(s))) reached.add(n);
  return new Set([...reached].filter((n) => !inputs.has(n)).map((n) => `${n.op.kind}:${n.op.name}`));
};

describe('every primitive VJP is under a finite-difference check', () => {
  it('the table\'s rows reach every primitive with a VJP rule (else it says where its gradient is tested)', () => {
    expect(primitives.size).toBeGreaterThan(20);
    const covers = new Map<string, Set<string>>();
    for (const op of OPS) {
      for (const c of fc.sample(op.cases, { numRuns: 12, seed: 20261203 })) {
        const xs = c.shapes.map((s) => C.zeros(s, 'f64'));
        for (const name of onPath(c.f(...xs).node, new Set(xs.map((x) => x.node)))) {
          covers.set(name, (covers.get(name) ?? new Set()).add(op.name));
        }
      }
    }
    const lines = [...primitives.keys()].sort().map((p) => `${p}: ${covers.has(p) ? [...covers.get(p)!].join(', ') : `— ${ELSEWHERE[p] ?? 'NOT COVERED'}`}`);
    console.log(`primitive VJP → finite-difference rows (grad.test):\n  ${lines.join('\n  ')}`);
    const missing = [...primitives.keys()].filter((p) => !covers.has(p) && !ELSEWHERE[p]);
    expect(missing, 'primitives with a VJP rule that no finite-difference row reaches').toEqual([]);
    const stale = Object.keys(ELSEWHERE).filter((p) => covers.has(p) || !primitives.has(p));
    expect(stale, 'listed as tested elsewhere but reached by the table, or no longer a primitive').toEqual([]);
  });
});
