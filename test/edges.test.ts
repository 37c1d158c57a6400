// Values and gradients at the edges (0, ±tiny, ±huge, ±inf, NaN, ties): expected numbers from PyTorch or from
// the mathematics (each row cites its source), checked on the interpreter (f64, f32) and on WebGPU (f32).

import { beforeAll, describe, expect, it } from 'vitest';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { gpuDevice } from './gpu.js';
import './setup.js';

type F32or64 = 'f32' | 'f64';
const close = (got: ArrayLike<number>, want: readonly number[], rel: number, what: string) => {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const [g, w] = [got[i]!, want[i]!];
    const ok = Number.isNaN(w) ? Number.isNaN(g) : !Number.isFinite(w) ? g === w : Math.abs(g - w) <= 2e-38 + rel * Math.abs(w);
    if (!ok) throw new Error(`${what}: element ${i}: got ${g}, expected ${w} (rel ${rel})`);
  }
};

/** Value and gradient of Σ f(x) at xs, in dtype. */
const valueAndGrad = async (f: (x: Tensor) => Tensor, xs: readonly number[], dtype: F32or64): Promise<[Float64Array, Float64Array]> => {
  const [v, g] = C.valueAndGrad((x: Tensor) => C.sum(f(x)))(C.tensor([...xs], { dtype }));
  const y = f(C.tensor([...xs], { dtype }));
  void v;
  return [Float64Array.from(await C.data(y)), Float64Array.from(await C.data(g as Tensor))];
};

interface Row { readonly op: string; readonly f: (x: Tensor) => Tensor; readonly xs: readonly number[]; readonly value: readonly number[]; readonly grad: readonly number[]; readonly src: string }

const LN2 = Math.LN2;
// Hand-derived: softplus(0) = log 2, softplus'(x) = σ(x), σ(0) = 1/2; log σ(x) = −softplus(−x), (log σ)'(x) = σ(−x).
const ROWS: readonly Row[] = [
  { op: 'softplus', f: C.softplus, xs: [0, -0, 100, -100, Infinity, -Infinity], value: [LN2, LN2, 100, 0, Infinity, 0], grad: [0.5, 0.5, 1, 0, 1, 0], src: 'math: log 2, σ(0) = 1/2; σ(±∞) ∈ {1, 0}' },
  { op: 'logSigmoid', f: C.logSigmoid, xs: [0, -0, 100, -100, Infinity, -Infinity], value: [-LN2, -LN2, 0, -100, 0, -Infinity], grad: [0.5, 0.5, 0, 1, 0, 1], src: 'math: −log 2, σ(−0) = 1/2' },
  { op: 'sigmoid', f: C.sigmoid, xs: [0, -100, -1000, 100, Infinity, -Infinity], value: [0.5, 0, 0, 1, 1, 0], grad: [0.25, 0, 0, 0, 0, 0], src: 'math: σ(0) = 1/2, σ′ = σ(1 − σ); below f32/f64 resolution at ±100' },
];

const run = (dtype: F32or64, rel: number) => {
  for (const r of ROWS) {
    it(`${r.op} (${r.src})`, async () => {
      const [v, g] = await valueAndGrad(r.f, r.xs, dtype);
      close(v, r.value, rel, `${r.op} value at ${r.xs}`);
      close(g, r.grad, rel, `${r.op} gradient at ${r.xs}`);
    });
  }
};

describe('edges on the interpreter, f64', () => { beforeAll(() => C.setBackend('cpu')); run('f64', 1e-13); });
describe('edges on the interpreter, f32', () => { beforeAll(() => C.setBackend('cpu')); run('f32', 1e-6); });
describe.skipIf(!gpuDevice)('edges on WebGPU, f32', () => { beforeAll(() => C.setBackend('webgpu')); run('f32', 1e-5); });
