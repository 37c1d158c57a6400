// npm run bench compile: what a first run pays for shader compilation. Each workload runs twice in child processes
// sharing one fresh MESA_SHADER_CACHE_DIR: cold (empty cache, every pipeline's first dispatch timed by
// CAMELID_TRACE_COMPILES, core/device/trace.ts; on a CPU adapter the fast first tier, core/device/tiers.ts), then,
// once the tuned kernels' background compile has ended, warm (the cache the cold run left). Printed per workload: the
// distinct pipelines, the cold and warm wall times, and the seconds spent in first dispatches cold (lavapipe
// compiles there). Workloads: `camelid generate` on stories260K (59 tokens), one stories260K SFT step (B 8 × T 256,
// AdamW + clip), and `camelid demo` with 2 steps per stage (every graph of the main job). COMPILE_WORKLOADS picks.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const cli = join(root, 'dist/cli.js');
const fixtures = resolve(root, '../shared/fixtures/stories260K');

interface Workload { readonly name: string; readonly argv: (out: string) => string[]; readonly needs?: string }

const WORKLOADS: readonly Workload[] = [
  {
    name: 'generate', needs: join(fixtures, 'hf'),
    argv: () => [cli, 'generate', '--model', join(fixtures, 'hf'), '--prompt', 'The little bird', '--max-tokens', '59', '--temperature', '0'],
  },
  { name: 'sft-step', argv: () => ['--import', 'tsx', join(root, 'bench/compile.ts'), 'child-sft-step'] },
  { name: 'demo', argv: (out) => [cli, 'demo', '--steps', '2,2,2', '--out', join(out, 'demo')] },
];

interface Run { readonly seconds: number; readonly pipelines: number; readonly firstDispatchS: number; readonly ok: boolean; readonly tail: string; readonly stdout: string; readonly pid: number }

const runChild = (argv: string[], cache: string, trace: boolean): Run => {
  const env = { ...process.env, MESA_SHADER_CACHE_DIR: cache, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp', ...(trace ? { CAMELID_TRACE_COMPILES: '1' } : {}) };
  // As users run: LLVM optimises, and the tier is the adapter's default (the fast first tier on a CPU adapter).
  delete (env as Record<string, string | undefined>).GALLIVM_PERF;
  delete (env as Record<string, string | undefined>).CAMELID_FIRST_TIER;
  const t0 = performance.now();
  const r = spawnSync(process.execPath, argv, { encoding: 'utf8', env, timeout: 3_600_000, maxBuffer: 64 << 20 });
  const seconds = (performance.now() - t0) / 1000;
  const firsts = [...(r.stderr ?? '').matchAll(/first dispatch of .* took ([\d.]+) s/g)].map((m) => Number(m[1]));
  return { seconds, pipelines: firsts.length, firstDispatchS: firsts.reduce((a, b) => a + b, 0), ok: r.status === 0, tail: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-3).join(' | '), stdout: r.stdout ?? '', pid: r.pid ?? -1 };
};

/** Waits for the background compiles a run started (core/device/tiers.ts: job files named by its pid); seconds waited. */
const awaitBackground = async (pid: number): Promise<number> => {
  const root = join(tmpdir(), 'camelid-warm');
  const left = () => existsSync(root) && readdirSync(root, { recursive: true, encoding: 'utf8' }).some((f) => basename(f).startsWith(`${pid}-`) && f.endsWith('.json'));
  const t0 = performance.now();
  while (left() && performance.now() - t0 < 3_600_000) await new Promise((r) => setTimeout(r, 500));
  return (performance.now() - t0) / 1000;
};

/** The child workload: one SFT step on the stories260K shape, then warm ones (SFT_STEPS in all, default 6). */
const childSftStep = async (): Promise<void> => {
  const C = await import('../index.js');
  const { initParams } = await import('../models/llama.js');
  const { sftLoss } = await import('../recipes/loss.js');
  const { adamw } = await import('../recipes/optim.js');
  const { trainStep } = await import('../recipes/step.js');
  const { SHAPES } = await import('./llama.js');
  const { cfg, T } = SHAPES.stories260K!;
  const B = 8;
  const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919) % cfg.vocabSize);
  const batch = { tokens: C.tensor(ids, { shape: [B, T], dtype: 'i32' }), labels: C.tensor(ids.map((v, i) => (i % T < T / 2 ? -100 : v)), { shape: [B, T], dtype: 'i32' }) };
  const opt = adamw({ lr: 1e-4 });
  const step = trainStep((p: never, _f: null, b: typeof batch) => sftLoss(cfg, p, b.tokens, b.labels, { reduction: 'sum' }), { optimizer: opt, clipNorm: 1 });
  let params = initParams(cfg, C.key(0)) as never;
  let state = opt.init(params);
  await C.realize(...C.leaves(params), ...C.leaves(state));
  const ms: number[] = [];
  for (let i = 0; i < Number(process.env.SFT_STEPS ?? 6); i++) {
    const t0 = performance.now();
    const out = await step(params, state, null, [batch], 1e-4);
    await C.item(out.loss);
    ms.push(performance.now() - t0);
    params = out.trainable as never;
    state = out.state;
  }
  // The second step still binds the plan's buffers for the first time: the warm figure is the median after it.
  const warm = ms.slice(2).sort((a, b) => a - b);
  console.log(`sft step: first ${(ms[0]! / 1000).toFixed(1)} s, warm ${warm[warm.length >> 1]!.toFixed(0)} ms (steps ${ms.slice(1).map((x) => x.toFixed(0)).join(' ')}); ${step.kernels} kernels in ${step.dispatches} dispatches`);
};

export const compileMain = async (): Promise<void> => {
  if (!existsSync(cli)) { console.log(`bench compile: ${cli} is missing (npm run build first)`); return; }
  const pick = process.env.COMPILE_WORKLOADS?.split(',');
  for (const w of WORKLOADS.filter((x) => !pick || pick.includes(x.name))) {
    if (w.needs && !existsSync(w.needs)) { console.log(`compile ${w.name}: skipped (no ${w.needs})`); continue; }
    const dir = mkdtempSync(join(tmpdir(), 'camelid-compile-'));
    try {
      const cache = join(dir, 'mesa');
      const cold = runChild(w.argv(dir), cache, true);
      // The tuned kernels compile in the background after a first run on a CPU adapter: the warm run comes after.
      const background = await awaitBackground(cold.pid);
      const warm = runChild(w.argv(dir), cache, false);
      if (!cold.ok || !warm.ok) { console.log(`compile ${w.name}: failed (${cold.ok ? warm.tail : cold.tail})`); continue; }
      console.log(`compile ${w.name}: ${cold.pipelines} pipelines; cold ${cold.seconds.toFixed(1)} s (${cold.firstDispatchS.toFixed(1)} s in first dispatches), warm ${warm.seconds.toFixed(1)} s → the first run pays ${(cold.seconds - warm.seconds).toFixed(1)} s (${(cold.seconds / warm.seconds).toFixed(1)}× the warm run); the tuned kernels' background compile ended ${background.toFixed(0)} s after it`);
      const stepLine = (r: Run) => r.stdout.split('\n').find((l) => l.startsWith('sft step')) ?? '';
      if (w.name === 'sft-step') console.log(`  cold: ${stepLine(cold)}\n  warm: ${stepLine(warm)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
};

if (process.argv[2] === 'child-sft-step') childSftStep().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
