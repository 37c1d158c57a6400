// The scheduler's decisions, branch by branch, on tiny graphs: which kernels a graph becomes (slice groups that
// cover their stored values exactly or not, matmul operands computed on load under each budget rule, row kernels
// folded into matmuls or not, small kernels sharing a dispatch), and on WebGPU the interpreter's values for each,
// so a wrong decision is caught by what it computes and not only by the kernel list.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import type { Node } from '../core/node.js';
import { interpret } from '../core/interp.js';
import { compileKernels, runGraph } from '../core/runtime.js';
import { kernelOuts, schedule, type Kernel, type ScheduleOpts } from '../core/schedule/index.js';
import { nf4Weight, quantizeNf4 } from '../models/nf4.js';
import { nf4Linear } from '../ops/nf4.js';
import { gpuDevice } from './gpu.js';
import './setup.js';

const rand = (shape: number[], seed: number) =>
  C.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(seed * 7.1 + i * 0.37) + 0.2 * Math.cos(i * seed)), { shape });

// Explicit options, so the kernel lists do not depend on the adapter (runGraph takes these over its own).
const OPTS: ScheduleOpts = { maxInputs: 7, prologueBudget: 8 };
const kernelsOf = (outs: readonly Tensor[], opts: ScheduleOpts = OPTS): Kernel[] => schedule(outs.map((t) => t.node), opts);
type Matmul = Extract<Kernel, { kind: 'matmul' }>;
const matmuls = (ks: readonly Kernel[]) => ks.filter((k): k is Matmul => k.kind === 'matmul');

/**
 * Each graph is built twice (GPU and interpreter never share nodes). On WebGPU: the dispatches run every
 * kernel after the kernels producing its inputs, and every output has the interpreter's values.
 */
const agrees = async (what: string, build: () => Tensor[], opts: ScheduleOpts = OPTS, tol = 1e-4): Promise<void> => {
  const dev = gpuDevice!;
  C.setBackend('webgpu');
  const outs = build();
  const want = interpret(build().map((t) => t.node));
  const compiled = await compileKernels(dev, schedule(outs.map((t) => t.node), { ...OPTS, ...opts }));
  const groupOf = new Map<Node, number>();
  compiled.forEach((c, g) => c.kernels.forEach((k) => kernelOuts(k).forEach((o) => groupOf.set(o, g))));
  compiled.forEach((c, g) => c.kernels.forEach((k) => k.inputs.forEach((n) => {
    const from = groupOf.get(n);
    if (from !== undefined) expect(from, `${what}: ${k.kind} for ${k.out.op.name} reads ${n.op.name} of dispatch ${from}, runs in ${g}`).toBeLessThan(g);
  })));
  await runGraph(dev, outs.map((t) => t.node), opts);
  for (const [i, t] of outs.entries()) {
    const got = await C.data(t);
    expect(got.length, `${what}: output ${i}`).toBe(want[i]!.length);
    for (let j = 0; j < got.length; j++) {
      const w = want[i]![j]!;
      if (!(Math.abs(got[j]! - w) <= tol * (1 + Math.abs(w)))) throw new Error(`${what}: output ${i} element ${j}: webgpu ${got[j]} vs interpreter ${w}`);
    }
    t.dispose();
  }
};

