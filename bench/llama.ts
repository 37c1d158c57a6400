// Llama benchmarks on the active backend: a jitted forward+backward+SGD step (tokens/s, kernels and submits per
// step), prefill tokens/s and decode tokens/s (batch 1 and 8), for the stories260K shape and a stories15M-shaped
// model with random weights. When `python3 -c 'import torch'` works, bench/torch_llama.py runs the same shapes on
// the CPU in the same run and the ratios camelid/PyTorch are printed.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import type { LlamaConfig } from '../models/config.js';
import { forward, initParams, type LlamaParams } from '../models/llama.js';
import { generate } from '../models/generate.js';
import { crossEntropy, linear } from '../ops/nn.js';
import { webgpuDevice } from '../core/runtime.js';
import { median } from './matmul.js';

const base = { headDim: 0, seqLen: 512, normEps: 1e-5, ropeTheta: 10000, tieEmbeddings: true, bosId: 1, eosId: 2 };
export const SHAPES: Record<string, { cfg: LlamaConfig; batch: number; T: number; chunks: number }> = {
  stories260K: { cfg: { ...base, dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize: 512 }, batch: 8, T: 256, chunks: 1 },
  stories15M: { cfg: { ...base, dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, headDim: 48, vocabSize: 32000 }, batch: 4, T: 256, chunks: 4 },
};

/** Mean cross-entropy, with the LM head applied in `chunks` slices of tokens so no logits buffer exceeds 128 MiB. */
const lmLoss = (cfg: LlamaConfig, p: LlamaParams, tokens: Tensor, targets: Tensor, chunks: number): Tensor => {
  const [B, T] = tokens.shape as [number, number];
  const h = forward(cfg, p, tokens, { hidden: true }); // (B, T, dim)
  const head = cfg.tieEmbeddings ? p.tokEmb : p.out!;
  const rows = C.reshape(h, [B * T, cfg.dim]);
  const tg = C.reshape(targets, [B * T]);
  const n = (B * T) / chunks;
  let total: Tensor | null = null;
  for (let i = 0; i < chunks; i++) {
    const part = C.mul(crossEntropy(linear(C.slice(rows, [i * n, 0], [(i + 1) * n, cfg.dim]), head), C.slice(tg, [i * n], [(i + 1) * n])), 1 / chunks);
    total = total ? C.add(total, part) : part;
  }
  return total!;
};

export const benchShape = async (name: string, reps = 3) => {
  const { cfg, batch, T, chunks } = SHAPES[name]!;
  const tokens = C.tensor(Int32Array.from({ length: batch * T }, (_, i) => (i * 7919) % cfg.vocabSize), { shape: [batch, T], dtype: 'i32' });
  const targets = C.tensor(Int32Array.from({ length: batch * T }, (_, i) => (i * 104729 + 3) % cfg.vocabSize), { shape: [batch, T], dtype: 'i32' });
  const key = C.key(0);
  let params = initParams(cfg, key);
  await C.realize(...C.leaves(params));
  const step = C.jit((p: LlamaParams, lr: Tensor) => {
    const [loss, g] = C.valueAndGrad((q: LlamaParams) => lmLoss(cfg, q, tokens, targets, chunks))(p);
    return [C.mapTree(p, (w, i) => C.sub(w, C.mul(C.leaves(g)[i]!, lr))), loss] as const;
  }, { donate: [0] });
  const dev = await webgpuDevice();
  const submits = () => dev?.counters.submits ?? 0;
  const times: number[] = [];
  let s0 = 0, kernels = 0, dispatches = 0;
  // Warm-up steps compile, and (on a CPU adapter) let the device learn the step's GPU time, to sleep through it.
  const warm = 4;
  // CPU time of the whole process per step (lavapipe's workers, the host, the wait): unlike the wall clock, it
  // does not count the time this VM's cores spend taken by the host, which on a shared machine varies ±40%.
  const cpu: number[] = [];
  for (let i = 0; i < warm + reps; i++) {
    const t0 = performance.now(), c0 = process.cpuUsage();
    const [np, loss] = await step(params, 1e-3);
    await C.item(loss);
    if (i === warm - 1) s0 = submits();
    if (i >= warm) {
      times.push(performance.now() - t0);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1000);
    }
    loss.dispose();
    params = np;
    kernels = step.kernels;
    dispatches = step.dispatches;
  }
  const stepMs = median(times);
  const submitsPerStep = (submits() - s0) / reps;
  // Prefill: one compiled forward over a T-token prompt (a jitted forward, as a serving loop would run it; an
  // un-jitted forward also schedules and renders its graph on the host every call).
  const prompt = C.slice(tokens, [0, 0], [1, T]);
  await C.realize(prompt);
  // The last position's logits are read back (the next token's), as generation needs.
  const prefill = C.jit((p: LlamaParams, t: Tensor) => C.slice(forward(cfg, p, t), [0, T - 1, 0], [1, T, cfg.vocabSize]));
  const pre: number[] = [];
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    const lg = await prefill(params, prompt);
    await C.data(lg);
    if (i > 0) pre.push(performance.now() - t0);
    lg.dispose();
  }
  prompt.dispose();
  const decode = async (b: number) => {
    const prompts = Array.from({ length: b }, (_, r) => [1, 5 + r, 9]);
    let t0 = 0, n = 0;
    for await (const { step: s } of generate(cfg, params, prompts, { maxTokens: 17, stop: [] })) {
      if (s === 1) t0 = performance.now();
      if (s >= 1) n++;
    }
    return ((n - 1) * b) / ((performance.now() - t0) / 1000);
  };
  // Warm-up: a plan's first dispatches compile its pipelines in the driver, inside the timed steps.
  await decode(1);
  await decode(8);
  const res = { name, stepMs, stepSamples: times, cpuSamples: cpu, trainTokS: (batch * T) / (stepMs / 1000), kernels, dispatches, submitsPerStep, prefillTokS: T / (median(pre) / 1000), decode1: await decode(1), decode8: await decode(8) };
  [...C.leaves(params), tokens, targets, key].forEach((t) => t.dispose());
  return res;
};

