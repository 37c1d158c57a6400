// WebGPU against the interpreter: every op in the table (f32, per-op tolerance), random fused graphs and their
// gradients (fused == unfused == interpreter), and kernel counts for known graphs.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { numel } from '../core/shape.js';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import type { Node } from '../core/node.js';
import { interpret } from '../core/interp.js';
import { planScratch, runGraph } from '../core/runtime.js';
import { schedule, type ScheduleOpts } from '../core/schedule/index.js';
import { gpuDevice } from './gpu.js';
import { fillValues, OPS, shapeArb, type Case } from './optable.js';
import './setup.js';

const dev = gpuDevice!;
const f32 = (vals: number[], shape: readonly number[]) => C.tensor(Float32Array.from(vals), { shape });

/** Values of `outs` on the GPU (fused or not) — fresh graph each call, so nothing is shared with the oracle. */
const onGpu = async (outs: readonly Tensor[], fuse = true, opts: ScheduleOpts = {}): Promise<Float32Array[]> => {
  await runGraph(dev, outs.map((t) => t.node), { fuse, ...opts });
  const res = [];
  for (const t of outs) res.push(Float32Array.from(await C.data(t)));
  for (const t of outs) t.dispose();
  return res;
};
const onCpu = (outs: readonly Tensor[]): Float64Array[] => interpret(outs.map((t) => t.node)).map((s) => Float64Array.from(s));

const close = (got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) => {
  expect(got.length, what).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    const ok = Math.abs(got[i]! - want[i]!) <= tol * (1 + Math.abs(want[i]!)) || (Number.isNaN(got[i]!) && Number.isNaN(want[i]!));
    if (!ok) throw new Error(`${what}: element ${i}: webgpu ${got[i]} vs interpreter ${want[i]} (tol ${tol})`);
  }
};

const build = (c: Case, seed: number): Tensor => c.f(...c.shapes.map((s, i) => f32(fillValues(numel(s), c.domains[i]!, seed + 101 * i), s)));

