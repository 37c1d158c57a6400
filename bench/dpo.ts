// A DPO step (recipes/dpo.ts dpoLossFn through recipes/step.ts trainStep: the policy = base + LoRA adapters r 8 on
// all seven projections, forward and backward over the N chosen and N rejected rows in one batch; the reference =
// the same base under the disabled adapters, forward only; AdamW on the adapters) in ms and pairs/s on the
// stories260K and stories15M shapes (DPO_SHAPES=stories260K for one), against PyTorch on the CPU doing the
// same step (bench/torch_dpo.py) in the same run, as a ratio.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import * as C from '../index.js';
import { initParams } from '../models/llama.js';
import { lora } from '../models/lora.js';
import { webgpuDevice } from '../core/runtime.js';
import { dpoLossFn, loraReference, type DpoBatch } from '../recipes/dpo.js';
import { adamw } from '../recipes/optim.js';
import { trainStep } from '../recipes/step.js';
import { median } from './matmul.js';
import { SHAPES } from './llama.js';

/** Pairs per step (2N rows): stories15M's (2N, T − 1, 32000) logits stay under 128 MiB at N = 1 with chunk 128. */
const PAIRS: Record<string, { N: number; chunk?: number }> = { stories260K: { N: 4 }, stories15M: { N: 1, chunk: 128 } };

const batchFor = (vocab: number, N: number, T: number): DpoBatch => {
  // Row r: ids differ between the chosen (r < N) and rejected rows; the first half of each row is prompt (−100).
  const ids = Int32Array.from({ length: 2 * N * T }, (_, i) => ((i + Math.floor(i / (N * T)) * 13) * 7919) % vocab);
  const labels = ids.map((v, i) => (i % T < T / 2 ? -100 : v));
  return { tokens: C.tensor(ids, { shape: [2 * N, T], dtype: 'i32' }), labels: C.tensor(labels, { shape: [2 * N, T], dtype: 'i32' }) };
};

const runShape = async (name: string, reps: number) => {
  const { cfg, T } = SHAPES[name]!;
  const { N, chunk } = PAIRS[name]!;
  const batch = batchFor(cfg.vocabSize, N, T);
  const base = initParams(cfg, C.key(0));
  await C.realize(...C.leaves(base));
  let adapters = lora(base, { r: 8, alpha: 16, key: C.key(1) });
  const opt = adamw({ lr: 1e-4, weightDecay: 0 });
  let state = opt.init(adapters);
  const step = trainStep(dpoLossFn(cfg, loraReference, { beta: 0.1, ...(chunk ? { chunk } : {}) }), { optimizer: opt, clipNorm: 1 });
  const times: number[] = [];
  for (let i = 0; i < 3 + reps; i++) {
    const t0 = performance.now();
    const out = await step(adapters, state, base, [batch], 1e-4);
    await C.item(out.loss);
    if (i >= 3) times.push(performance.now() - t0);
    out.loss.dispose(); out.gradNorm.dispose();
    adapters = out.trainable; state = out.state;
  }
  const ms = median(times);
  return { ms, times, pairsS: N / (ms / 1000), kernels: step.kernels, dispatches: step.dispatches, N, T };
};

const torchPython = (): string | undefined =>
  ['/usr/bin/python3', 'python3'].find((py) => spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0);

const torchStep = (python: string, name: string): number[] => {
  const env = { ...process.env, OPENBLAS_NUM_THREADS: '1', TORCH_SHAPES: name };
  const r = spawnSync(python, [join(import.meta.dirname, 'torch_dpo.py')], { encoding: 'utf8', timeout: 600_000, env });
  if (r.status !== 0) { console.log(`torch DPO reference failed: ${r.stderr.trim().split('\n').pop()}`); return []; }
  return (JSON.parse(r.stdout) as Record<string, { stepSamples: number[] }>)[name]?.stepSamples ?? [];
};

export const dpoMain = async (): Promise<void> => {
  const backend = (await C.getBackend()).name;
  const soft = (await webgpuDevice())?.adapter.isSoftware ?? true;
  const python = process.env.DPO_TORCH === '0' ? undefined : torchPython();
  if (!python) console.log("PyTorch baseline off (DPO_TORCH=0) or unavailable (python3 -c 'import torch' fails): printing camelid alone");
  for (const name of process.env.DPO_SHAPES?.split(',') ?? ['stories260K', 'stories15M']) {
    const before = python ? torchStep(python, name) : [];
    console.log(`dpo step ${name}: compiling and timing on ${backend}…`);
    const r = await runShape(name, soft ? 4 : 15);
    const after = python ? torchStep(python, name) : [];
    const samples = [...before, ...after];
    const torchMs = samples.length ? median(samples) : NaN;
    // PyTorch's CPU steps are noisy here: the best-to-best ratio is printed beside the medians'.
    const best = samples.length ? ` (best to best ${(Math.min(...samples) / Math.min(...r.times)).toFixed(2)}×)` : '';
    const ratio = samples.length ? ` = ${(torchMs / r.ms).toFixed(2)}× PyTorch CPU (${torchMs.toFixed(0)} ms/step)${best}` : '';
    console.log(`dpo step ${name} (${r.N} pairs = ${2 * r.N} rows, T ${r.T}, LoRA r 8, reference = disabled adapters) on ${backend}: ${r.ms.toFixed(0)} ms = ${r.pairsS.toFixed(1)} pairs/s${ratio}`);
    console.log(`  ${r.kernels} kernels in ${r.dispatches} dispatches per step; samples: ours ${r.times.map((x) => x.toFixed(0)).join(' ')}${samples.length ? `; PyTorch ${samples.map((x) => x.toFixed(0)).join(' ')}` : ''}`);
  }
};