// ---- slice groups: a matmul whose result is sliced into several stored values --------------------------------
// m = a·b is (8, 6); nothing but the stored values reads it.
const product = () => C.matmul(rand([8, 4], 1), rand([4, 6], 2)); // (8, 6)
const sliceCases: [string, () => Tensor[], boolean][] = [
  // Rows 0–3 update a weight, rows 3–8 another: each stored value is all slices of m, one kernel stores both.
  ['two values, each wholly a slice', () => {
    const m = product();
    return [C.sub(rand([3, 6], 3), C.mul(C.slice(m, [0, 0], [3, 6]), 0.1)), C.add(rand([5, 6], 4), C.slice(m, [3, 0], [8, 6]))]; // (3, 6), (5, 6)
  }, true],
  // Columns: [m[:, 0:2] | 2·m[:, 2:6]] concatenated, a value made of two parts.
  ['one value of two column parts', () => {
    const m = product();
    return [C.concat([C.slice(m, [0, 0], [8, 2]), C.mul(C.slice(m, [0, 2], [8, 6]), 2)], 1)]; // (8, 6)
  }, true],
  // The second value holds rows 3–5 of m padded to 6 rows, plus y: its rows 2–6 come from y alone. A group would
  // store only the 2 rows m's tiles reach and leave 4 rows of it unwritten.
  ['a value only partly covered by its slice', () => {
    const m = product();
    return [C.sub(rand([3, 6], 3), C.slice(m, [0, 0], [3, 6])), C.add(rand([6, 6], 5), C.pad(C.slice(m, [3, 0], [5, 6]), [[0, 4], [0, 0]]))]; // (3, 6), (6, 6)
  }, false],
  // Two placements overlapping in rows 3–5 of one value (each element there is a sum of two products): a group
  // would have two invocations write those elements, each with its own term.
  ['two placements overlapping in one value', () => {
    const m = product();
    return [C.add(C.pad(C.slice(m, [0, 0], [5, 6]), [[0, 3], [0, 0]]), C.pad(C.slice(m, [3, 0], [8, 6]), [[3, 0], [0, 0]]))]; // (8, 6)
  }, false],
  // Columns 0–4 only of a value 6 wide, the rest from y.
  ['a value partly covered in its columns', () => {
    const m = product();
    return [C.mul(C.slice(m, [0, 0], [8, 2]), 3), C.add(rand([8, 6], 6), C.pad(C.slice(m, [0, 2], [8, 6]), [[0, 0], [0, 2]]))]; // (8, 2), (8, 6)
  }, false],
];

describe('slice groups', () => {
  for (const [what, build, grouped] of sliceCases) {
    it(`${what}: ${grouped ? 'one matmul kernel stores every value' : 'not a group (the product is stored, then read)'}`, () => {
      const ks = kernelsOf(build());
      const mm = matmuls(ks);
      expect(mm.length, what).toBe(1);
      if (grouped) {
        expect(ks.length, what).toBe(1);
        expect(mm[0]!.stores?.length, what).toBeGreaterThanOrEqual(2);
      } else {
        expect(mm[0]!.stores, what).toBeUndefined();
        expect(ks.length, what).toBeGreaterThan(1);
      }
    });
  }
});

describe.skipIf(!gpuDevice)('slice groups on WebGPU', () => {
  for (const [what, build] of sliceCases) it(`${what}: the interpreter's values`, () => agrees(what, build));
});

// ---- matmul operands computed on load (prologues) ------------------------------------------------------------
// A (R, 8) operand of `ops` chained sines over one buffer (each sin one op: ops + 1 of work per element), times
// w (8, N): each of its elements feeds N products.
const chain = (x: Tensor, ops: number) => { let h = x; for (let i = 0; i < ops; i++) h = C.sin(h); return h; };
const onLoad = (ks: readonly Kernel[]) => matmuls(ks).map((k) => [k.a.value !== undefined, k.b.value !== undefined]);
const projected = (N: number, ops: number) => [C.matmul(chain(rand([4, 8], 7), ops), rand([8, N], 8))]; // (4, N)

