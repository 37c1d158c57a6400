// Gradient property: for every op in the table, in f64 on the interpreter,
// <u, (f(x+εv) − f(x−εv)) / 2ε> must equal <vjp(u), v> for random inputs x, tangents v, cotangents u.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { numel } from '../core/shape.js';
import * as C from '../index.js';
import { data, setBackend, type Tensor } from '../index.js';
import { fillValues, NOT_DIFFERENTIABLE, OPS, type Case } from './optable.js';
import './setup.js';

setBackend('cpu');

const f64 = (vals: number[], shape: readonly number[]) => C.tensor(Float64Array.from(vals), { shape, dtype: 'f64' });
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!; return s; };

/** Returns the two sides of the inner-product identity. */
export const checkVjp = async (c: Case, seed: number): Promise<[number, number]> => {
  const xs = c.shapes.map((s, i) => fillValues(numel(s), c.domains[i]!, seed + 101 * i));
  const vs = c.shapes.map((s, i) => fillValues(numel(s), 'unit', seed + 7 + 31 * i));
  const eps = 1e-6;
  const at = (t: number) => c.f(...xs.map((x, i) => f64(x.map((xi, j) => xi + t * vs[i]![j]!), c.shapes[i]!)));
  const y0 = c.f(...xs.map((x, i) => f64(x, c.shapes[i]!)));
  const u = fillValues(y0.size, 'unit', seed + 13);
  const [yp, ym] = [await data(at(eps)), await data(at(-eps))];
  const fd = dot(u, Array.from(yp, (p, i) => (p - ym[i]!) / (2 * eps)));
  const [, back] = C.vjp((ps: Tensor[]) => c.f(...ps), xs.map((x, i) => f64(x, c.shapes[i]!)));
  const gs = back(f64(u, y0.shape));
  let ad = 0;
  for (let i = 0; i < gs.length; i++) ad += dot(await data(gs[i]!), vs[i]!);
  return [fd, ad];
};

describe('gradients: finite differences vs VJP, every op in the table (f64)', () => {
  for (const op of OPS) {
    it(op.name, async () => {
      await fc.assert(
        fc.asyncProperty(op.cases, fc.integer({ min: 1, max: 2 ** 31 - 1 }), async (c, seed) => {
          const [fd, ad] = await checkVjp(c, seed);
          const ok = Math.abs(fd - ad) <= 1e-7 + 1e-6 * Math.max(Math.abs(fd), Math.abs(ad));
          if (!ok) throw new Error(`${c.desc}: finite differences ${fd} vs vjp ${ad}`);
        }),
        { numRuns: 25 },
      );
    });
  }

  it('every exported differentiable op is in the table', () => {
    const exported = Object.entries(C).filter(([, v]) => typeof v === 'function' && !(v.prototype instanceof Error) && v !== C.Tensor).map(([k]) => k);
    const covered = new Set(OPS.map((o) => o.name));
    const missing = exported.filter((k) => !covered.has(k) && !(k in NOT_DIFFERENTIABLE));
    expect(missing).toEqual([]);
  });
});
