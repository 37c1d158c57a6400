// Generation: greedy stories260K tokens and text against llama2.c run.c, batching with left padding, streaming,
// stop tokens, and seeded temperature / top-p sampling.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { setBackend } from '../index.js';
import { generate, generateIds, sampleRow } from '../models/generate.js';
import { initParams, type LlamaConfig, type LlamaParams } from '../models/llama.js';
import { loadLlama } from '../models/load.js';
import { loadTokenizer } from '../models/tokenizer/index.js';
import './setup.js';
import { right } from './helpers.js';
import { gpuDevice } from './gpu.js';

setBackend('cpu');

const fixtures = resolve(import.meta.dirname, '../../shared/fixtures/stories260K');
const haveFixtures = existsSync(fixtures);
if (!haveFixtures) console.warn(`generate tests: fixtures not found at ${fixtures}; skipping the stories260K golden tests`);

interface Case { prompt: string; prompt_ids: number[]; generated_ids: number[]; runc_stdout: string }

describe.skipIf(!haveFixtures)('stories260K greedy generation (llama2.c run.c reference)', () => {
  let cfg: LlamaConfig, params: LlamaParams, c: Case;
  beforeAll(async () => {
    c = (JSON.parse(await readFile(join(fixtures, 'expected.json'), 'utf8')) as { cases: Case[] }).cases[0]!;
    ({ config: cfg, params } = right(await loadLlama(join(fixtures, 'hf'))()));
  });

  it('reproduces the continuation ids exactly and decodes to run.c\'s text', async () => {
    const [ids] = await generateIds(cfg, params, [c.prompt_ids], { maxTokens: c.generated_ids.length });
    expect(ids).toEqual(c.generated_ids);
    const tok = right(await loadTokenizer(join(fixtures, 'tok512.model'))());
    expect(tok.encode(c.prompt)).toEqual(c.prompt_ids);
    // run.c prints the prompt and the generated pieces, then a newline.
    expect(tok.decode([...c.prompt_ids, ...ids!]) + '\n').toBe(c.runc_stdout);
  });

  it('a batch of prompts of different lengths gives each row its own greedy continuation', async () => {
    const short = c.prompt_ids.slice(0, 3);
    const alone = await generateIds(cfg, params, [short], { maxTokens: 8 });
    const batch = await generateIds(cfg, params, [c.prompt_ids, short], { maxTokens: 8 });
    expect(batch[0]).toEqual(c.generated_ids.slice(0, 8));
    expect(batch[1]).toEqual(alone[0]);
  });
});

// A tiny random model: fast enough to exercise the loop's bookkeeping.
const tiny: LlamaConfig = {
  dim: 8, hiddenDim: 12, nLayers: 2, nHeads: 2, nKvHeads: 1, headDim: 4, vocabSize: 11, seqLen: 12,
  normEps: 1e-5, ropeTheta: 10000, tieEmbeddings: true, bosId: 1, eosId: 2,
};
const params = initParams(tiny, C.key(5), { std: 1 });

describe('generation loop', () => {
  it('streams one step at a time, and marks rows that stopped with null', async () => {
    const steps: (number | null)[][] = [];
    const greedy = await generateIds(tiny, params, [[1, 3], [1, 4, 5]], { maxTokens: 6, stop: [] });
    const stopAt = greedy[0]![2]!; // make row 0 stop at its third token
    for await (const s of generate(tiny, params, [[1, 3], [1, 4, 5]], { maxTokens: 6, stop: [stopAt] })) {
      expect(s.step).toBe(steps.length);
      steps.push([...s.tokens]);
    }
    const first = greedy[0]!.indexOf(stopAt);
    expect(steps[first]![0]).toBe(stopAt);
    expect(steps.slice(first + 1).every((s) => s[0] === null)).toBe(true);
    const row1 = greedy[1]!.indexOf(stopAt);
    expect(steps.length).toBe(row1 >= 0 ? Math.max(first, row1) + 1 : 6);
  });

  it('stops at the context length', async () => {
    const [ids] = await generateIds(tiny, params, [[1, 3, 4, 5, 6, 7, 8, 9, 10, 3]], { maxTokens: 50, stop: [] });
    expect(ids!.length).toBe(tiny.seqLen - 10 + 1);
  });

  it('sampling is reproducible from a key and differs between keys', async () => {
    const opts = { maxTokens: 8, temperature: 1.5, stop: [] } as const;
    const a = await generateIds(tiny, params, [[1, 3]], { ...opts, key: C.key(11) });
    const b = await generateIds(tiny, params, [[1, 3]], { ...opts, key: C.key(11) });
    const others = await Promise.all([12, 13, 14].map((k) => generateIds(tiny, params, [[1, 3]], { ...opts, key: C.key(k) })));
    expect(a).toEqual(b);
    expect(others.some((o) => JSON.stringify(o) !== JSON.stringify(a))).toBe(true);
  });

  it('rejects empty prompts and out-of-vocabulary ids', async () => {
    await expect(generateIds(tiny, params, [[]], { maxTokens: 2 })).rejects.toThrow(/at least one token/);
    await expect(generateIds(tiny, params, [[1, 11]], { maxTokens: 2 })).rejects.toThrow(/prompt 0 token 1 is 11, outside \[0, 11\)/);
  });
});