describe.skipIf(!gpuDevice)('WebGPU vs interpreter', () => {
  C.setBackend('webgpu');
  describe('every op in the table (f32)', () => {
    for (const op of OPS) {
      it(op.name, async () => {
        await fc.assert(fc.asyncProperty(op.cases, fc.integer({ min: 1, max: 2 ** 30 }), async (c, seed) => {
          const [want] = onCpu([build(c, seed)]);
          const [got] = await onGpu([build(c, seed)]);
          close(got!, want!, op.tol32 ?? 2e-5, c.desc);
        }), { numRuns: 4 });
      });
    }
  });

  // Random expression graphs: chains of unary/binary ops, broadcasts, views, reductions and a matmul.
  type G = (xs: Tensor[]) => Tensor;
  const unary: [string, G][] = [['exp', ([x]) => C.exp(C.mul(x!, 0.3))], ['tanh', ([x]) => C.tanh(x!)], ['relu', ([x]) => C.relu(x!)], ['sq', ([x]) => C.square(x!)], ['neg', ([x]) => C.neg(x!)]];
  const graphArb = fc.record({
    s: shapeArb(2, 3),
    ops: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 2, maxLength: 7 }),
    seed: fc.integer({ min: 1, max: 2 ** 30 }),
  });
  const program = (s: readonly number[], ops: readonly number[]) => (x: Tensor, y: Tensor): Tensor => {
    let h = x;
    for (const o of ops) {
      if (o < 5) h = unary[o]![1]([h]);
      else if (o === 5) h = C.add(h, C.sum(y, -1, { keepDims: true })); // broadcast a reduction back
      else if (o === 6) h = C.mul(h, C.slice(C.pad(y, s.map(() => [1, 0] as const)), s.map(() => 0), s)); // views
      else if (o === 7) h = C.softmax(h, 0);
      else if (o === 8) { const n = s[s.length - 1]!; h = C.add(h, C.matmul(h, f32(fillValues(n * n, 'unit', 99).map((v) => 0.3 * v), [n, n]))); }
      else h = C.sub(h, C.mean(h, [0], { keepDims: true }));
    }
    return C.sum(C.mul(h, h));
  };

  it('random graphs: fused (with and without matmul prologues) == unfused == interpreter, values and gradients', async () => {
    await fc.assert(fc.asyncProperty(graphArb, async ({ s, ops, seed }) => {
      const f = program(s, ops);
      const mk = () => [f32(fillValues(numel(s), 'unit', seed), s), f32(fillValues(numel(s), 'unit', seed + 1), s)];
      const outs = () => { const [x, y] = mk(); const [v, g] = C.valueAndGrad((p: Tensor[]) => f(p[0]!, p[1]!))([x!, y!]); return [v, g[0]!, g[1]!]; };
      const want = onCpu(outs());
      const fused = await onGpu(outs(), true);
      const unfused = await onGpu(outs(), false);
      const prologues = await onGpu(outs(), true, { prologueBudget: 10_000 }); // every matmul operand computed on load
      want.forEach((w, i) => {
        close(fused[i]!, w, 2e-3, `fused output ${i} of ops ${ops} on ${JSON.stringify(s)}`);
        close(prologues[i]!, w, 2e-3, `fused output ${i} (matmul prologues) of ops ${ops} on ${JSON.stringify(s)}`);
        close(unfused[i]!, w, 2e-3, `unfused output ${i} of ops ${ops} on ${JSON.stringify(s)}`);
      });
    }), { numRuns: 8 });
  });

  it('row kernels in both modes (many short rows: one invocation per row; long rows: a workgroup each, folded by subgroups when the adapter has them, else by a tree)', async () => {
    const features = dev.features as { subgroups: boolean };
    const had = features.subgroups;
    try {
      for (const subgroups of had ? [true, false] : [false]) {
        features.subgroups = subgroups;
        for (const shape of [[4096, 7], [3, 1000]]) {
          const mk = () => { const x = f32(fillValues(numel(shape), 'any', 11), shape); return [C.softmax(x), C.logsumexp(x, -1), C.sub(x, C.mean(x, -1, { keepDims: true }))]; };
          const want = onCpu(mk());
          const got = await onGpu(mk());
          want.forEach((w, i) => close(got[i]!, w, 1e-5, `row kernel output ${i} on ${JSON.stringify(shape)}, subgroups ${subgroups}`));
        }
      }
    } finally {
      features.subgroups = had;
    }
  });

  it('matmul operands computed on load (fused prologues): a normalised input and a concatenated, transposed weight, tiled and GEMV, with gradients', async () => {
    for (const [M, K, N, n1] of [[37, 20, 45, 17], [1, 33, 70, 6], [50, 16, 1, 1], [64, 24, 40, 40]] as const) {
      const mk = () => {
        const x = f32(fillValues(M * K, 'any', 21), [M, K]);
        const g = f32(fillValues(K, 'unit', 22), [K]);
        const ws = [f32(fillValues(n1 * K, 'unit', 23), [n1, K]), ...(N > n1 ? [f32(fillValues((N - n1) * K, 'unit', 24), [N - n1, K])] : [])];
        const f = (p: Tensor[]) => {
          const a = C.mul(C.silu(C.mul(p[0]!, C.rsqrt(C.add(C.mean(C.square(p[0]!), -1, { keepDims: true }), 1e-5)))), g);
          return C.sum(C.square(C.matmul(a, C.transpose(C.concat(p.slice(1), 0)))));
        };
        const [v, gr] = C.valueAndGrad(f)([x, ...ws]);
        return [v, ...gr];
      };
      // A budget large enough that every operand here is computed on load (adapters get smaller ones).
      const opts = { prologueBudget: 10_000 };
      const outs = mk();
      const ks = schedule(outs.map((t) => t.node), opts);
      // The forward matmul reads neither the normalised input nor the concatenated weight from memory.
      const fwd = ks.find((k) => k.kind === 'matmul' && k.M === M && k.N === N && k.K === K);
      expect(fwd && fwd.kind === 'matmul' && fwd.a.value !== undefined && (N === n1 || fwd.b.value !== undefined), `shape ${[M, K, N]}`).toBe(true);
      outs.forEach((t) => t.dispose());
      const want = onCpu(mk());
      const got = await onGpu(mk(), true, opts);
      want.forEach((w, i) => close(got[i]!, w, 1e-4, `output ${i} for M ${M} K ${K} N ${N}`));
    }
  });

  it('with a CPU adapter\'s budget, silu(gate)·up is computed on load by a matmul at most 64 wide (once per element), stored for a wider one', async () => {
    for (const [R, K, H, N] of [[37, 20, 30, 24], [37, 20, 30, 72]] as const) {
      const mk = () => {
        const x = f32(fillValues(R * K, 'any', 51), [R, K]);
        const wgu = f32(fillValues(2 * H * K, 'unit', 52), [2 * H, K]), w2 = f32(fillValues(N * H, 'unit', 53), [N, H]);
        const gu = C.matmul(x, C.transpose(wgu));
        const h = C.mul(C.silu(C.slice(gu, [0, 0], [R, H])), C.slice(gu, [0, H], [R, 2 * H]));
        return [C.matmul(h, C.transpose(w2))];
      };
      const opts = { prologueBudget: 8 };
      const ks = schedule(mk().map((t) => t.node), opts);
      expect(ks.map((k) => k.kind), `N ${N}`).toEqual(N <= 64 ? ['matmul', 'matmul'] : ['matmul', 'elementwise', 'matmul']);
      if (N > 64) continue; // the stored case is the plain path, run by other tests
      const [want] = onCpu(mk());
      const [got] = await onGpu(mk(), true, opts);
      close(got!, want!, 1e-4, `silu(gate)·up projected to ${N}`);
    }
  });

  it('a matmul read transposed by its only consumer (a weight update) computes the transposed product, with the update as its epilogue', async () => {
    for (const [R, I, O] of [[37, 20, 45], [16, 24, 24], [9, 1, 30]] as const) {
      const mk = () => {
        const x = f32(fillValues(R * I, 'any', 31), [R, I]), dy = f32(fillValues(R * O, 'any', 32), [R, O]);
        const w = f32(fillValues(O * I, 'unit', 33), [O, I]);
        return C.sub(w, C.mul(C.transpose(C.matmul(C.transpose(x), dy)), 0.1)); // w − lr·(xᵀ·dy)ᵀ, w: (out, in)
      };
      const ks = schedule([mk().node]);
      expect(ks.map((k) => k.kind), `shape ${[R, I, O]}`).toEqual(['matmul']);
      const [want] = onCpu([mk()]);
      const [got] = await onGpu([mk()]);
      close(got!, want!, 1e-5, `update for ${[R, I, O]}`);
    }
  });

  it('weights updated from slices of one matmul (a concatenated projection) are all stored by that matmul kernel', async () => {
    // w_i − lr·(xᵀ·dy)ᵀ[rows of w_i], x normalised on load (ragged tiles) or not (a GEMV).
    for (const [R, I, parts, norm] of [[37, 20, [7, 16, 5], true], [9, 1, [3, 4], false]] as const) {
      const O = parts.reduce((s, p) => s + p, 0);
      const mk = (alsoGrad = false) => {
        const x0 = f32(fillValues(R * I, 'any', 41), [R, I]), dy = f32(fillValues(R * O, 'any', 42), [R, O]);
        const x = norm ? C.mul(x0, C.rsqrt(C.add(C.mean(C.square(x0), -1, { keepDims: true }), 1e-5))) : x0;
        const g = C.transpose(C.matmul(C.transpose(x), dy)); // (O, I)
        let at = 0;
        const outs = parts.map((p, i) => {
          const w = f32(fillValues(p * I, 'unit', 43 + i), [p, I]);
          const gi = C.slice(g, [at, 0], [at + p, I]);
          at += p;
          return C.sub(w, C.mul(gi, 0.1));
        });
        return alsoGrad ? [...outs, C.slice(g, [0, 0], [1, I])] : outs;
      };
      const what = `shape ${[R, I, O]}`;
      const ks = schedule(mk().map((t) => t.node), { maxInputs: 15 });
      const mms = ks.filter((k) => k.kind === 'matmul');
      expect(mms.length, what).toBe(1);
      expect(ks.length, what).toBe(norm ? 2 : 1); // the row statistics of the normalisation, then the matmul
      // Each output right, and where the slices cannot all be stored by the matmul (a too-small buffer limit,
      // or another reader of the product), the usual kernels are right too.
      const fallbacks = norm ? [[{ maxInputs: 4 }, false], [{ maxInputs: 15 }, true]] as const : [];
      for (const [opts, alsoGrad] of [[{ maxInputs: 15 }, false] as const, ...fallbacks]) {
        const want = onCpu(mk(alsoGrad));
        const got = await onGpu(mk(alsoGrad), true, opts);
        want.forEach((w, i) => close(got[i]!, w, 1e-5, `output ${i} for ${what}, ${JSON.stringify(opts)}${alsoGrad ? ' with the gradient read too' : ''}`));
      }
      expect(schedule(mk(true).map((t) => t.node), { maxInputs: 15 }).length, what).toBeGreaterThan(ks.length);
    }
  });

  it('a concatenation of terms of one matmul (the SwiGLU backward, [dA·up·silu′(gate) | dA·silu(gate)]) is stored part by part by that matmul', async () => {
    for (const [R, K, N] of [[40, 12, 20], [7, 5, 1]] as const) {
      const mk = () => {
        const x = f32(fillValues(R * K, 'any', 51), [R, K]), w = f32(fillValues(K * N, 'unit', 52), [K, N]);
        const h = f32(fillValues(R * 2 * N, 'any', 53), [R, 2 * N]);
        const gate = C.slice(h, [0, 0], [R, N]), up = C.slice(h, [0, N], [R, 2 * N]);
        const dA = C.matmul(x, w);
        const s = C.sigmoid(gate);
        const dGate = C.mul(C.mul(dA, up), C.mul(s, C.add(1, C.mul(gate, C.sub(1, s)))));
        const both = C.concat([dGate, C.mul(dA, C.mul(gate, s))], 1); // (R, 2N), read by a matmul as well
        return [both, C.matmul(C.transpose(both), x)];
      };
      const what = `shape ${[R, K, N]}`;
      const ks = schedule(mk().map((t) => t.node), { maxInputs: 15 });
      expect(ks.map((k) => k.kind), what).toEqual(['matmul', 'matmul']);
      const want = onCpu(mk());
      const got = await onGpu(mk(), true, { maxInputs: 15 });
      want.forEach((w, i) => close(got[i]!, w, 1e-5, `output ${i} for ${what}`));
    }
  });

  describe('kernel counts', () => {
    const count = (...ts: Tensor[]) => schedule(ts.map((t) => t.node as Node)).length;
    const a = f32(fillValues(64, 'any', 1), [8, 8]), b = f32(fillValues(64, 'any', 2), [8, 8]), c = f32(fillValues(8, 'any', 3), [8]);
    it('sum(exp(a*b+c)) is 1 kernel', () => expect(count(C.sum(C.exp(C.add(C.mul(a, b), c))))).toBe(1));
    it('softmax over the last axis is ≤ 2 kernels (here 1)', () => expect(count(C.softmax(a))).toBeLessThanOrEqual(2));
    it('a chain of 10 elementwise ops over broadcast views is 1 kernel', () => {
      let h = C.transpose(a);
      for (let i = 0; i < 10; i++) h = C.tanh(C.add(h, C.mul(c, i)));
      expect(count(h)).toBe(1);
    });
    it('no kernel only copies data for a permute/expand/slice', () => {
      const ks = schedule([C.add(C.matmul(C.transpose(a), C.broadcastTo(c, [8, 8])), C.slice(C.pad(b, [[1, 1], [0, 0]]), [1, 0], [9, 8])).node]);
      expect(ks.map((k) => k.kind)).toEqual(['matmul']);
    });
    it('a costly value broadcast far beyond its size (a RoPE table) is stored once; a cheap one is recomputed inline', () => {
      const x = f32(fillValues(16 * 256 * 16, 'any', 9), [16, 256, 16]);
      let t = C.cast(C.iota(256), 'f32');
      for (let i = 0; i < 8; i++) t = C.sin(C.add(C.mul(t, 0.5), i)); // 24 ops per element of a (256,) vector
      const costly = schedule([C.mul(x, C.reshape(t, [1, 256, 1])).node]);
      expect(costly.map((k) => [k.kind, k.out.shape])).toEqual([['elementwise', [256]], ['elementwise', [16, 256, 16]]]);
      expect(count(C.mul(x, C.reshape(C.sin(C.cast(C.iota(256), 'f32')), [1, 256, 1])))).toBe(1);
      const big = C.tensor(new Float32Array(2048 * 1024), { shape: [2048, 1024] }); // constants broadcast 2M times: still inline
      expect(count(C.add(C.mul(C.tanh(C.mul(big, 1.5)), C.sigmoid(big)), C.mul(C.mul(C.cast(C.iota(1024), 'f32'), 0.5), 3)))).toBe(1);
    });
    it('matmul + bias + relu is one kernel (fused epilogue)', () => expect(count(C.relu(C.add(C.matmul(a, b), c)))).toBe(1));
    it('a 2-layer MLP loss and its full gradient is ≤ 10 kernels', () => {
      const x = f32(fillValues(64 * 12, 'any', 4), [64, 12]);
      const y = C.tensor(Array.from({ length: 64 }, (_, i) => i % 10), { dtype: 'i32' });
      const loss = (p: Record<string, Tensor>) => {
        const h = C.relu(C.add(C.matmul(x, p.w1!), p.b1!));
        const logits = C.add(C.matmul(h, p.w2!), p.b2!);
        return C.neg(C.mean(C.sum(C.mul(C.logSoftmax(logits), C.oneHot(y, 10)), -1)));
      };
      const p = { w1: f32(fillValues(12 * 16, 'unit', 5), [12, 16]), b1: f32(fillValues(16, 'unit', 6), [16]), w2: f32(fillValues(160, 'unit', 7), [16, 10]), b2: f32(fillValues(10, 'unit', 8), [10]) };
      const [v, g] = C.valueAndGrad(loss)(p);
      const n = count(v, g.w1!, g.b1!, g.w2!, g.b2!);
      console.log(`MLP loss + gradient: ${n} kernels`);
      expect(n).toBeLessThanOrEqual(10);
    });
  });

  it('a buffer larger than the adapter binding limit is a clear error, not a crash', async () => {
    const lim = dev.limits.maxStorageBufferBindingSize;
    const n = Math.floor(lim / 4) + 1024;
    const big = C.mul(C.full([n], 1), C.tensor([2]));
    await expect(C.realize(big)).rejects.toThrow(/mul \[\d+\] needs a \d+-byte buffer, over this adapter's storage binding limit/);
  });
});

