// Compiled-step replay: a jitted MLP training step called 20 times compiles and allocates nothing after the
// first call, submits once per call, and matches the interpreter step for step.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { gpuDevice } from './gpu.js';
import { fillValues } from './optable.js';
import { mlpLoss, type Mlp } from '../examples/spirals.js';
import { sgdStep } from '../recipes/sgd.js';

const f32 = (shape: number[], seed: number, scale = 1) => C.tensor(Float32Array.from(fillValues(shape.reduce((a, b) => a * b, 1), 'unit', seed).map((v) => v * scale)), { shape });
const init = (): Mlp => ({ w1: f32([2, 16], 1, 2), b1: f32([16], 2, 0.1), w2: f32([16, 2], 3, 0.5), b2: f32([2], 4, 0.1) });
const x = f32([32, 2], 5), y = C.tensor(Array.from({ length: 32 }, (_, i) => i % 2), { dtype: 'i32' });

const stepFn = (p: Mlp, lr: number): [Mlp, Tensor] => {
  const [loss, g] = C.valueAndGrad(mlpLoss)(p, x, y);
  return [sgdStep(p, g, lr), loss];
};

describe.skipIf(!gpuDevice)('jit (WebGPU)', () => {
  it('20 jitted steps: 0 compiles and 0 allocations after the first, one submit each, same losses as the interpreter', async () => {
    C.setBackend('cpu');
    let pc = init();
    const cpuLosses: number[] = [];
    for (let i = 0; i < 20; i++) {
      const [np, loss] = stepFn(pc, 0.3);
      await C.realize(loss, ...Object.values(np));
      cpuLosses.push(await C.item(loss));
      pc = np;
    }
    C.setBackend('webgpu');
    const step = C.jit(stepFn, { donate: [0] });
    let p = init();
    const gpuLosses: number[] = [];
    let after1 = null as null | { compiles: number; allocations: number; submits: number };
    for (let i = 0; i < 20; i++) {
      const [np, loss] = await step(p, 0.3);
      gpuLosses.push(await C.item(loss));
      loss.dispose();
      p = np;
      const c = gpuDevice!.counters;
      if (i === 1) after1 = { compiles: c.compiles, allocations: c.allocations, submits: c.submits };
      if (i === 19) {
        expect(c.compiles - after1!.compiles).toBe(0);
        expect(c.allocations - after1!.allocations).toBe(0);
        // One submit per step, plus one per readback of the loss.
        expect(c.submits - after1!.submits).toBeLessThanOrEqual(2 * 18);
      }
    }
    console.log(`jitted MLP step: ${step.kernels} kernels; losses ${gpuLosses[0]!.toFixed(4)} → ${gpuLosses[19]!.toFixed(4)}`);
    gpuLosses.forEach((l, i) => expect(Math.abs(l - cpuLosses[i]!)).toBeLessThan(1e-4 * (1 + Math.abs(l))));
    expect(gpuLosses[19]!).toBeLessThan(gpuLosses[0]!);
    for (const t of Object.values(p)) t.dispose();
  });

  it('a donated cache is updated in place by writeAt: no copies, no allocations, no compiles per step', async () => {
    C.setBackend('webgpu');
    const step = C.jit((cache: Tensor, x: Tensor, pos: Tensor) => {
      const next = C.writeAt(cache, x, pos, 1);
      return [next, C.sum(next)] as const;
    }, { donate: [0], intArgs: [2] });
    let cache = C.zeros([2, 8, 3]);
    await C.realize(cache);
    const x = C.tensor(new Float32Array(6).fill(1), { shape: [2, 1, 3] });
    let before = null as null | { allocations: number; compiles: number };
    for (let p = 0; p < 8; p++) {
      const [next, total] = await step(cache, x, p);
      expect(await C.item(total)).toBe(6 * (p + 1));
      total.dispose();
      if (p === 1) before = { allocations: gpuDevice!.counters.allocations, compiles: gpuDevice!.counters.compiles };
      cache = next;
    }
    expect(gpuDevice!.counters.allocations).toBe(before!.allocations);
    expect(gpuDevice!.counters.compiles).toBe(before!.compiles);
    expect(step.kernels).toBe(2); // the in-place write and the sum: no copy of the cache
    expect(await C.toArray(C.sum(cache, [0, 2]))).toEqual(Array(8).fill(6));
    cache.dispose();
  });

  it('a donated input read again after its update in the same step is copied, not overwritten: it keeps its old values there', async () => {
    // writeAt may write over a donated dst only where the update is its last reader. Here the step also reads the
    // old cache after the update (next − cache, in one kernel with next, so necessarily after it; and a sum of it):
    // written in place, next − cache would be 0 at the new row instead of x − old, and the sum would see x.
    C.setBackend('webgpu');
    const step = C.jit((cache: Tensor, x: Tensor, pos: Tensor) => {
      const next = C.writeAt(cache, x, pos, 1); // (2, 4, 3)
      return [next, C.sub(next, cache), C.sum(cache)] as const;
    }, { donate: [0], intArgs: [2] });
    const old = Float32Array.from({ length: 24 }, (_, i) => i + 1);
    const cache = C.tensor(old, { shape: [2, 4, 3] });
    await C.realize(cache);
    const x = C.tensor(new Float32Array(6).fill(100), { shape: [2, 1, 3] });
    const [next, diff, total] = await step(cache, x, 2);
    const want = Array.from(old, (v, i) => (Math.floor(i / 3) % 4 === 2 ? 100 - v : 0)); // only row 2 of each batch changed
    expect(Array.from(await C.data(diff))).toEqual(want);
    expect(await C.item(total)).toBe(300); // 1 + … + 24
    expect(Array.from(await C.data(next))).toEqual(Array.from(old, (v, i) => (Math.floor(i / 3) % 4 === 2 ? 100 : v)));
    for (const t of [next, diff, total, x]) t.dispose();
  });

  it('number arguments are uniforms: a new value needs no recompile', async () => {
    C.setBackend('webgpu');
    const f = C.jit((a: Tensor, s: number) => C.mul(a, s));
    const a = C.tensor([1, 2, 3]);
    const r1 = await f(a, 2);
    const before = gpuDevice!.counters.compiles;
    const r2 = await f(a, -0.5);
    expect(gpuDevice!.counters.compiles).toBe(before);
    expect(await C.toArray(r1)).toEqual([2, 4, 6]);
    expect(await C.toArray(r2)).toEqual([-0.5, -1, -1.5]);
    r1.dispose(); r2.dispose();
  });

  it('scope() frees everything realised inside it except what it returns', async () => {
    C.setBackend('webgpu');
    const x = C.tensor(new Float32Array(4096).fill(1));
    let inner: Tensor | null = null;
    const kept = await C.scope(async () => {
      const a = C.exp(x), b = C.mul(a, 2);
      await C.realize(a, b);
      inner = a;
      expect(a.node.gpu).not.toBeNull();
      return b;
    });
    expect(inner!.node.gpu).toBeNull();
    expect(x.node.gpu).toBeNull(); // uploaded inside the scope, so freed with it (its host copy remains)
    expect(kept.node.gpu).not.toBeNull();
    expect((await C.data(kept))[0]).toBeCloseTo(2 * Math.E, 5);
    kept.dispose();
  });

  it('disposing results returns memory: bytes in use come back to where they were', async () => {
    C.setBackend('webgpu');
    const c = C.tensor(new Float32Array(1024));
    const t = C.exp(c);
    await C.realize(t);
    // Measured synchronously around dispose, so no finalizer (the leak detector) can run in between.
    const held = gpuDevice!.counters.bytesInUse;
    t.dispose();
    c.dispose();
    expect(held - gpuDevice!.counters.bytesInUse).toBeGreaterThanOrEqual(2 * 4096);
    expect(t.node.gpu).toBeNull();
  });

  it(`keeps at most ${C.MAX_PLANS} plans per jitted function: a plan dropped for a new shape gives its scratch memory back`, async () => {
    C.setBackend('webgpu');
    const f = C.jit((a: Tensor) => C.sum(C.matmul(a, C.transpose(a)))); // the (16, 16) product is scratch
    const call = async (cols: number) => {
      const a = C.tensor(new Float32Array(16 * cols).fill(0.5), { shape: [16, cols] });
      const s = await f(a);
      expect(await C.item(s)).toBeCloseTo(256 * cols * 0.25, 3);
      s.dispose();
      a.dispose();
    };
    for (let c = 1; c <= C.MAX_PLANS; c++) await call(c);
    expect(f.plans).toBe(C.MAX_PLANS);
    // Finalizers of earlier tests' tensors may free buffers meanwhile, never take them: bytes in use cannot grow.
    const held = gpuDevice!.counters.bytesInUse;
    for (let c = C.MAX_PLANS + 1; c <= C.MAX_PLANS + 6; c++) await call(c);
    expect(f.plans).toBe(C.MAX_PLANS);
    expect(gpuDevice!.counters.bytesInUse).toBeLessThanOrEqual(held);
    await call(1); // a dropped shape is traced again, and still right
    expect(f.plans).toBe(C.MAX_PLANS);
  });

  it('dispose() gives every plan\'s scratch memory back at once, and a later call traces again and is still right', async () => {
    C.setBackend('webgpu');
    const f = C.jit((a: Tensor) => C.sum(C.matmul(a, C.transpose(a)))); // the (64, 64) product is scratch: 16 KiB
    const a = C.tensor(new Float32Array(64 * 8).fill(0.5), { shape: [64, 8] });
    await C.realize(a);
    const s = await f(a);
    expect(await C.item(s)).toBeCloseTo(64 * 64 * 8 * 0.25, 2);
    s.dispose();
    // From here to the next read all is synchronous: no finalizer of an earlier test's tensor can free a buffer in
    // between (across an await one may: a count taken before the first call is not compared).
    const held = gpuDevice!.counters.bytesInUse;
    f.dispose();
    expect(f.plans).toBe(0);
    expect(held - gpuDevice!.counters.bytesInUse).toBeGreaterThanOrEqual(64 * 64 * 4);
    const s2 = await f(a);
    expect(f.plans).toBe(1);
    expect(await C.item(s2)).toBeCloseTo(64 * 64 * 8 * 0.25, 2);
    s2.dispose();
    f.dispose();
    a.dispose();
  });

  it('a tensor realised twice in one call (shared leaves of a parameter tree) gets one buffer', async () => {
    C.setBackend('webgpu');
    const c = C.tensor(new Float32Array(1024));
    await C.realize(c);
    const t = C.exp(c);
    const before = gpuDevice!.counters.bytesInUse;
    await C.realize(t, t, t);
    expect(gpuDevice!.counters.bytesInUse - before).toBe(4096);
    t.dispose();
    c.dispose();
  });

  it('arguments that are still lazy graphs (a fresh init, a broadcast constant) are computed before the plan binds them', async () => {
    C.setBackend('webgpu');
    const f = C.jit((p: { w: Tensor; b: Tensor }, v: Tensor) => C.add(C.matmul(v, p.w), p.b));
    const p = { w: C.mul(C.ones([3, 2]), 2), b: C.add(C.tensor([1, -1]), 0) }; // neither realised
    const v = C.tensor([[1, 2, 3]]);
    expect(await C.toArray(await f(p, v))).toEqual([[13, 11]]);
    expect(await C.toArray(await f({ w: C.mul(C.ones([3, 2]), 3), b: C.zeros([2]) }, v))).toEqual([[18, 18]]);
  });
  it('a donated constant (optimizer zeros) is not a buffer other graphs read: equal constants are computed in place', async () => {
    C.setBackend('webgpu');
    // full([], 0) is hash-consed with the 0 that maximum(x, 0) lifts: donating the state must not free that 0.
    const f = C.jit((s: { c: Tensor }, x: Tensor) => ({ c: C.add(s.c, 1), y: C.maximum(x, 0) }), { donate: [0] });
    let s = { c: C.full([], 0) };
    const x = C.tensor([-1, 2]);
    for (let i = 1; i <= 3; i++) {
      const out = await f(s, x);
      expect(await C.toArray(out.y)).toEqual([0, 2]);
      expect(await C.item(out.c)).toBe(i);
      s = { c: out.c };
    }
  });
});
