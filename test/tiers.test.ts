// The fast first tier (core/device/tiers.ts): which kernels each tier compiles, and the background compile — a
// child process compiles the tuned WGSL into Mesa's cache and records its hash, after which the next plan uses
// the tuned kernel. Values against the interpreter in every tier. (The suite itself runs tier 'tuned', set in
// vitest.config.ts; this file switches tiers per test through CAMELID_FIRST_TIER, which each plan reads anew.)

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { interpret } from '../core/interp.js';
import { compileKernels, runGraph, tiersOf } from '../core/runtime.js';
import { schedule } from '../core/schedule/index.js';
import { readRecord, recordPath, tierFor } from '../core/device/tiers.js';
import { causalAttention, ropeTable } from '../ops/nn.js';
import { gpuDevice } from './gpu.js';
import { maxRelDiff } from './helpers.js';
import './setup.js';

const cache = mkdtempSync(join(tmpdir(), 'camelid-tiers-'));
const saved = { tier: process.env.CAMELID_FIRST_TIER, dir: process.env.MESA_SHADER_CACHE_DIR };
afterAll(() => {
  process.env.CAMELID_FIRST_TIER = saved.tier;
  if (saved.dir === undefined) delete process.env.MESA_SHADER_CACHE_DIR; else process.env.MESA_SHADER_CACHE_DIR = saved.dir;
  rmSync(cache, { recursive: true, force: true });
});

const software = { vendor: 'mesa', architecture: '', device: '', description: 'llvmpipe (LLVM 19)', isSoftware: true };

describe('tier policy', () => {
  it('defaults to auto on a CPU adapter and tuned on a GPU; CAMELID_FIRST_TIER overrides; anything else is named', () => {
    const before = process.env.CAMELID_FIRST_TIER;
    try {
      delete process.env.CAMELID_FIRST_TIER;
      expect(tierFor(software)).toBe('auto');
      expect(tierFor({ ...software, description: 'NVIDIA H200', isSoftware: false })).toBe('tuned');
      process.env.CAMELID_FIRST_TIER = 'fast';
      expect(tierFor({ ...software, isSoftware: false })).toBe('fast');
      process.env.CAMELID_FIRST_TIER = 'quick';
      expect(() => tierFor(software)).toThrow("CAMELID_FIRST_TIER must be auto, tuned or fast, got 'quick'");
    } finally {
      process.env.CAMELID_FIRST_TIER = before;
    }
  });

  it('keeps its record beside the Mesa cache it describes, one per adapter and LLVM optimisation setting', () => {
    const before = { dir: process.env.MESA_SHADER_CACHE_DIR, perf: process.env.GALLIVM_PERF };
    try {
      process.env.MESA_SHADER_CACHE_DIR = '/x/cache';
      const a = recordPath(software);
      expect(a.startsWith('/x/cache/camelid-pipelines-')).toBe(true);
      expect(recordPath({ ...software, description: 'SwiftShader' })).not.toBe(a);
      process.env.GALLIVM_PERF = before.perf === 'nopt' ? '' : 'nopt';
      expect(recordPath(software)).not.toBe(a);
    } finally {
      if (before.dir === undefined) delete process.env.MESA_SHADER_CACHE_DIR; else process.env.MESA_SHADER_CACHE_DIR = before.dir;
      if (before.perf === undefined) delete process.env.GALLIVM_PERF; else process.env.GALLIVM_PERF = before.perf;
    }
  });
});

