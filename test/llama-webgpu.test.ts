// Llama on WebGPU: stories260K logits against llama2.c run.c, and greedy generation through the compiled decode
// plan (position as a run-time scalar, cache written in place): same ids, no compile or allocation per token.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { loadLlama } from '../models/load.js';
import { forward, initParams } from '../models/llama.js';
import { generate, generateIds } from '../models/generate.js';
import { gpuDevice } from './gpu.js';
import { fixture, tinyLlama } from './helpers.js';

const { path: fixtures, have } = fixture('stories260K', 'the stories260K WebGPU tests');

describe.skipIf(!gpuDevice || !have)('stories260K on WebGPU', () => {
  const load = async () => {
    const r = await loadLlama(join(fixtures, 'hf'))();
    if (E.isLeft(r)) throw new Error(r.left.message);
    return r.right;
  };
  const expected = async () => (JSON.parse(await readFile(join(fixtures, 'expected.json'), 'utf8')) as { cases: { all_ids: number[]; prompt_ids: number[]; generated_ids: number[]; logits_file: string }[] }).cases[0]!;

  it('logits at all 64 positions within 1e-4 of run.c', async () => {
    C.setBackend('webgpu');
    const { config, params } = await load();
    const c = await expected();
    const bytes = await readFile(join(fixtures, c.logits_file));
    const ref = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const logits = forward(config, params, C.tensor([c.all_ids.slice(0, 64)], { dtype: 'i32' }));
    const got = await C.data(logits);
    let err = 0;
    for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(got[i]! - ref[i]!));
    console.log(`stories260K on WebGPU: max |logit − run.c| = ${err.toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
    logits.dispose();
  });

  it('greedy generation replays one compiled decode plan: reference ids, 0 compiles and 0 allocations per token, and nothing compiles on a second call', async () => {
    C.setBackend('webgpu');
    const { config, params } = await load();
    const c = await expected();
    const n = 24;
    const ids: number[] = [];
    let mark: { compiles: number; allocations: number } | null = null;
    for await (const { step, tokens } of generate(config, params, [c.prompt_ids], { maxTokens: n })) {
      ids.push(tokens[0]!);
      if (step === 3) mark = { compiles: gpuDevice!.counters.compiles, allocations: gpuDevice!.counters.allocations };
    }
    expect(ids).toEqual(c.generated_ids.slice(0, n));
    expect(gpuDevice!.counters.compiles).toBe(mark!.compiles);
    expect(gpuDevice!.counters.allocations).toBe(mark!.allocations);
    // A second call with the same config and shapes reuses the decode plan (and the prefill's pipelines).
    const again: number[] = [];
    for await (const { tokens } of generate(config, params, [c.prompt_ids], { maxTokens: n })) again.push(tokens[0]!);
    expect(again).toEqual(ids);
    expect(gpuDevice!.counters.compiles).toBe(mark!.compiles);
  });

  it('a left-padded batch through the compiled decode step: each row is its prompt alone (the padding masked)', async () => {
    // A tiny random model whose greedy rows differ (as generate.test's batch invariants): stories260K's
    // continuations hardly depend on what a row may attend to, so they did not show a dropped mask.
    C.setBackend('webgpu');
    const tiny = tinyLlama({ seqLen: 12, tieEmbeddings: true });
    const params = initParams(tiny, C.key(4), { std: 1 });
    const prompts = [[1, 3], [1, 4, 5], [1, 7], [1, 9, 8, 6]]; // three rows left-padded
    const opts = { maxTokens: 6, stop: [] };
    const each = await Promise.all(prompts.map(async (p) => (await generateIds(tiny, params, [p], opts))[0]!));
    expect(new Set(each.map((r) => r.join())).size).toBe(prompts.length);
    expect(await generateIds(tiny, params, prompts, opts)).toEqual(each);
  });
});