describe('the KV cache grows with the steps actually taken', () => {
  it('past the first 256 steps, every sampled token is what the uncached forward and uniform(key, [steps, 1]) give', async () => {
    const long: LlamaConfig = { ...tiny, seqLen: 1000 };
    const prompt = [1, 3];
    const n = 300; // the cache starts with room for 256 steps and doubles
    const opts = { maxTokens: n, temperature: 1, topP: 0.95, stop: [], key: C.key(3) } as const;
    const [ids] = await generateIds(long, params, [prompt], opts);
    expect(ids!.length).toBe(n);
    // Reference: one forward of the whole sequence without a cache, and the uniforms drawn at once.
    const seq = [...prompt, ...ids!.slice(0, -1)];
    const logits = await C.data(C.forward(long, params, C.tensor([seq], { dtype: 'i32' }))) as Float32Array; // (1, T, V)
    const u = await C.data(C.uniform(C.key(3), [n, 1]));
    const V = long.vocabSize;
    const expected = ids!.map((_, s) => sampleRow(logits.subarray((prompt.length - 1 + s) * V, (prompt.length + s) * V), u[s]!, opts));
    expect(ids).toEqual(expected);
  });

  it('a context of 2^30 and maxTokens 2^30 allocate only what is generated (a caller stopping after 260 steps)', async () => {
    const huge: LlamaConfig = { ...tiny, seqLen: 2 ** 30 };
    const before = process.memoryUsage().rss;
    let steps = 0;
    for await (const { tokens } of generate(huge, params, [[1, 3]], { maxTokens: 2 ** 30, temperature: 0.8, stop: [], key: C.key(4) })) {
      expect(tokens[0]).toBeTypeOf('number');
      if (++steps === 260) break;
    }
    expect(steps).toBe(260);
    // Sized by maxTokens, the uniforms alone would be 4 GiB and the cache 2 × 2 layers × 16 GiB.
    expect(process.memoryUsage().rss - before).toBeLessThan(512 * 2 ** 20);
  });
});

