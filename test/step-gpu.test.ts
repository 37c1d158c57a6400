// The jitted train step on WebGPU (tiny MLP, lavapipe-sized): AdamW + clipping + a changing lr replay one plan with
// no compile and no allocation after the first step, and the losses follow the interpreter's step for step.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { gpuDevice } from './gpu.js';
import { fillValues } from './optable.js';
import { mlpLoss, type Mlp } from '../examples/spirals.js';
import { adamw, type AdamState } from '../recipes/optim.js';
import { linearWarmupDecay } from '../recipes/schedule.js';
import { trainStep } from '../recipes/step.js';

const f32 = (shape: number[], seed: number, scale = 1) => C.tensor(Float32Array.from(fillValues(shape.reduce((a, b) => a * b, 1), 'unit', seed).map((v) => v * scale)), { shape });
const init = (): Mlp => ({ w1: f32([2, 16], 1, 2), b1: f32([16], 2, 0.1), w2: f32([16, 2], 3, 0.5), b2: f32([2], 4, 0.1) });
const batch = { x: f32([32, 2], 5), y: C.tensor(Array.from({ length: 32 }, (_, i) => i % 2), { dtype: 'i32' }) };
const loss = (p: Mlp, _f: null, b: { x: Tensor; y: Tensor }) => mlpLoss(p, b.x, b.y);
const opt = adamw({ lr: 0, weightDecay: 0.1 });
const lr = linearWarmupDecay({ peak: 0.05, warmupSteps: 2, totalSteps: 12 });

const run = async (steps: number, onStep?: (i: number) => void) => {
  const step = trainStep(loss, { optimizer: opt, clipNorm: 0.5 });
  let p = init();
  let s: AdamState = opt.init(p);
  const losses: number[] = [], norms: number[] = [];
  for (let i = 0; i < steps; i++) {
    const out = await step(p, s, null, [batch], lr(i));
    losses.push(await C.item(out.loss));
    norms.push(await C.item(out.gradNorm));
    out.loss.dispose(); out.gradNorm.dispose();
    p = out.trainable; s = out.state;
    onStep?.(i);
  }
  return { losses, norms, kernels: step.kernels, dispatches: step.dispatches };
};

describe.skipIf(!gpuDevice)('trainStep (WebGPU)', () => {
  it('AdamW + clip + scheduled lr: one plan, 0 compiles and 0 allocations per step once both result sets exist, same losses as the interpreter', async () => {
    C.setBackend('cpu');
    const cpu = await run(12);
    C.setBackend('webgpu');
    let after = null as null | { compiles: number; allocations: number };
    const gpu = await run(12, (i) => {
      const c = gpuDevice!.counters;
      // Step 1 still allocates its outputs (step 0's are alive as its inputs) and binds distinct moment buffers
      // (at step 0 the two zero trees are one node); from step 2 on, results ping-pong between the two sets.
      if (i === 1) after = { compiles: c.compiles, allocations: c.allocations };
      if (i === 11) {
        expect(c.compiles - after!.compiles).toBe(0);
        expect(c.allocations - after!.allocations).toBe(0);
      }
    });
    console.log(`jitted AdamW step (MLP, 4 leaves): ${gpu.kernels} kernels in ${gpu.dispatches} dispatches; losses ${gpu.losses[0]!.toFixed(4)} → ${gpu.losses[11]!.toFixed(4)}`);
    expect(gpu.losses[1]).toBe(gpu.losses[0]); // lr 0 on the first update: the second loss is the first
    gpu.losses.forEach((l, i) => expect(Math.abs(l - cpu.losses[i]!)).toBeLessThan(1e-4 * (1 + Math.abs(l))));
    gpu.norms.forEach((n, i) => expect(Math.abs(n - cpu.norms[i]!)).toBeLessThan(1e-4 * (1 + n)));
    expect(gpu.losses[11]!).toBeLessThan(gpu.losses[0]!);
  });
});