describe('matmul prologue budgets (budget 8, a CPU adapter\'s)', () => {
  it('one tile spans the uses (N ≤ 64): computed on load within max(budget, 16) of work, stored beyond', () => {
    expect(onLoad(kernelsOf(projected(24, 7)))).toEqual([[true, false]]); // 8 ≤ 8
    expect(onLoad(kernelsOf(projected(24, 10)))).toEqual([[true, false]]); // 11 ≤ 16: the least for one tile
    expect(onLoad(kernelsOf(projected(24, 15)))).toEqual([[true, false]]); // 16 ≤ 16
    expect(onLoad(kernelsOf(projected(24, 16)))).toEqual([[false, false]]); // 17 > 16
    expect(kernelsOf(projected(24, 16)).map((k) => k.kind)).toEqual(['elementwise', 'matmul']);
    expect(kernelsOf(projected(24, 15)).map((k) => k.kind)).toEqual(['matmul']);
  });

  it('budget 0 turns prologues off; fuse: false too', () => {
    expect(onLoad(kernelsOf(projected(24, 2), { ...OPTS, prologueBudget: 0 }))).toEqual([[false, false]]);
    expect(onLoad(kernelsOf(projected(24, 2), { ...OPTS, fuse: false }))).toEqual([[false, false]]);
  });

  it('wider than a tile (N > 64): the budget scales with the uses, the whole of it from 128', () => {
    expect(onLoad(kernelsOf(projected(128, 7)))).toEqual([[true, false]]); // 8 ≤ 8
    expect(onLoad(kernelsOf(projected(128, 8)))).toEqual([[false, false]]); // 9 > 8 (no least of 16 here)
    expect(onLoad(kernelsOf(projected(96, 5)))).toEqual([[true, false]]); // 6 ≤ 8·96/128 = 6
    expect(onLoad(kernelsOf(projected(96, 6)))).toEqual([[false, false]]); // 7 > 6
  });

  it('a GEMV\'s matrix (each element feeds one product) is not computed on load: its share is budget/128', () => {
    const gemv = (budget: number) => kernelsOf([C.matmul(rand([1, 8], 9), chain(rand([8, 24], 10), 1))], { ...OPTS, prologueBudget: budget });
    expect(onLoad(gemv(8))).toEqual([[false, false]]);
    expect(onLoad(gemv(32))).toEqual([[false, false]]);
    expect(onLoad(gemv(256))).toEqual([[false, true]]); // 2 ≤ 256/128
  });

  it('at most 4 buffers are read by one operand on load, whatever the budget', () => {
    const sumOf = (n: number) => [C.matmul(Array.from({ length: n }, (_, i) => rand([4, 8], 20 + i)).reduce((s, t) => C.add(s, t)), rand([8, 24], 11))];
    expect(onLoad(kernelsOf(sumOf(4), { ...OPTS, prologueBudget: 10_000 }))).toEqual([[true, false]]);
    expect(onLoad(kernelsOf(sumOf(5), { ...OPTS, prologueBudget: 10_000 }))).toEqual([[false, false]]);
  });
});

describe.skipIf(!gpuDevice)('matmul prologue budgets on WebGPU', () => {
  it('an operand of 10 chained sines computed on load (budget 8, one tile), and one of 16 stored: the interpreter\'s values', async () => {
    await agrees('prologue of 10', () => projected(24, 10));
    await agrees('stored operand of 16', () => projected(24, 16));
  });
});

// ---- row kernels folded into matmuls (core/schedule/rows.ts) ---------------------------------------------------
const softmaxOf = (B: number, M: number, N: number) => () => {
  const a = rand(B ? [B, M, 6] : [M, 6], 12), b = rand(B ? [B, 6, N] : [6, N], 13);
  return [C.softmax(C.matmul(a, b), -1)]; // ([B,] M, N)
};
const folds = (ks: readonly Kernel[]) => [matmuls(ks).filter((k) => k.rows).length, ks.filter((k) => k.kind === 'row').length];

describe('row folding', () => {
  it('folds a softmax over a 2-D product at most 64 wide with 2 rows or more; not a batched one, not one row', () => {
    expect(folds(kernelsOf(softmaxOf(0, 5, 16)()))).toEqual([1, 0]);
    expect(folds(kernelsOf(softmaxOf(0, 5, 64)()))).toEqual([1, 0]);
    expect(folds(kernelsOf(softmaxOf(0, 5, 65)()))).toEqual([0, 1]);
    expect(folds(kernelsOf(softmaxOf(2, 5, 16)()))).toEqual([0, 1]);
    expect(folds(kernelsOf(softmaxOf(0, 1, 16)()))).toEqual([0, 1]);
  });

  it('does not fold a row kernel that reads the product at another element (a row sum of the transposed product)', () => {
    const ks = kernelsOf([C.sum(C.transpose(C.matmul(rand([6, 4], 14), rand([4, 6], 15))), -1)]);
    expect(folds(ks)).toEqual([0, 1]);
  });
});