type TorchFigures = Record<string, { stepMs: number; stepSamples: number[]; cpuSamples?: number[]; prefillTokS: number; decode1: number; decode8: number }>;

// Debian's python3-torch lives under /usr/bin/python3, which a pyenv or venv `python3` may shadow.
const torchPython = (): string | undefined =>
  ['/usr/bin/python3', 'python3'].find((py) => spawnSync(py, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0);

const torchReference = (python: string, device: 'cpu' | 'cuda', shapes: readonly string[]): TorchFigures | null => {
  // One BLAS thread under torch's two intra-op threads: the fastest setting measured here (OpenBLAS's own
  // threads oversubscribe the two cores: 735 ms vs 350 ms per stories260K step).
  const env = { ...process.env, OPENBLAS_NUM_THREADS: '1', TORCH_DEVICE: device, TORCH_SHAPES: shapes.join(',') };
  const r = spawnSync(python, [join(import.meta.dirname, 'torch_llama.py')], { encoding: 'utf8', timeout: 600_000, env });
  if (r.status !== 0) { console.log(`torch reference (${device}) failed: ${r.stderr.trim().split('\n').pop()}`); return null; }
  return JSON.parse(r.stdout) as never;
};

/** Two runs of the reference pooled: step samples together, the better of each throughput. */
const pool = (a: TorchFigures[string] | undefined, b: TorchFigures[string] | undefined): TorchFigures[string] | undefined => {
  if (!a || !b) return a ?? b;
  const stepSamples = [...a.stepSamples, ...b.stepSamples];
  const cpuSamples = [...(a.cpuSamples ?? []), ...(b.cpuSamples ?? [])];
  return { stepMs: median(stepSamples), stepSamples, cpuSamples, prefillTokS: Math.max(a.prefillTokS, b.prefillTokS), decode1: Math.max(a.decode1, b.decode1), decode8: Math.max(a.decode8, b.decode8) };
};

export const llamaMain = async () => {
  const backend = (await C.getBackend()).name;
  const only = process.env.LLAMA_SHAPES?.split(',') ?? Object.keys(SHAPES);
  const python = torchPython();
  if (!python) console.log('PyTorch not importable (python3 -c "import torch"): printing camelid alone');
  // Where torch sees a CUDA GPU (a lent GPU machine), its GPU figures are printed as a second baseline.
  const cuda = python && spawnSync(python, ['-c', 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)']).status === 0
    ? torchReference(python, 'cuda', only) : null;
  for (const name of only) {
    // A real GPU takes milliseconds per step: more steps for a steadier median. lavapipe takes seconds.
    const soft = (await webgpuDevice())?.adapter.isSoftware ?? true;
    // The CPU reference runs just before and just after ours, so a slow stretch of a shared machine weighs on both.
    const before = python ? torchReference(python, 'cpu', [name])?.[name] : undefined;
    const r = await benchShape(name, !soft ? 15 : name === 'stories15M' ? 1 : 5);
    const t = pool(before, python ? torchReference(python, 'cpu', [name])?.[name] : undefined);
    const vs = (ours: number, theirs: number | undefined) => (theirs ? ` (${(ours / theirs).toFixed(2)}× PyTorch)` : '');
    const best = t ? `; best step to best step ${(Math.min(...t.stepSamples) / Math.min(...r.stepSamples)).toFixed(2)}×` : '';
    const c = cuda?.[name];
    console.log(`${name} on ${backend}: train step ${r.stepMs.toFixed(0)} ms = ${r.trainTokS.toFixed(0)} tok/s${t ? vs(t.stepMs, r.stepMs) : ''}${best}, ${r.kernels} kernels in ${r.dispatches} dispatches (${(r.dispatches / SHAPES[name]!.cfg.nLayers).toFixed(1)}/layer incl. head+loss), ${r.submitsPerStep.toFixed(1)} submits/step; prefill ${r.prefillTokS.toFixed(0)} tok/s${vs(r.prefillTokS, t?.prefillTokS)}; decode ${r.decode1.toFixed(1)} tok/s (batch 1)${vs(r.decode1, t?.decode1)}, ${r.decode8.toFixed(1)} tok/s (batch 8)${vs(r.decode8, t?.decode8)}`);
    if (t) console.log(`  PyTorch CPU (two runs around ours): step ${t.stepMs.toFixed(0)} ms (samples ${t.stepSamples.map((x) => x.toFixed(0)).join(' ')}); ours ${r.stepSamples.map((x) => x.toFixed(0)).join(' ')}`);
    if (t?.cpuSamples?.length) {
      const [ours, theirs] = [median(r.cpuSamples), median(t.cpuSamples)];
      console.log(`  CPU time per step (all threads, median): ours ${ours.toFixed(0)} ms, PyTorch ${theirs.toFixed(0)} ms → ${(theirs / ours).toFixed(2)}× PyTorch`);
    }
    if (c) console.log(`  PyTorch CUDA: train step ${c.stepMs.toFixed(1)} ms (camelid ${(c.stepMs / r.stepMs).toFixed(2)}×), prefill ${c.prefillTokS.toFixed(0)} tok/s, decode ${c.decode1.toFixed(1)} / ${c.decode8.toFixed(1)} tok/s (batch 1 / 8, no KV cache)`);
  }
};
