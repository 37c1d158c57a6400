// LoRA and QLoRA SFT steps (forward, masked loss, backward, clip, AdamW through recipes/step.ts) against the full
// fine-tune step on the same shape, in the same run: tokens/s ratios, bytes per base projection parameter, and the
// device's bytes in use after each. stories15M by default (LORA_SHAPES=stories260K,stories15M; LORA_T, LORA_B).

import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { initParams, type LlamaParams } from '../models/llama.js';
import { lora, withLora, type LoraAdapters } from '../models/lora.js';
import { projectionBytes, quantizeBase } from '../models/nf4.js';
import type { Weight } from '../ops/nn.js';
import { sftLoss } from '../recipes/loss.js';
import { adamw } from '../recipes/optim.js';
import { trainStep } from '../recipes/step.js';
import { webgpuDevice } from '../core/runtime.js';
import { median } from './matmul.js';
import { SHAPES } from './llama.js';

interface Batch { readonly tokens: Tensor; readonly labels: Tensor }

const batchFor = (vocab: number, B: number, T: number): Batch => {
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % vocab);
  const labels = ids.map((v, i) => (i % T < T / 2 ? -100 : v));
  return { tokens: C.tensor(ids, { shape: [B, T], dtype: 'i32' }), labels: C.tensor(labels, { shape: [B, T], dtype: 'i32' }) };
};

type Mode = 'full' | 'lora' | 'qlora';

const runMode = async (mode: Mode, name: string, B: number, T: number, reps: number) => {
  const { cfg } = SHAPES[name]!;
  const at0 = (await C.deviceCounters())?.bytesInUse ?? 0; // what earlier modes left (nothing, once they dispose)
  const batch = batchFor(cfg.vocabSize, B, T);
  const dense = initParams(cfg, C.key(0));
  const base: LlamaParams<Weight> = mode === 'qlora' ? await quantizeBase(dense) : dense;
  await C.realize(...C.leaves(base));
  // QLoRA keeps only the packed projections: the dense ones it was quantised from are freed.
  if (mode === 'qlora') dense.layers.forEach((l) => [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3].forEach((t) => t.dispose()));
  const opt = adamw({ lr: 1e-4, weightDecay: 0 });
  const loss = (p: unknown, f: unknown, b: Batch) =>
    sftLoss(cfg, mode === 'full' ? (p as LlamaParams) : withLora(f as LlamaParams<Weight>, p as LoraAdapters), b.tokens, b.labels, { reduction: 'sum' });
  const step = trainStep(loss, { optimizer: opt, clipNorm: 1 });
  let trainable: unknown = mode === 'full' ? dense : lora(base, { r: 64, alpha: 16, key: C.key(1) });
  let state = opt.init(trainable);
  const frozen = mode === 'full' ? null : base;
  const times: number[] = [];
  let inUse = 0;
  for (let i = 0; i < 2 + reps; i++) {
    const t0 = performance.now();
    const out = await step(trainable, state, frozen, [batch], 1e-4);
    await C.item(out.loss);
    if (i >= 2) times.push(performance.now() - t0);
    inUse = Math.max(inUse, (await C.deviceCounters())?.bytesInUse ?? 0);
    out.loss.dispose(); out.gradNorm.dispose();
    trainable = out.trainable; state = out.state;
  }
  const mem = projectionBytes(base);
  [...C.leaves(trainable), ...C.leaves(state), ...(frozen ? C.leaves(frozen) : []), batch.tokens, batch.labels].forEach((t) => t.dispose());
  const { kernels, dispatches } = step;
  step.dispose();
  const ms = median(times);
  return { ms, tokS: (B * T) / (ms / 1000), kernels, dispatches, basePerParam: mem.bytesPerParam, inUse: inUse - at0 };
};

export const loraMain = async (): Promise<void> => {
  const dev = await webgpuDevice();
  const soft = dev?.adapter.isSoftware ?? true;
  for (const name of process.env.LORA_SHAPES?.split(',') ?? ['stories15M']) {
    const B = Number(process.env.LORA_B ?? (name === 'stories15M' ? 2 : 8));
    const T = Number(process.env.LORA_T ?? (soft && name === 'stories15M' ? 64 : 256));
    const reps = soft ? 2 : 10;
    console.log(`\nLoRA / QLoRA SFT step, ${name} shape, B ${B} × T ${T} (r 64, all seven projections; ${dev ? dev.adapter.description : 'interpreter'})`);
    const r = {} as Record<Mode, Awaited<ReturnType<typeof runMode>>>;
    for (const m of ['full', 'lora', 'qlora'] as const) {
      const x = (r[m] = await runMode(m, name, B, T, reps));
      console.log(`  ${m.padEnd(5)}  ${x.ms.toFixed(1).padStart(8)} ms  ${x.tokS.toFixed(0).padStart(7)} tok/s  ${String(x.kernels).padStart(4)} kernels  base ${x.basePerParam.toFixed(3)} B/param  device memory of the step ${(x.inUse / 2 ** 20).toFixed(1)} MiB`);
    }
    console.log(`  tokens/s: LoRA/full ${(r.lora.tokS / r.full.tokS).toFixed(2)}×, QLoRA/LoRA ${(r.qlora.tokS / r.lora.tokS).toFixed(2)}× (goal ≥ 0.67), QLoRA base ${r.qlora.basePerParam.toFixed(3)} B/param (goal ≤ 0.6)`);
  }
};
