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
import { right, tinyLlama } from './helpers.js';
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
const tiny = tinyLlama({ seqLen: 12, tieEmbeddings: true });
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
    [{ maxTokens: 4, key: 7 }, /key must be a key \(a u32 tensor of shape \(2,\), from key\(seed\) or split\), got 7$/],
    [{ maxTokens: 4, key: null }, /key must be a key .*got null$/],
    [{ maxTokens: 2 ** 53 }, /maxTokens must be a non-negative integer, got 9007199254740992/],
    [{ maxTokens: Infinity }, /maxTokens must be a non-negative integer, got Infinity/],
    [{ maxTokens: 4, temperature: '0.5' }, /temperature must be a finite number ≥ 0, got 0\.5/],
    [{ maxTokens: 4, topP: '0.5' }, /topP must be in \(0, 1\], got 0\.5/],
    [{ maxTokens: 4, stop: ['2'] }, /stop\[0\] is 2, not a token id in \[0, 11\)/],
    [{ maxTokens: 4, stop: [1.5] }, /stop\[0\] is 1\.5, not a token id/],
    [{ maxTokens: 4, stop: [3, -1] }, /stop\[1\] is -1, not a token id/],
    [{ maxTokens: 4, padId: '0' }, /padId must be a token id in \[0, 11\), got 0/],
    [{ maxTokens: 4, padId: 2.5 }, /padId must be a token id in \[0, 11\), got 2\.5/],
    [{ maxTokens: 4, padId: 11 }, /padId must be a token id in \[0, 11\), got 11/],
  ])('%o', (opts, msg) => {
    // Thrown by the call itself, before any step is asked for or any tensor made; the message says where.
    expect(() => generate(tiny, params, prompt, opts as never)).toThrow(msg);
    expect(() => generate(tiny, params, prompt, opts as never)).toThrow(/^generate: /);
  });

  it('a key of the wrong dtype or shape is refused', () => {
    expect(() => generate(tiny, params, prompt, { maxTokens: 2, key: C.tensor([0, 1], { dtype: 'i32' }) as never })).toThrow(/key must be a key .*got i32\(2\)/);
    expect(() => generate(tiny, params, prompt, { maxTokens: 2, key: C.tensor([0, 1, 2], { dtype: 'u32' }) as never })).toThrow(/got u32\(3\)/);
    expect(() => generate(tiny, params, prompt, { maxTokens: 2, key: C.tensor([[0, 1], [2, 3]], { dtype: 'u32' }) as never })).toThrow(/got u32\(2,2\)/);
  });

  it('options that are not an object are refused by generate and generateIds alike, before they are read', async () => {
    expect(() => generate(tiny, params, prompt, null as never)).toThrow(/^generate: options must be an object, got null$/);
    // generateIds used to read opts.stop first: `null` and `stop: 2` failed with "Cannot read properties of null"
    // and "number 2 is not iterable" instead of generate's messages.
    await expect(generateIds(tiny, params, prompt, null as never)).rejects.toThrow(/^generate: options must be an object, got null$/);
    await expect(generateIds(tiny, params, prompt, { maxTokens: 4, stop: 2 as never })).rejects.toThrow(/^generate: stop must be an array of token ids, got 2$/);
    await expect(generateIds(tiny, params, 'ab' as never, { maxTokens: 4 })).rejects.toThrow(/^generate: prompts must be an array of token id arrays, got ab$/);
  });

  it('the edges of each range are allowed: temperature 0, topP 1, padId and stop ids 0 and 10, the largest safe maxTokens', async () => {
    const opts = { maxTokens: Number.MAX_SAFE_INTEGER, temperature: 0, topP: 1, padId: 10, stop: [0, 10] };
    const greedy = await generateIds(tiny, params, [[1, 3, 4, 5, 6, 7, 8, 9, 10, 3]], { maxTokens: 3, stop: [] });
    const [ids] = await generateIds(tiny, params, [[1, 3, 4, 5, 6, 7, 8, 9, 10, 3]], opts);
    // Greedy, cut by the context (12 − 10 + 1 tokens) or at a stop id, whichever comes first.
    const cut = greedy[0]!.findIndex((t) => t === 0 || t === 10);
    expect(ids).toEqual(cut >= 0 ? greedy[0]!.slice(0, cut) : greedy[0]);
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

describe('prompts are checked at the call, naming the prompt and the token', () => {
  const opts = { maxTokens: 2 };
  const thirteen = [1, 3, 4, 5, 6, 7, 8, 9, 10, 3, 4, 5, 6]; // one more than tiny's context of 12
  it.each([
    [[], /^generate: no prompts \(give at least one\)$/],
    [[[]], /^generate: prompt 0 is empty: every prompt needs at least one token$/],
    [[[1, 3], []], /^generate: prompt 1 is empty/],
    [[[1, 3], 'ab'], /^generate: prompt 1 must be an array of token ids, got ab$/],
    [[[1, 3], 5], /^generate: prompt 1 must be an array of token ids, got 5$/],
    [{ length: 1, 0: [1] }, /^generate: prompts must be an array of token id arrays, got \[object Object\]$/],
    [[[11, 1]], /^generate: prompt 0 token 0 is 11, outside \[0, 11\)$/],
    [[[1, 3], [1, -1]], /^generate: prompt 1 token 1 is -1, outside \[0, 11\)$/],
    [[[1, 2.5]], /^generate: prompt 0 token 1 is 2\.5/],
    [[[1, '3']], /^generate: prompt 0 token 1 is 3/],
    [[thirteen], /^generate: prompt of 13 tokens is longer than the context \(12\)$/],
    [[[1], thirteen, [1, 3]], /^generate: prompt of 13 tokens is longer than the context \(12\)$/],
  ])('%j', (prompts, msg) => {
    expect(() => generate(tiny, params, prompts as never, opts)).toThrow(msg);
  });

  it('a prompt that fills the context exactly gives one token, whatever maxTokens asks', async () => {
    const twelve = thirteen.slice(0, 12);
    const [ids] = await generateIds(tiny, params, [twelve], { maxTokens: 5, stop: [] });
    expect(ids!.length).toBe(1);
    // In a batch the longest prompt sets the room: the short row also gets one token.
    const both = await generateIds(tiny, params, [[1, 3], twelve], { maxTokens: 5, stop: [] });
    expect(both.map((r) => r.length)).toEqual([1, 1]);
  });
});

// A random model whose greedy continuations vary (key 5's mostly repeat one token), for the batch invariants.
const lively = initParams(tiny, C.key(4), { std: 1 });
const prompts = [[1, 3], [1, 4, 5], [1, 7], [1, 9, 8, 6]]; // lengths 2, 3, 2, 4: three rows are left-padded
const alone = async (opts: C.GenerateOptions, cfg: LlamaConfig = tiny) =>
  Promise.all(prompts.map(async (p) => (await generateIds(cfg, lively, [p], opts))[0]!));

describe('a batch row is the same generation as its prompt alone', () => {
  it('greedy rows equal each prompt alone, whatever the pad id (padding is masked out)', async () => {
    const opts = { maxTokens: 6, stop: [] };
    const each = await alone(opts);
    expect(new Set(each.map((r) => r.join())).size).toBe(prompts.length); // the rows differ: a mix-up would show
    expect(await generateIds(tiny, lively, prompts, opts)).toEqual(each);
    for (const padId of [3, 10]) expect(await generateIds(tiny, lively, prompts, { ...opts, padId }), `padId ${padId}`).toEqual(each);
  });

  it('row b at step s is sampled from its own logits with uniform(key, [steps, B])[s, b]', async () => {
    const n = 5, B = prompts.length;
    const opts = { maxTokens: n, temperature: 1.3, topP: 0.9, stop: [], key: C.key(8) } as const;
    const rows = await generateIds(tiny, lively, prompts, opts);
    const u = await C.data(C.uniform(C.key(8), [n, B])); // (n, B)
    const V = tiny.vocabSize;
    for (const [b, p] of prompts.entries()) {
      // Reference: one uncached forward of this row alone over its prompt and the tokens it produced.
      const seq = [...p, ...rows[b]!.slice(0, -1)];
      const logits = await C.data(C.forward(tiny, lively, C.tensor([seq], { dtype: 'i32' }))) as Float32Array; // (1, T, V)
      const expected = rows[b]!.map((_, s) => sampleRow(logits.subarray((p.length - 1 + s) * V, (p.length + s) * V), u[s * B + b]!, opts));
      expect(rows[b], `row ${b}`).toEqual(expected);
    }
  });

  it('sampling without a key draws from key(0), as documented', async () => {
    const opts = { maxTokens: 6, temperature: 1.5, stop: [] } as const;
    const dflt = await generateIds(tiny, lively, prompts, opts);
    expect(dflt).toEqual(await generateIds(tiny, lively, prompts, { ...opts, key: C.key(0) }));
    expect(dflt).not.toEqual(await generateIds(tiny, lively, prompts, { ...opts, key: C.key(1) }));
  });
});

describe('stop tokens end their own row only', () => {
  // With stop: [] each row's greedy continuation is known; a stop id then cuts each row at its first occurrence.
  const maxTokens = 8;
  const cutAt = (row: readonly number[], stop: readonly number[]) => {
    const i = row.findIndex((t) => stop.includes(t));
    return i >= 0 ? row.slice(0, i + 1) : [...row]; // what the stream reports: up to and including the stop token
  };

  it('the default stop is cfg.eosId: the stream reports it, then null; generateIds leaves it out', async () => {
    const free = await alone({ maxTokens, stop: [] });
    const eos = 0; // ends rows 0 and 2 at different steps, never row 1 (checked below)
    const cfg = { ...tiny, eosId: eos };
    const reported = free.map((r) => cutAt(r, [eos]));
    expect(reported.map((r) => r.length)).toEqual([3, maxTokens, 1, 4]);

    const steps: (number | null)[][] = [];
    for await (const s of generate(cfg, lively, prompts, { maxTokens })) steps.push([...s.tokens]);
    expect(steps.length).toBe(maxTokens); // row 1 never stops
    reported.forEach((r, b) => expect(steps.map((s) => s[b]), `row ${b}`).toEqual([...r, ...Array<null>(maxTokens - r.length).fill(null)]));

    const ids = await generateIds(cfg, lively, prompts, { maxTokens });
    expect(ids).toEqual(reported.map((r) => r.filter((t) => t !== eos)));
    expect(await generateIds(cfg, lively, prompts, { maxTokens, stop: [eos] })).toEqual(ids);
  });

  it('several stop ids; the stream ends when every row has stopped', async () => {
    const free = await alone({ maxTokens, stop: [] });
    const stop = [0, 4];
    const reported = free.map((r) => cutAt(r, stop));
    const steps: (number | null)[][] = [];
    for await (const s of generate(tiny, lively, prompts, { maxTokens, stop })) steps.push([...s.tokens]);
    expect(steps.length).toBe(Math.max(...reported.map((r) => r.length)));
    expect(steps.length).toBeLessThan(maxTokens); // every row meets 0 or 4
    reported.forEach((r, b) => expect(steps.map((s) => s[b]), `row ${b}`).toEqual([...r, ...Array<null>(steps.length - r.length).fill(null)]));
    expect(await generateIds(tiny, lively, prompts, { maxTokens, stop })).toEqual(reported.map((r) => r.filter((t) => !stop.includes(t))));
  });
});
