// Fused elementwise throughput against a plain vec4 copy, and a jitted 2-layer MLP training step against
// @jax-js/jax, all on the same Dawn adapter in one run. Ratios are what to read; absolute numbers move with load.

import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { webgpuDevice } from '../core/runtime.js';
import { numel } from '../core/shape.js';
import type { Device } from '../core/device.js';
import { compileGraph, measureCopy, median, prepareJax, timeDispatches } from './matmul.js';

/** Median ms per call of an async step, awaiting the device after `reps` calls (sleeping first, per PERF-NOTES). */
const timeCalls = async (dev: Device, call: () => Promise<void>, reps: number, trials: number): Promise<number> => {
  const samples: number[] = [];
  let guess = 0;
  for (let t = 0; t <= trials; t++) {
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) await call();
    await dev.sync(dev.adapter.isSoftware ? guess * 0.8 : 0); // sleep only where spinning slows the adapter
    const ms = performance.now() - t0;
    guess = ms;
    if (t > 0) samples.push(ms / reps);
  }
  return median(samples);
};

/**
 * A fused chain of 8 elementwise ops over `n` floats: GB/s counting one read and one write. Its kernel is timed
 * with the same harness as the vec4 copy (timeDispatches), so the ratio compares kernels, not host paths.
 */
export const fusedChain = async (dev: Device, n = 16 * 1024 * 1024): Promise<{ gbs: number; kernels: number }> => {
  const x = C.tensor(new Float32Array(n).fill(0.25));
  await C.realize(x);
  const y = C.add(C.mul(C.tanh(C.mul(x, 1.5)), C.sigmoid(x)), C.mul(C.square(x), 0.5));
  const g = await compileGraph(dev, [y.node]);
  const { medianMs } = await timeDispatches(dev, g.list, { reps: 4, trials: 5 });
  g.free();
  x.dispose();
  return { gbs: (8 * n) / (medianMs * 1e6), kernels: g.kernels.length };
};

interface Mlp { readonly w1: Tensor; readonly b1: Tensor; readonly w2: Tensor; readonly b2: Tensor }
const rand = (shape: number[], scale: number) => C.tensor(Float32Array.from({ length: numel(shape) }, () => (Math.random() - 0.5) * scale), { shape });

/** ms per jitted SGD step of a 784→256→10 MLP with softmax cross-entropy, batch 64; kernels and submits per step. */
export const mlpStep = async (dev: Device): Promise<{ ms: number; kernels: number; submits: number }> => {
  const x = rand([64, 784], 2);
  const y = C.tensor(Array.from({ length: 64 }, (_, i) => i % 10), { dtype: 'i32' });
  const loss = (p: Mlp) => {
    const h = C.relu(C.add(C.matmul(x, p.w1), p.b1)); // (64, 256)
    const logits = C.add(C.matmul(h, p.w2), p.b2); // (64, 10)
    return C.neg(C.mean(C.sum(C.mul(C.logSoftmax(logits), C.oneHot(y, 10)), -1)));
  };
  const step = C.jit((p: Mlp, lr: number) => {
    const [l, g] = C.valueAndGrad(loss)(p);
    return [{ w1: C.sub(p.w1, C.mul(g.w1, lr)), b1: C.sub(p.b1, C.mul(g.b1, lr)), w2: C.sub(p.w2, C.mul(g.w2, lr)), b2: C.sub(p.b2, C.mul(g.b2, lr)) }, l] as const;
  }, { donate: [0] });
  let p: Mlp = { w1: rand([784, 256], 0.1), b1: rand([256], 0), w2: rand([256, 10], 0.1), b2: rand([10], 0) };
  const run = async () => { const [np, l] = await step(p, 0.01); l.dispose(); p = np; };
  await run();
  await run();
  await dev.sync(); // the first dispatch of each pipeline compiles it inside the driver: keep that out of timing
  const s0 = dev.counters.submits;
  const ms = await timeCalls(dev, run, 10, 5);
  const submits = (dev.counters.submits - s0) / (10 * 6);
  for (const t of [...Object.values(p), x, y]) t.dispose();
  return { ms, kernels: step.kernels, submits };
};