describe.skipIf(!gpuDevice)('scratch buffers', () => {
  it('a node a kernel reads twice (attention: q and k views of one buffer) is freed once: no later output shares a live buffer', () => {
    const x = C.tensor([1, 2, 3, 4]);
    const [a, b, c, d] = [C.exp(x), C.neg(x), C.tanh(x), C.sin(x)].map((t) => t.node);
    const k = (out: Node, inputs: Node[]) => ({ kind: 'gather' as const, out, inputs });
    const kernels = [k(a!, [x.node]), k(b!, [a!, a!]), k(c!, [b!]), k(d!, [b!, c!])];
    const scratch = planScratch(dev, kernels.map((kk) => [kk]), new Set()); // each its own dispatch
    for (const kk of kernels) {
      const live = kk.inputs.filter((n) => scratch.has(n)).map((n) => scratch.get(n));
      expect(live, `kernel for ${kk.out.op.name}`).not.toContain(scratch.get(kk.out));
    }
    for (const buf of new Set(scratch.values())) dev.free(buf);
  });
});

describe.skipIf(!gpuDevice)('kernels that would read too many buffers', () => {
  it('a sum of 40 separately stored tensors is split to fit the storage-buffer limit, and is right', async () => {
    C.setBackend('webgpu');
    const mk = () => Array.from({ length: 40 }, (_, i) => C.tensor([i, 2 * i, 3 * i]));
    const total = (ts: Tensor[]) => ts.reduce((a, t) => C.add(a, C.mul(t, t)));
    const ks = schedule([total(mk()).node], { maxInputs: 7 });
    expect(ks.every((k) => k.inputs.length <= 7)).toBe(true);
    const [got] = await onGpu([total(mk())]);
    const want = [1, 4, 9].map((c) => c * Array.from({ length: 40 }, (_, i) => i * i).reduce((a, b) => a + b));
    expect(Array.from(got!)).toEqual(want);
  });
});