describe.skipIf(!gpuDevice)('tiers on WebGPU', () => {
  const dev = gpuDevice!;
  // Attention over T queries of head size 8: its tuned kernels take 8–16 rows per invocation, the quick ones 4.
  // Each test has its own T, so that no pipeline of one is in this process's cache for the other.
  const attention = (seed: number, T: number) => {
    const [B, H, Hkv, D] = [1, 4, 2, 8];
    const t = (shape: number[], i: number) => C.tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b) }, (_, j) => Math.sin(seed + 1.7 * i + 0.31 * j)), { shape });
    const [q, k, v, w] = [t([B, T, H, D], 0), t([B, T, Hkv, D], 1), t([B, T, Hkv, D], 2), t([B, T, H, D], 3)];
    const table = ropeTable(C.iota(T), D, 10000);
    const [[, out], grads] = C.valueAndGrad(([qq, kk, vv]: Tensor[]) => {
      const o = causalAttention(qq!, kk!, vv!, { rope: table });
      return [C.sum(C.mul(o, w!)), o] as const;
    }, { hasAux: true })([q!, k!, v!]);
    return [out, ...grads];
  };
  const check = async (outs: Tensor[], want: ReturnType<typeof interpret>, what: string) => {
    await runGraph(dev, outs.map((t) => t.node));
    for (const [i, t] of outs.entries()) {
      expect(maxRelDiff(await C.data(t), want[i]!), `${what}: output ${i}`).toBeLessThan(2e-5);
      t.dispose();
    }
  };

  it("'fast' compiles the quick attention kernels and merges nothing; 'tuned' the tuned ones, merged; same values", async () => {
    C.setBackend('webgpu');
    const want = interpret(attention(1, 32).map((t) => t.node));
    const plan = async (tier: string) => {
      process.env.CAMELID_FIRST_TIER = tier;
      const kernels = schedule(attention(1, 32).map((t) => t.node));
      return { kernels, compiled: await compileKernels(dev, kernels) };
    };
    const fast = await plan('fast'), tuned = await plan('tuned');
    expect(fast.compiled.every((c) => c.kernels.length === 1)).toBe(true);
    expect(tuned.compiled.some((c) => c.kernels.length > 1)).toBe(true);
    // The quick attention kernels run more invocations (4 rows each, not 8 or 16): more workgroups per part.
    const workgroups = (p: typeof fast) => p.compiled.filter((c) => c.kernels.length === 1 && c.kernels[0]!.kind === 'attention')
      .map((c) => c.step.rendered[0]!.workgroups.reduce((a, b) => a * b)).reduce((a, b) => a + b, 0);
    expect(workgroups(fast)).toBeGreaterThan(workgroups({ ...tuned, compiled: tuned.compiled.filter((c) => c.kernels.length === 1) }));
    for (const tier of ['fast', 'tuned']) {
      process.env.CAMELID_FIRST_TIER = tier;
      await check(attention(1, 32), want, tier);
    }
  });

  it("'auto' runs the quick kernels while the tuned ones compile in a child process, then the tuned ones", async () => {
    C.setBackend('webgpu');
    process.env.CAMELID_FIRST_TIER = 'auto';
    process.env.MESA_SHADER_CACHE_DIR = cache; // the record and the child's Mesa cache: empty
    const tiers = tiersOf(dev);
    const want = interpret(attention(2, 40).map((t) => t.node));
    const started = tiers.started.length;
    const compiles0 = dev.counters.compiles;
    await check(attention(2, 40), want, 'first plan (quick kernels)');
    expect(tiers.started.length).toBe(started + 1);
    const job = tiers.started.at(-1)!;
    const queued = (JSON.parse(readFileSync(job, 'utf8')) as { sources: { label: string }[] }).sources.map((s) => s.label);
    expect(queued.filter((l) => l.includes('attention')).length).toBeGreaterThanOrEqual(3); // out, dq, dkv (or dq + dkv merged)
    // The child deletes its job file when done; until then the record may hold some of its kernels already.
    for (let waited = 0; existsSync(job); waited += 250) {
      if (waited > 540_000) throw new Error(`the background compile ${job} did not finish in 9 minutes`);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(readRecord(tiers.record).size).toBe(queued.length);
    const compiles1 = dev.counters.compiles;
    expect(compiles1).toBeGreaterThan(compiles0); // the quick kernels
    // The next plan of the same graph takes the tuned kernels (new pipelines in this process) and queues nothing.
    await check(attention(2, 40), want, 'second plan (tuned kernels)');
    expect(dev.counters.compiles).toBeGreaterThan(compiles1);
    expect(tiers.started.length).toBe(started + 1);
    const compiles2 = dev.counters.compiles;
    await check(attention(2, 40), want, 'third plan');
    expect(dev.counters.compiles).toBe(compiles2);
  });
});