describe.skipIf(!gpuDevice)('row folding on WebGPU', () => {
  it('a folded softmax (5×16) and a batched one that is not (2×5×16): the interpreter\'s values', async () => {
    await agrees('folded softmax', softmaxOf(0, 5, 16));
    await agrees('batched softmax', softmaxOf(2, 5, 16));
  });
});

// ---- small kernels sharing a dispatch (groupSteps in core/runtime.ts) ----------------------------------------
describe.skipIf(!gpuDevice)('merged dispatches', () => {
  it('independent small kernels share dispatches, a kernel never shares one with its producer, and the values are the interpreter\'s', async () => {
    // Three independent column sums and three elementwise results, and a sum of two of the column sums, which must
    // run in a later dispatch than theirs. Small kernels with (n, 1, 1) grids: merged WGSL of matmuls (2-D grids, where
    // a part's workgroup offset matters most) costs a minute to compile on a cold lavapipe cache; merge.test has those.
    const build = () => {
      const xs = [0, 1, 2].map((i) => rand([6, 5], 30 + i));
      const sums = xs.map((x) => C.sum(C.exp(x), 0)); // (5,)
      const ts = xs.map((x) => C.mul(C.tanh(x), 2)); // (6, 5)
      return [...sums, ...ts, C.add(sums[0]!, C.mul(sums[2]!, 3))]; // last: (5,)
    };
    const ks = kernelsOf(build());
    const compiled = await compileKernels(gpuDevice!, ks);
    expect(compiled.length).toBeLessThan(ks.length);
    expect(compiled.some((c) => c.kernels.length > 1)).toBe(true);
    await agrees('merged', build);
  });
});

// ---- elementwise kernels with several outputs (core/schedule/outputs.ts) --------------------------------------
// AdamW's shape: new moments m′ and v′ are stored, and the parameter update reads both at its own element.
const adamLike = (shape: number[], g?: Tensor) => () => {
  const grad = g ?? C.mul(C.exp(rand(shape, 40)), 0.5);
  const m = C.add(C.mul(rand(shape, 41), 0.9), C.mul(grad, 0.1));
  const v = C.add(C.mul(C.abs(rand(shape, 42)), 0.99), C.mul(C.square(grad), 0.01));
  const theta = C.sub(rand(shape, 43), C.mul(C.div(m, C.add(C.sqrt(v), 1e-8)), 0.01));
  return [theta, m, v];
};
/** (8, 16) with its columns rotated by 8: read at another element than its own. */
const roll = (x: Tensor) => C.concat([C.slice(x, [0, 8], [8, 16]), C.slice(x, [0, 0], [8, 8])], 1);
const multi = (ks: readonly Kernel[]) => ks.filter((k) => k.kind === 'elementwise').map((k) => kernelOuts(k).length);