/** The same MLP step in jax-js (jit of value-and-grad plus SGD), ms per step. */
export const jaxMlpStep = async (): Promise<number> => {
  const jax = await import('@jax-js/jax');
  const np = jax.numpy;
  type A = ReturnType<typeof np.array>;
  const arr = (shape: number[], scale: number) => np.array(Float32Array.from({ length: numel(shape) }, () => (Math.random() - 0.5) * scale)).reshape(shape);
  const x = arr([64, 784], 2);
  const yOne = jax.nn.oneHot(np.array(Int32Array.from({ length: 64 }, (_, i) => i % 10), { dtype: np.int32 }), 10);
  const lossFn = (w1: A, b1: A, w2: A, b2: A, xx: A, yy: A) => {
    const h = jax.nn.relu(np.add(np.matmul(xx, w1), b1));
    const logits = np.add(np.matmul(h, w2), b2);
    return np.negative(np.mean(np.sum(np.multiply(jax.nn.logSoftmax(logits), yy), -1)));
  };
  const step = jax.jit((w1: A, b1: A, w2: A, b2: A, xx: A, yy: A) => {
    const [l, g] = jax.valueAndGrad(lossFn, { argnums: [0, 1, 2, 3] })(w1.ref, b1.ref, w2.ref, b2.ref, xx, yy) as unknown as [A, A[]];
    const upd = (w: A, gw: A) => np.subtract(w, np.multiply(gw, 0.01));
    return [upd(w1, g[0]!), upd(b1, g[1]!), upd(w2, g[2]!), upd(b2, g[3]!), l];
  });
  let ps: A[] = [arr([784, 256], 0.1), np.zeros([256]), arr([256, 10], 0.1), np.zeros([10])];
  const run = async (reps: number) => {
    for (let r = 0; r < reps; r++) {
      const out = step(ps[0]!, ps[1]!, ps[2]!, ps[3]!, x.ref, yOne.ref) as unknown as A[];
      ps = out.slice(0, 4);
      out[4]!.dispose();
    }
    await jax.blockUntilReady(ps);
  };
  await run(2);
  const samples: number[] = [];
  for (let t = 0; t < 5; t++) { const t0 = performance.now(); await run(10); samples.push((performance.now() - t0) / 10); }
  return median(samples);
};

export const stepsMain = async (): Promise<void> => {
  C.setBackend('webgpu');
  const dev = await webgpuDevice();
  if (!dev) { console.log('no WebGPU adapter: skipping fused-chain and MLP benchmarks'); return; }
  // Copy and chain alternate over a few rounds (the adapter's speed drifts with load); medians of each.
  const copies: number[] = [], chains: number[] = [];
  let kernels = 0;
  for (let r = 0; r < 3; r++) {
    copies.push((await measureCopy(dev)).gbs);
    const chain = await fusedChain(dev);
    chains.push(chain.gbs);
    kernels = chain.kernels;
  }
  const [copy, chain] = [median(copies), median(chains)];
  console.log(`fused elementwise chain (8 ops, 16M f32): ${chain.toFixed(2)} GB/s in ${kernels} kernel; vec4 copy ${copy.toFixed(2)} GB/s → ${(100 * chain / copy).toFixed(0)}% of copy (medians of 3 alternating rounds)`);
  const ours = await mlpStep(dev);
  let jaxMs = NaN;
  try { await prepareJax(); jaxMs = await jaxMlpStep(); } catch (e) { console.log(`jax-js MLP step failed: ${String(e)}`); }
  console.log(`MLP train step (64×784→256→10, jitted): camelid ${ours.ms.toFixed(2)} ms/step, ${ours.kernels} kernels, ${ours.submits.toFixed(1)} submits/step; jax-js ${jaxMs.toFixed(2)} ms/step → ${(jaxMs / ours.ms).toFixed(2)}× faster`);
};
