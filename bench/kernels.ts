// Per-kernel GPU time of one Llama graph, for finding where a step's time goes (not part of `npm run bench`):
//   npx tsx bench/kernels.ts [train|decode] [stories260K|stories15M]
// `train`: forward + backward of the bench shape; `decode`: one cached token. Prints the whole graph's time in one
// submit, then the slowest kernels, each timed alone (so the sum exceeds the whole: no overlap, cold caches).
// TOP=n lists n kernels (default 20); WGSL=text prints (instead) the shaders of
// the kernels whose description contains it.

import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { webgpuDevice } from '../core/runtime.js';
import { emptyCache, forward, initParams, type LlamaParams } from '../models/llama.js';
import { crossEntropy, linear } from '../ops/nn.js';
import { SHAPES } from './llama.js';
import { compileGraph, timeDispatches } from './matmul.js';

const main = async () => {
  const [mode = 'train', name = 'stories260K'] = process.argv.slice(2);
  const dev = await webgpuDevice();
  const shape = SHAPES[name];
  if (!dev || !shape) throw new Error(dev ? `unknown shape ${name} (${Object.keys(SHAPES).join(', ')})` : 'no WebGPU adapter');
  C.setBackend('webgpu');
  const { cfg, batch, T } = shape;
  const params = initParams(cfg, C.key(0));
  await C.realize(...C.leaves(params));
  let outs: Tensor[];
  if (mode === 'decode') {
    const cache = emptyCache(cfg, 1, 32);
    const r = forward(cfg, params, C.tensor([[3]], { dtype: 'i32' }), { cache: { ...cache, length: C.tensor(7, { dtype: 'i32' }) } });
    outs = [r.logits, ...r.cache.layers.flatMap((l) => [l.k, l.v])];
  } else {
    const tokens = C.tensor(Int32Array.from({ length: batch * T }, (_, i) => (i * 7919) % cfg.vocabSize), { shape: [batch, T], dtype: 'i32' });
    const [l, g] = C.valueAndGrad((p: LlamaParams) => crossEntropy(linear(forward(cfg, p, tokens, { hidden: true }), p.tokEmb), tokens))(params);
    outs = [l, ...C.leaves(g)];
  }
  const { kernels, compiled, list, free } = await compileGraph(dev, outs.map((t) => t.node));
  type K = (typeof kernels)[number];
  const describe = (k: K): string => `${k.kind} ${k.out.op.name} ${JSON.stringify(k.out.shape)}`;
  const detail = (k: K): string => `${describe(k)}${k.kind === 'matmul' ? ` M${k.M} N${k.N} K${k.K}${k.a.value ? ' A computed' : ''}${k.b.value ? ' B computed' : ''}${k.epilogue ? ' +epilogue' : ''}` : ''}`;
  const show = process.env.WGSL;
  if (show) {
    for (const c of compiled) if (c.kernels.some((k) => describe(k).includes(show))) console.log(`${c.kernels.map(describe).join(' + ')}:\n${c.step.rendered.map((r) => r.wgsl).join('\n')}`);
    return free();
  }
  dev.encode(list);
  await dev.sync();
  const whole = (await timeDispatches(dev, list, { reps: 2, trials: 3 })).medianMs;
  const rows: { ms: number; kind: string; what: string }[] = [];
  let at = 0;
  for (const c of compiled) { // a shared dispatch (small independent kernels) is timed as one
    const mine = list.slice(at, at + c.step.rendered.length);
    at += mine.length;
    const ms = (await timeDispatches(dev, mine, { reps: 4, trials: 3 })).medianMs || 0;
    rows.push({ ms, kind: c.kernels.length > 1 ? 'shared' : c.kernels[0]!.kind, what: c.kernels.map(detail).join(' + ') });
  }
  console.log(`${mode} ${name} on ${dev.adapter.description}: ${kernels.length} kernels in ${compiled.length} dispatches, ${whole.toFixed(3)} ms in one submit`);
  const byKind = new Map<string, [number, number]>();
  for (const { ms, kind } of rows) { const [n, t] = byKind.get(kind) ?? [0, 0]; byKind.set(kind, [n + 1, t + ms]); }
  console.log([...byKind].map(([k, [n, t]]) => `${k}: ${n} dispatches, ${t.toFixed(1)} ms alone`).join('; '));
  for (const { ms, what } of rows.sort((a, b) => b.ms - a.ms).slice(0, Number(process.env.TOP ?? 20))) console.log(`${ms.toFixed(3).padStart(9)} ms  ${what}`);
  free();
};

main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