describe('elementwise kernels with several outputs', () => {
  it('the update and the two moments it reads are one kernel storing three outputs, the update first', () => {
    for (const shape of [[6, 5], [8, 16]]) {
      const outs = adamLike(shape)();
      const ks = kernelsOf(outs);
      expect(ks.length, JSON.stringify(shape)).toBe(1);
      expect(kernelOuts(ks[0]!)).toEqual(outs.map((t) => t.node));
    }
  });
  it('not when another kernel reads a moment, when the update reads it at another element, or when the buffers do not fit', () => {
    const [theta, m, v] = adamLike([8, 16])();
    expect(multi(kernelsOf([theta!, m!, v!, C.sum(m!)])).sort()).toEqual([1, 2]); // m′ feeds the sum too: v′ still merges
    const flipped = (() => {
      const [, m2, v2] = adamLike([8, 16])();
      return [C.sub(roll(m2!), C.sqrt(v2!)), m2!, v2!];
    })();
    expect(multi(kernelsOf(flipped)).sort()).toEqual([1, 2]); // m′ read rotated: only v′ merges
    expect(multi(kernelsOf(adamLike([8, 16])(), { ...OPTS, maxInputs: 4 }))).toEqual([1, 1, 1]); // 4 inputs and 3 outputs need 7 bindings
  });
  it('a reduction several same-sized values read is folded once; one broadcast back over its rows stays in its row kernel', () => {
    const colSum = () => C.sum(C.mul(rand([12, 8], 44), rand([12, 8], 45)), 0); // (8,): a norm weight's gradient
    const g = colSum();
    const ks = kernelsOf([...adamLike([8], g)(), C.sum(C.square(g))]);
    expect(ks.filter((k) => k.kind === 'row').length).toBe(2); // the column sum, and its sum of squares
    expect(multi(ks)).toEqual([3]);
    expect(kernelsOf([C.logsumexp(rand([6, 10], 46))]).length).toBe(1);
  });
});

describe.skipIf(!gpuDevice)('elementwise kernels with several outputs on WebGPU', () => {
  it('scalar (6×5) and vec4 (8×16) kernels, a partly merged one, and a folded-once reduction: the interpreter\'s values', async () => {
    await agrees('adam 6×5', adamLike([6, 5]));
    await agrees('adam 8×16', adamLike([8, 16]));
    await agrees('adam with a column-sum gradient', () => {
      const g = C.sum(C.mul(rand([12, 8], 44), rand([12, 8], 45)), 0);
      return [...adamLike([8], g)(), C.sum(C.square(g))];
    });
    await agrees('rotated moment', () => {
      const [, m, v] = adamLike([8, 16])();
      return [C.sub(roll(m!), C.sqrt(v!)), m!, v!];
    });
  });
});

// ---- a stored value written through its reshape (buildKernel) ------------------------------------------------
// QLoRA's shape: a normed input x (B, T, in) reshaped to (B·T, in) is the NF4 kernel's source (bound as a buffer:
// that kernel reads its sources as given) and a LoRA A matmul's operand (read in place, as a view of x). The
// reshape's kernel computes x straight into the reshape's buffer; the matmul, built first, bound x's buffer, which
// no kernel then wrote (`npm run bench lora`: "mul [2,64,288] has no value to upload"). 17 chained sines: too
// costly to compute on load, so x is stored.
const qloraShape = () => {
  const w = nf4Weight(quantizeNf4(Array.from({ length: 6 * 64 }, (_, i) => Math.sin(i * 1.3)), [6, 64]));
  const x2 = C.reshape(chain(rand([2, 4, 64], 50), 17), [8, 64]);
  return [C.matmul(x2, C.transpose(rand([3, 64], 51))), nf4Linear(x2, w)]; // (8, 3), (8, 6)
};

describe('a stored value written through its reshape', () => {
  it('every buffer a kernel binds is written by an earlier kernel, whichever reader is built first', () => {
    for (const outs of [qloraShape(), qloraShape().reverse()]) {
      const ks = kernelsOf(outs);
      const written = new Set<Node>();
      for (const k of ks) {
        for (const n of k.inputs) if (!n.realized) expect(written.has(n), `${k.kind} for ${k.out.op.name} binds ${n.op.name}${JSON.stringify(n.shape)}, which no earlier kernel writes`).toBe(true);
        kernelOuts(k).forEach((o) => written.add(o));
      }
      expect(ks.map((k) => k.kind).sort()).toEqual(['elementwise', 'matmul', 'nf4']);
    }
  });
});

describe.skipIf(!gpuDevice)('a stored value written through its reshape on WebGPU', () => {
  it('the NF4 kernel and the matmul read it: the interpreter\'s values', async () => {
    await agrees('qlora shape', qloraShape);
    await agrees('qlora shape, other order', () => qloraShape().reverse());
  });
});
