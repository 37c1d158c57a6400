// Gradients of composed programs against finite differences: a 2-layer MLP, softmax cross-entropy,
// grad of grad, and the dtype-crossing / gradient-blocking identities.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, item, setBackend, type Tensor } from '../index.js';
import { fillValues } from './optable.js';
import './setup.js';

setBackend('cpu');

const f64 = (shape: number[], seed: number, domain: 'any' | 'unit' | 'pos' = 'unit') =>
  C.tensor(Float64Array.from(fillValues(shape.reduce((a, b) => a * b, 1), domain, seed)), { shape, dtype: 'f64' });

/** Check grad(f)(params) against central differences along each coordinate of every leaf. */
const checkAllCoords = async (f: (p: Record<string, Tensor>) => Tensor, params: Record<string, Tensor>, tol = 1e-6) => {
  const g = C.grad(f)(params);
  for (const name of Object.keys(params)) {
    const base = Float64Array.from(await data(params[name]!));
    const got = await data(g[name]!);
    for (let i = 0; i < base.length; i++) {
      const at = async (d: number) => {
        const x = Float64Array.from(base); x[i]! += d;
        return item(f({ ...params, [name]: C.tensor(x, { shape: params[name]!.shape, dtype: 'f64' }) }));
      };
      const fd = ((await at(1e-6)) - (await at(-1e-6))) / 2e-6;
      expect(Math.abs(fd - got[i]!), `${name}[${i}]: fd ${fd} vs grad ${got[i]}`).toBeLessThan(tol * (1 + Math.abs(fd)));
    }
  }
};

describe('composite gradients (f64, finite differences per coordinate)', () => {
  it('2-layer MLP with softmax cross-entropy', async () => {
    const x = f64([5, 4], 1);
    const labels = C.tensor([0, 2, 1, 2, 0], { dtype: 'i32' });
    const loss = (p: Record<string, Tensor>) => {
      const h = C.relu(C.add(C.matmul(x, p.w1!), p.b1!)); // (5, 6)
      const logits = C.add(C.matmul(h, p.w2!), p.b2!); // (5, 3)
      const logp = C.logSoftmax(logits);
      return C.neg(C.mean(C.sum(C.mul(logp, C.oneHot(labels, 3, 'f64')), -1)));
    };
    await checkAllCoords(loss, { w1: f64([4, 6], 2), b1: f64([6], 3), w2: f64([6, 3], 4), b2: f64([3], 5) });
  });

  it('softmax cross-entropy via gather of log-probabilities', async () => {
    const labels = C.tensor([[1, 0], [3, 3]], { dtype: 'i32' });
    const loss = (p: Record<string, Tensor>) => {
      const logp = C.reshape(C.logSoftmax(p.logits!), [4, 4]);
      const picked = C.mul(logp, C.oneHot(C.reshape(labels, [4]), 4, 'f64'));
      return C.neg(C.sum(picked));
    };
    await checkAllCoords(loss, { logits: f64([2, 2, 4], 6, 'any') });
  });

  it('grad(grad(f)) for a scalar f equals the second derivative', async () => {
    const f = (x: Tensor) => C.sum(C.mul(C.sin(x), C.exp(C.mul(x, 0.5))));
    const ddf = C.grad((x: Tensor) => C.sum(C.grad(f)(x)));
    const x0 = [0.3, -1.2, 2];
    const got = await data(ddf(C.tensor(x0, { dtype: 'f64' })));
    x0.forEach((x, i) => {
      // (sin x · e^{x/2})'' = e^{x/2}(cos x − ¾ sin x)
      const e = Math.exp(x / 2);
      const exact = e * (-Math.sin(x) + Math.cos(x) + 0.25 * Math.sin(x));
      expect(got[i]!).toBeCloseTo(exact, 9);
    });
  });

  it('grad of grad through a matmul and a reduction (Hessian-vector product)', async () => {
    const A = f64([3, 3], 9);
    const v = f64([3], 10);
    const f = (x: Tensor) => C.logsumexp(C.matmul(A, x), 0);
    const hvp = (x: Tensor) => C.grad((y: Tensor) => C.sum(C.mul(C.grad(f)(y), v)))(x);
    const x0 = f64([3], 11);
    const got = await data(hvp(x0));
    const g = async (x: Float64Array) => data(C.grad(f)(C.tensor(x, { dtype: 'f64' })));
    const base = Float64Array.from(await data(x0)), dv = Float64Array.from(await data(v));
    const plus = await g(base.map((b, i) => b + 1e-6 * dv[i]!)), minus = await g(base.map((b, i) => b - 1e-6 * dv[i]!));
    got.forEach((h, i) => expect(h).toBeCloseTo((plus[i]! - minus[i]!) / 2e-6, 6));
  });

  it('stopGradient blocks, cast passes gradients across dtypes, unused inputs get zeros', async () => {
    const g = C.grad((p: Record<string, Tensor>) => C.sum(C.mul(C.stopGradient(p.a!), p.b!)))({ a: C.tensor([2, 3]), b: C.tensor([5, 7]) });
    expect(await C.toArray(g.a!)).toEqual([0, 0]);
    expect(await C.toArray(g.b!)).toEqual([2, 3]);
    const gc = C.grad((x: Tensor) => C.sum(C.mul(C.cast(x, 'f32'), C.tensor([1.5, -2]))))(C.tensor([1, 1], { dtype: 'f64' }));
    expect(gc.dtype).toBe('f64');
    expect(await C.toArray(gc)).toEqual([1.5, -2]);
    const [[v, aux], gu] = C.valueAndGrad((p: { x: Tensor; unused: Tensor }) => [C.sum(C.square(p.x)), 42] as const, { hasAux: true })({ x: C.tensor([3]), unused: C.tensor([[1, 2]]) });
    expect(await item(v)).toBe(9);
    expect(aux).toBe(42);
    expect(await C.toArray(gu.x)).toEqual([6]);
    expect(await C.toArray(gu.unused)).toEqual([[0, 0]]);
  });

  it('the same tensor passed twice gets its own gradient in each place', async () => {
    const t = C.tensor([2]);
    const g = C.grad((p: Tensor[]) => C.sum(C.mul(p[0]!, C.mul(p[1]!, p[1]!))))([t, t]);
    expect(await C.toArray(g[0]!)).toEqual([4]);
    expect(await C.toArray(g[1]!)).toEqual([8]);
  });
});