describe('generate options are checked at the call, naming the option and the value', () => {
  const prompt = [[1, 3]];
  it.each([
    [{ maxTokens: Number.NaN }, /maxTokens must be a non-negative integer, got NaN/],
    [{ maxTokens: 1.5 }, /maxTokens must be a non-negative integer, got 1\.5/],
    [{ maxTokens: undefined }, /maxTokens must be a non-negative integer, got undefined/],
    [{ maxTokens: -1 }, /maxTokens must be a non-negative integer, got -1/],
    [{ maxTokens: '4' }, /maxTokens must be a non-negative integer, got 4/],
    [{ maxTokens: 4, temperature: Number.NaN }, /temperature must be a finite number ≥ 0, got NaN/],
    [{ maxTokens: 4, temperature: -0.5 }, /temperature must be a finite number ≥ 0, got -0\.5/],
    [{ maxTokens: 4, temperature: Infinity }, /temperature must be a finite number ≥ 0, got Infinity/],
    [{ maxTokens: 4, topP: Number.NaN }, /topP must be in \(0, 1\], got NaN/],
    [{ maxTokens: 4, topP: 0 }, /topP must be in \(0, 1\], got 0/],
    [{ maxTokens: 4, topP: 1.01 }, /topP must be in \(0, 1\], got 1\.01/],
    [{ maxTokens: 4, stop: [2, 11] }, /stop\[1\] is 11, not a token id in \[0, 11\)/],
    [{ maxTokens: 4, stop: [Number.NaN] }, /stop\[0\] is NaN/],
    [{ maxTokens: 4, stop: 2 }, /stop must be an array of token ids, got 2/],
    [{ maxTokens: 4, padId: -1 }, /padId must be a token id in \[0, 11\), got -1/],
    [{ maxTokens: 4, key: 7 }, /key must be a key \(a u32 tensor of shape \(2,\)/],
  ])('%o', (opts, msg) => {
    // Thrown by the call itself, before any step is asked for or any tensor made.
    expect(() => generate(tiny, params, prompt, opts as never)).toThrow(msg);
  });

  it('a key of the wrong dtype or shape is refused', () => {
    expect(() => generate(tiny, params, prompt, { maxTokens: 2, key: C.tensor([0, 1], { dtype: 'i32' }) as never })).toThrow(/key must be a key .*got i32\(2\)/);
    expect(() => generate(tiny, params, prompt, { maxTokens: 2, key: C.tensor([0, 1, 2], { dtype: 'u32' }) as never })).toThrow(/got u32\(3\)/);
  });

  it('sampleRow checks its options and its uniform', () => {
    expect(() => sampleRow([1, 2], 0.5, { temperature: Number.NaN })).toThrow(/sampleRow: temperature must be a finite number ≥ 0, got NaN/);
    expect(() => sampleRow([1, 2], 0.5, { topP: Number.NaN })).toThrow(/sampleRow: topP must be in \(0, 1\], got NaN/);
    expect(() => sampleRow([1, 2], 1, { temperature: 1 })).toThrow(/sampleRow: u must be in \[0, 1\), got 1/);
  });

  it('maxTokens 0 produces nothing; valid options still generate', async () => {
    expect(await generateIds(tiny, params, prompt, { maxTokens: 0 })).toEqual([[]]);
    const [ids] = await generateIds(tiny, params, prompt, { maxTokens: 3, temperature: 0.7, topP: 0.9, stop: [], padId: 0, key: C.key(1) });
    expect(ids!.length).toBe(3);
  });
});

describe('sampleRow', () => {
  const logits = [1, 3, 3, 0.5, -2];
  it('greedy takes the first maximum', () => {
    expect(sampleRow(logits, 0.99)).toBe(1);
  });

  it('temperature sampling follows the softmax: u walks the cumulative mass (most likely first)', () => {
    const p = logits.map((l) => Math.exp(l - 3));
    const z = p.reduce((a, b) => a + b, 0);
    // Order by probability: 1, 2 (tie, by id), 0, 3, 4.
    expect(sampleRow(logits, 0.01, { temperature: 1 })).toBe(1);
    expect(sampleRow(logits, (p[1]! + 0.5 * p[2]!) / z, { temperature: 1 })).toBe(2);
    expect(sampleRow(logits, (p[1]! + p[2]! + 0.5 * p[0]!) / z, { temperature: 1 })).toBe(0);
    expect(sampleRow(logits, 0.999999, { temperature: 1 })).toBe(4);
  });

  it('top-p keeps the smallest most-likely set holding p of the mass', () => {
    // p ≈ [0.061, 0.450, 0.450, 0.037, 0.003]: token 1 holds 0.45, tokens 1 and 2 hold 0.90, then 0 brings 0.96.
    expect(sampleRow(logits, 0.999, { temperature: 1, topP: 0.4 })).toBe(1);
    expect(sampleRow(logits, 0.999, { temperature: 1, topP: 0.85 })).toBe(2);
    expect(sampleRow(logits, 0.999, { temperature: 1, topP: 0.95 })).toBe(0);
    expect(sampleRow(logits, 0.999, { temperature: 1, topP: 1e-9 })).toBe(1);
  });
});

describe.skipIf(!gpuDevice || !haveFixtures)('sampling on WebGPU frees what it makes', () => {
  it('after a sampled generate (own key, or the default one), device bytes in use are back where they were', async () => {
    setBackend('webgpu');
    try {
      const { config, params } = right(await loadLlama(join(fixtures, 'hf'))());
      const c = (JSON.parse(await readFile(join(fixtures, 'expected.json'), 'utf8')) as { cases: Case[] }).cases[0]!;
      // The stories260K shapes of llama-webgpu.test (24 tokens): its shaders are compiled already.
      const run = async (key?: C.Key) => {
        let n = 0;
        for await (const _ of generate(config, params, [c.prompt_ids], { maxTokens: 24, temperature: 1, stop: [], ...(key ? { key } : {}) })) n++;
        return n;
      };
      expect(await run()).toBe(24); // uploads the parameters, compiles the plans
      const before = gpuDevice!.counters.bytesInUse;
      expect(await run()).toBe(24);
      expect(gpuDevice!.counters.bytesInUse).toBe(before); // the uniforms and the default key are freed
      const k = C.key(3);
      expect(await run(k)).toBe(24);
      k.dispose(); // the caller's key is the caller's to free
      expect(gpuDevice!.counters.bytesInUse).toBe(before);
    } finally {
      setBackend('cpu');
    }
  });
});
