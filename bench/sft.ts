// A full SFT step (forward, masked loss, backward, clip to norm 1, AdamW: recipes/step.ts trainStep) in tokens/s on
// the stories260K shape (and stories15M with SFT_SHAPES=stories260K,stories15M), against PyTorch on the CPU doing the
// same step with torch.optim.AdamW and clip_grad_norm_ (bench/torch_sft.py) in the same run, as a ratio; plus the
// kernels and dispatches per step, and what the optimizer adds over an SGD step of the same plan.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { initParams, type LlamaParams } from '../models/llama.js';
import { scheduleFor, webgpuDevice } from '../core/runtime.js';
import { sftLoss } from '../recipes/loss.js';
import { adamw, type Optimizer } from '../recipes/optim.js';
import { stepBody, trainStep } from '../recipes/step.js';
import { schedule } from '../core/schedule/index.js';
import { median } from './matmul.js';
import { SHAPES } from './llama.js';

/** Batch per shape: stories15M at batch 2 keeps its (B, T, 32000) logits under 128 MiB (no chunked head here). */
const BATCH: Record<string, number> = { stories260K: 8, stories15M: 2 };

interface Batch { readonly tokens: Tensor; readonly labels: Tensor }

const batchFor = (vocab: number, B: number, T: number): Batch => {
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % vocab);
  // The first half of each row is prompt (−100), the second half trained, as the PyTorch reference.
  const labels = ids.map((v, i) => (i % T < T / 2 ? -100 : v));
  return { tokens: C.tensor(ids, { shape: [B, T], dtype: 'i32' }), labels: C.tensor(labels, { shape: [B, T], dtype: 'i32' }) };
};

const sgd: Optimizer<null> = { init: () => null, update: (g, s, p) => [C.zipTrees([p, g] as never, ([w, d]) => C.sub(w!, C.mul(d!, 1e-4))) as never, s] };

const runShape = async (name: string, reps: number) => {
  const { cfg, T } = SHAPES[name]!;
  const B = BATCH[name]!;
  const batch = batchFor(cfg.vocabSize, B, T);
  const loss = (p: LlamaParams, _f: null, b: Batch) => sftLoss(cfg, p, b.tokens, b.labels, { reduction: 'sum' });
  // The optimizer's share of the plan, from the scheduler alone (no compile): the same step with plain SGD (gradient
  // norm and clip included in both) against AdamW.
  const p0 = initParams(cfg, C.key(0));
  await C.realize(...C.leaves(p0), batch.tokens, batch.labels);
  const dev = await webgpuDevice();
  const countKernels = async <S>(optimizer: Optimizer<S>): Promise<number> => {
    const s0 = optimizer.init(p0);
    await C.realize(...C.leaves(s0));
    const out = stepBody(loss, { optimizer, clipNorm: 1 })(p0, s0, null, [batch], C.tensor(1e-4));
    const roots = [...C.leaves(out.trainable), ...C.leaves(out.state), out.loss, out.gradNorm].map((t) => t.node).filter((n) => !n.realized);
    return schedule([...new Set(roots)], dev ? scheduleFor(dev) : {}).length;
  };
  const sgdKernels = await countKernels(sgd), adamKernels = await countKernels(adamw({ lr: 1e-4 }));
  C.leaves(p0).forEach((t) => t.dispose());
  console.error(`  ${name}: compiling the step (first call)…`);
  const opt = adamw({ lr: 1e-4, weightDecay: 0 });
  const step = trainStep(loss, { optimizer: opt, clipNorm: 1 });
  let params = initParams(cfg, C.key(0));
  let state = opt.init(params);
  const times: number[] = [];
  for (let i = 0; i < 3 + reps; i++) {
    if (i === 1) console.error(`  ${name}: compiled (${step.kernels} kernels); timing…`);
    const t0 = performance.now();
    const out = await step(params, state, null, [batch], 1e-4);
    await C.item(out.loss);
    if (i >= 3) times.push(performance.now() - t0);
    out.loss.dispose(); out.gradNorm.dispose();
    params = out.trainable; state = out.state;
  }
  const leaves = C.leaves(params).length;
  [...C.leaves(params), ...C.leaves(state), batch.tokens, batch.labels].forEach((t) => t.dispose());
  const ms = median(times);
  return { ms, times, tokS: (B * T) / (ms / 1000), kernels: step.kernels, dispatches: step.dispatches, sgdKernels, adamKernels, leaves, B, T };
};

const torchPython = (): string | undefined =>
  ['/usr/bin/python3', 'python3'].find((py) => spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0);

const torchStep = (python: string, name: string): { stepMs: number; stepSamples: number[] } | null => {
  const env = { ...process.env, OPENBLAS_NUM_THREADS: '1', TORCH_SHAPES: name };
  const r = spawnSync(python, [join(import.meta.dirname, 'torch_sft.py')], { encoding: 'utf8', timeout: 600_000, env });
  if (r.status !== 0) { console.log(`torch SFT reference failed: ${r.stderr.trim().split('\n').pop()}`); return null; }
  return (JSON.parse(r.stdout) as Record<string, { stepMs: number; stepSamples: number[] }>)[name] ?? null;
};

export const sftMain = async (): Promise<void> => {
  const backend = (await C.getBackend()).name;
  const soft = (await webgpuDevice())?.adapter.isSoftware ?? true;
  const python = torchPython();
  if (!python) console.log("PyTorch baseline unavailable (python3 -c 'import torch' fails; `pip install --no-index --no-deps torch` where a wheel is cached): printing camelid alone");
  for (const name of process.env.SFT_SHAPES?.split(',') ?? ['stories260K']) {
    const before = python ? torchStep(python, name) : null;
    const r = await runShape(name, soft ? 4 : 15);
    const after = python ? torchStep(python, name) : null;
    const samples = [...(before?.stepSamples ?? []), ...(after?.stepSamples ?? [])];
    const torchMs = samples.length ? median(samples) : NaN;
    const ratio = samples.length ? ` = ${(torchMs / r.ms).toFixed(2)}× PyTorch CPU (AdamW + clip_grad_norm_, ${torchMs.toFixed(0)} ms/step, ${((r.B * r.T) / (torchMs / 1000)).toFixed(0)} tok/s)` : '';
    console.log(`sft step ${name} (B ${r.B}, T ${r.T}) on ${backend}: ${r.ms.toFixed(0)} ms = ${r.tokS.toFixed(0)} tok/s${ratio}`);
    console.log(`  ${r.kernels} kernels in ${r.dispatches} dispatches per step; scheduled without compiling, the same step with SGD has ${r.sgdKernels} kernels and with AdamW ${r.adamKernels}: AdamW adds ${r.adamKernels - r.sgdKernels} kernels over ${r.leaves} parameter leaves`);
    if (samples.length) console.log(`  best step to best step: ${(Math.min(...samples) / Math.min(...r.times)).toFixed(2)}× PyTorch CPU (the medians move with the shared machine's load)`);
    console.log(`  samples: ours ${r.times.map((x) => x.toFixed(0)).join(' ')}${samples.length ? `; PyTorch ${samples.map((x) => x.toFixed(0)).join(' ')}` : ''}`);
  }
};
