// Row kernels folded into the matmul producing their rows (core/schedule/rows.ts): which graphs fold, and on
// WebGPU the interpreter's values, for per-row and per-element results, dependent reductions, ragged tiles and
// gradients.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { interpret } from '../core/interp.js';
import { runGraph } from '../core/runtime.js';
import { schedule } from '../core/schedule/index.js';
import { gpuDevice } from './gpu.js';
import './setup.js';

const rand = (shape: number[], seed: number) => C.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(seed * 7.1 + i * 0.37) + 0.1 * Math.cos(i * seed)), { shape });

// Residual projection then rmsNorm (its 1/rms folds, per row) and a second projection of the normed rows.
const normed = (M: number, K: number, N: number) => () => {
  const x = rand([M, K], 1), w = rand([N, K], 2), res = rand([M, N], 3), g = rand([N], 4), w2 = rand([30, N], 5);
  const y = C.add(res, C.matmul(x, C.transpose(w)));
  return [y, C.matmul(C.rmsNorm(y, g, 1e-5), C.transpose(w2))];
};
// Softmax of a product's rows: two dependent reductions (max, then Σ exp) and a per-element result.
const softmaxed = (M: number, K: number, N: number) => () => [C.softmax(C.matmul(rand([M, K], 6), C.transpose(rand([N, K], 7))), -1)];
// The rmsNorm backward (a per-element row kernel) after an input gradient: the gradient of a normed projection.
const grads = (M: number, K: number, N: number) => () => {
  const x = rand([M, K], 8), w = rand([N, K], 9), g = rand([N], 10), c = rand([M, N], 11);
  const f = ([a, b]: Tensor[]) => C.sum(C.mul(C.rmsNorm(C.matmul(a!, C.transpose(b!)), g, 1e-5), c));
  const [v, gr] = C.valueAndGrad(f)([x, w]);
  return [v, ...gr];
};

const rowKernels = (outs: Tensor[]) => schedule(outs.map((t) => t.node)).filter((k) => k.kind === 'row').length;
const folded = (outs: Tensor[]) => schedule(outs.map((t) => t.node)).filter((k) => k.kind === 'matmul' && k.rows).length;

describe('row kernels folded into matmuls', () => {
  it('fold when the product is at most 64 wide, per row and per element, and not when wider', () => {
    expect(folded(normed(100, 24, 48)())).toBe(1);
    expect(rowKernels(normed(100, 24, 48)())).toBe(0);
    expect(folded(softmaxed(37, 16, 64)())).toBe(1);
    expect(rowKernels(softmaxed(37, 16, 64)())).toBe(0);
    expect(folded(softmaxed(37, 16, 72)())).toBe(0);
    expect(rowKernels(softmaxed(37, 16, 72)())).toBe(1);
    expect(folded(grads(70, 20, 40)())).toBeGreaterThanOrEqual(1);
  });
});

describe.skipIf(!gpuDevice)('row epilogues on WebGPU', () => {
  const dev = gpuDevice!;
  const cases: [string, () => Tensor[]][] = [
    // Each new shape compiles on its first dispatch (seconds on lavapipe with a cold shader cache): three cover
    // per-row and per-element results, dependent reductions, an epilogue, ragged and full-width tiles.
    ['rmsNorm 1/rms, 100×48 (ragged tiles)', normed(100, 24, 48)],
    ['softmax rows, 130×64', softmaxed(130, 20, 64)],
    ['rmsNorm backward, 70×40', grads(70, 20, 40)],
  ];
  for (const [what, build] of cases) {
    it(`${what}: the interpreter's values`, async () => {
      C.setBackend('webgpu');
      const outs = build();
      const want = interpret(build().map((t) => t.node));
      await runGraph(dev, outs.map((t) => t.node));
      for (const [i, t] of outs.entries()) {
        const got = await C.data(t);
        for (let j = 0; j < got.length; j++) {
          const w = want[i]![j]!;
          if (!(Math.abs(got[j]! - w) <= 1e-4 * (1 + Math.abs(w)))) throw new Error(`${what}: output ${i} element ${j}: webgpu ${got[j]} vs interpreter ${w}`);
        }
        t.dispose();
      }
    });
  }
});
