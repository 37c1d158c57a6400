// Gradient property: for every op in the table, in f64 on the interpreter,
// <u, (f(x+εv) − f(x−εv)) / 2ε> must equal <vjp(u), v> for random inputs x, tangents v, cotangents u.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { numel } from '../core/shape.js';
import * as C from '../index.js';
import * as Ops from '../ops/index.js';
import { data, setBackend, type Tensor } from '../index.js';
import { edgeValue, fillValues, NOT_DIFFERENTIABLE, OPS, type Case } from './optable.js';
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

  // Ops are what ops/index.ts exports; models and recipes (also at the package root) are not ops.
  it('every exported differentiable op is in the table', () => {
    const exported = Object.entries(Ops).filter(([, v]) => typeof v === 'function').map(([k]) => k);
    const covered = new Set(OPS.map((o) => o.name));
    const missing = exported.filter((k) => !covered.has(k) && !(k in NOT_DIFFERENTIABLE));
    expect(missing).toEqual([]);
  });
});

// At the edges (fast-check draws EDGE_VALUES on purpose): no finite-difference check here (invalid at kinks,
// meaningless at ±inf); instead properties that need no reference: a smooth op's gradient is never NaN at a finite
// input, f32 agrees with f64 on the same inputs, and ties split the cotangent evenly. Exact numbers: edges.test.
const SMOOTH: readonly [string, (x: Tensor) => Tensor][] = [
  ['exp', C.exp], ['sigmoid', C.sigmoid], ['tanh', C.tanh], ['softplus', C.softplus], ['logSigmoid', C.logSigmoid],
  ['silu', C.silu], ['erf', C.erf], ['gelu (exact)', (x) => C.gelu(x, { approximate: false })], ['square', C.square],
  ['pow(x, 2)', (x) => C.pow(x, 2)], ['pow(x, 3)', (x) => C.pow(x, 3)], ['sin', C.sin],
];
const valGrad = async (f: (x: Tensor) => Tensor, xs: number[], dtype: 'f32' | 'f64') => {
  const x = C.tensor(dtype === 'f64' ? Float64Array.from(xs) : Float32Array.from(xs), { dtype });
  const [y, back] = C.vjp((t: Tensor) => f(t), x);
  const g = back(C.onesLike(y)); // built before y is realised: the backward then recomputes the forward's intermediates
  return [Array.from(await data(y)), Array.from(await data(g))] as const;
};
const near32 = (g32: number, g64: number) => {
  const w = Math.fround(g64); // f64's answer as f32 holds it: ±inf where it overflows
  if (Number.isNaN(w) || !Number.isFinite(w)) return Object.is(g32, w) || (Number.isNaN(w) && Number.isNaN(g32)) || g32 === w;
  // 4e-7: a few f32 ulps of 1, the scale of σ, tanh and their slopes (1 − σ and 1 − tanh² cancel near saturation).
  return Math.abs(g32 - w) <= 4e-7 + 1e-4 * Math.abs(w);
};

describe('gradients at edge values (fast-check reaches 0, ±tiny, saturation, ±huge, ±inf, NaN on purpose)', () => {
  for (const [name, f] of SMOOTH) {
    it(`${name}: no NaN gradient at a finite input; f32 agrees with f64`, async () => {
      await fc.assert(fc.asyncProperty(fc.array(edgeValue, { minLength: 1, maxLength: 6 }), async (xs) => {
        const [v64, g64] = await valGrad(f, xs, 'f64');
        const [v32, g32] = await valGrad(f, xs, 'f32');
        xs.forEach((x, i) => {
          if (Number.isFinite(x) && Number.isNaN(g64[i]!)) throw new Error(`${name}: f64 gradient NaN at ${x}`);
          if (Number.isFinite(x) && Number.isNaN(g32[i]!)) throw new Error(`${name}: f32 gradient NaN at ${x}`);
          if (!(name === 'sin' && Math.abs(x) > 1e6) && !near32(v32[i]!, v64[i]!)) throw new Error(`${name}: f32 value ${v32[i]} vs f64 ${v64[i]} at ${x}`);
          if (!(name === 'sin' && Math.abs(x) > 1e6) && !near32(g32[i]!, g64[i]!)) throw new Error(`${name}: f32 gradient ${g32[i]} vs f64 ${g64[i]} at ${x}`);
        });
      }), { numRuns: 40 });
    });
  }

  it('maximum, minimum and clamp split a tie evenly; max over k tied copies gives each 1/k', async () => {
    const finite = edgeValue.filter((v) => Number.isFinite(v));
    await fc.assert(fc.asyncProperty(finite, fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 3 }), async (v, k, extra) => {
      const both = C.grad(([a, b]: Tensor[]) => C.sum(C.add(C.maximum(a!, b!), C.mul(C.minimum(a!, b!), 3))));
      const [ga, gb] = both([C.tensor([v], { dtype: 'f64' }), C.tensor([v], { dtype: 'f64' })]);
      expect([...await data(ga!), ...await data(gb!)]).toEqual([2, 2]); // 0.5·1 + 0.5·3 each
      const [gc] = await data(C.grad((x: Tensor) => C.sum(C.clamp(x, v, v + 1)))(C.tensor([v], { dtype: 'f64' })));
      expect(v + 1 === v ? [0.25, 0.5] : [0.5]).toContain(gc); // v + 1 rounds to v for |v| ≥ 2^53: x ties both bounds
      const xs = [...Array<number>(k).fill(v), ...Array.from({ length: extra }, (_, i) => v - 1 - Math.abs(v) - i)];
      const gm = Array.from(await data(C.grad((x: Tensor) => C.max(x))(C.tensor(xs, { dtype: 'f64' }))));
      expect(gm).toEqual(xs.map((x) => (x === v ? 1 / k : 0)));
    }), { numRuns: 40 });
  });
});
