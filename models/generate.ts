// Batched autoregressive generation with a KV cache: prefill the (left-padded) prompts, then decode one token per
// step, streaming tokens as they are produced. Sampling (greedy, temperature, top-p) runs on the host over one row
// of logits per sequence, drawing its uniforms from a camelid key so every run is reproducible.

import type { FloatDType } from '../core/dtype.js';
import { data, getBackend, realize } from '../core/backend.js';
import type { Tensor } from '../core/tensor.js';
import { fromStorage, tensor, zeros } from '../ops/create.js';
import { concat, slice } from '../ops/movement.js';
import { key as makeKey, uniform, type Key } from '../ops/random.js';
import type { LlamaConfig } from './config.js';
import { emptyCache, forward, type KvCache, type KvLayer, type LlamaParams } from './llama.js';
import { jit } from '../core/jit.js';

export interface SampleOptions {
  /** 0 (the default) is greedy: the most likely token, the lowest id on ties. */
  readonly temperature?: number;
  /** Nucleus sampling (Holtzman et al. 2019): sample among the most likely tokens holding this much mass. Default 1. */
  readonly topP?: number;
}

/**
 * Picks a token from one row of logits, given a uniform draw u ∈ [0, 1).
 * @example sampleRow([0.1, 2, -1], 0.5, {}) // 1 (greedy)
 */
export const sampleRow = (logits: ArrayLike<number>, u: number, opts: SampleOptions = {}): number => {
  checkSampleOptions('sampleRow', opts);
  if (!(u >= 0 && u < 1)) throw new RangeError(`sampleRow: u must be in [0, 1), got ${String(u)}`);
  const { temperature = 0, topP = 1 } = opts;
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (temperature <= 0) return best;
  const m = logits[best]!;
  const p = Float64Array.from(logits, (l) => Math.exp((l - m) / temperature));
  const order = [...p.keys()].sort((a, b) => p[b]! - p[a]! || a - b); // most likely first, then by id
  const total = p.reduce((a, b) => a + b, 0);
  let kept = 0, n = 0;
  while (n < order.length && (n === 0 || kept < topP * total)) kept += p[order[n++]!]!;
  let r = u * kept;
  for (let i = 0; i < n - 1; i++) {
    r -= p[order[i]!]!;
    if (r < 0) return order[i]!;
  }
  return order[n - 1]!;
};

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === 'object' && u !== null;

/** Temperature and topP: a NaN would silently mean greedy or a stream of token 0, so they are checked here. */
const checkSampleOptions = (where: string, o: SampleOptions): void => {
  if (!isObject(o)) throw new TypeError(`${where}: options must be an object, got ${String(o)}`);
  const { temperature, topP } = o;
  if (temperature !== undefined && !(typeof temperature === 'number' && temperature >= 0 && temperature < Infinity))
    throw new RangeError(`${where}: temperature must be a finite number ≥ 0, got ${String(temperature)}`);
  if (topP !== undefined && !(typeof topP === 'number' && topP > 0 && topP <= 1))
    throw new RangeError(`${where}: topP must be in (0, 1], got ${String(topP)}`);
};

const isTokenId = (c: LlamaConfig, id: unknown): boolean => typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < c.vocabSize;

/** Every option of generate, checked before anything is allocated; each message names the option and the value. */
const checkGenerateOptions = (c: LlamaConfig, o: GenerateOptions): void => {
  checkSampleOptions('generate', o);
  const { maxTokens, key, stop, padId } = o;
  if (!(typeof maxTokens === 'number' && Number.isSafeInteger(maxTokens) && maxTokens >= 0))
    throw new RangeError(`generate: maxTokens must be a non-negative integer, got ${String(maxTokens)}`);
  if (key !== undefined && !(isObject(key) && key.dtype === 'u32' && key.shape.length === 1 && key.shape[0] === 2))
    throw new TypeError(`generate: key must be a key (a u32 tensor of shape (2,), from key(seed) or split), got ${isObject(key) ? `${String(key.dtype)}(${String(key.shape)})` : String(key)}`);
  if (stop !== undefined) {
    if (!Array.isArray(stop)) throw new TypeError(`generate: stop must be an array of token ids, got ${String(stop)}`);
    const bad = stop.findIndex((id) => !isTokenId(c, id));
    if (bad >= 0) throw new RangeError(`generate: stop[${bad}] is ${String(stop[bad])}, not a token id in [0, ${c.vocabSize})`);
  }
  if (padId !== undefined && !isTokenId(c, padId)) throw new RangeError(`generate: padId must be a token id in [0, ${c.vocabSize}), got ${String(padId)}`);
};

export interface GenerateOptions extends SampleOptions {
  /** Tokens to produce per sequence at most (fewer when a stop token comes or the context, cfg.seqLen, is full). */
  readonly maxTokens: number;
  /** Source of the sampling uniforms. Default key(0). */
  readonly key?: Key;
  /** Token ids that end a sequence (they are reported, then the row stops). Default [cfg.eosId]. */
  readonly stop?: readonly number[];
  /** Id fed where a prompt is left-padded or a row has stopped (masked out of attention). Default 0. */
  readonly padId?: number;
}

export interface GenerateStep {
  readonly step: number;
  /** One entry per prompt: the token produced at this step, or null once that row has stopped. */
  readonly tokens: readonly (number | null)[];
}

/** Realises tensors, then rebases them on fresh leaves so the graph (and earlier caches) can be collected. */
const settle = async (ts: readonly Tensor[]): Promise<Tensor[]> => {
  await realize(...ts);
  // A realised node still holds its inputs; on the CPU its storage can start a new graph without a copy. On
  // WebGPU only the prefill passes here: decode steps return jit results, which are leaves already.
  if ((await getBackend()).name !== 'cpu') return [...ts];
  return Promise.all(ts.map(async (t) => fromStorage(await data(t), t.shape, t.dtype)));
};

const settleCache = async (last: Tensor, cache: KvCache): Promise<[Tensor, KvCache]> => {
  const [l, ...kv] = await settle([last, ...cache.layers.flatMap((c) => [c.k, c.v])]);
  const layers = cache.layers.map((_, i) => ({ k: kv[2 * i]!, v: kv[2 * i + 1]! }));
  return [l!, { ...cache, layers }];
};

/** Steps the cache first has room for; it doubles when full (up to what maxTokens and the context allow). */
const FIRST_ROOM = 256;

/** The cache with `extra` more empty slots at the end of every layer (a new plan on WebGPU: shapes change). */
const growCache = async (cache: KvCache, extra: number): Promise<KvCache> => {
  const [B, Hkv, , D] = cache.layers[0]!.k.shape as [number, number, number, number];
  const empty = zeros([B, Hkv, extra, D], cache.layers[0]!.k.dtype as FloatDType); // (B, nKvHeads, extra, headDim)
  const grown = await settle(cache.layers.flatMap((l) => [concat([l.k, empty], 2), concat([l.v, empty], 2)])); // (B, nKvHeads, maxT + extra, headDim) each
  cache.layers.forEach((l) => { l.k.dispose(); l.v.dispose(); });
  empty.dispose();
  return { ...cache, layers: cache.layers.map((_, i) => ({ k: grown[2 * i]!, v: grown[2 * i + 1]! })) };
};

/** One decode step as a compiled plan: (params, cache layers, ids (B, 1), position, start) → (logits, layers). */
const makeDecodeStep = (c: LlamaConfig) =>
  jit((p: LlamaParams, layers: readonly KvLayer[], ids: Tensor, pos: Tensor, start: Tensor | null) => {
    const r = forward(c, p, ids, { cache: { layers, length: pos, ...(start ? { start } : {}) } }); // (B, 1, V)
    return [r.logits, r.cache.layers] as const;
  }, { donate: [1], intArgs: [3] });

/** Decode plans are kept per config object, so a later generate call with the same shapes neither traces nor compiles. */
const decodeSteps = new WeakMap<LlamaConfig, ReturnType<typeof makeDecodeStep>>();
const decodeStep = (c: LlamaConfig): ReturnType<typeof makeDecodeStep> => {
  let step = decodeSteps.get(c);
  if (!step) { step = makeDecodeStep(c); decodeSteps.set(c, step); }
  return step;
};

/**
 * Generates continuations of a batch of prompts (token ids, BOS included if wanted), yielding each step's tokens
 * as soon as they are known. Prompts of different lengths are left-padded; padding is masked out of attention and
 * RoPE positions start at 0 for every row, so a row's tokens do not depend on the other rows.
 * @example
 * for await (const { tokens } of generate(cfg, params, [tok.encode('Once upon a time')], { maxTokens: 32 }))
 *   process.stdout.write(tok.decode([tokens[0] ?? 0]));
 */
export function generate(c: LlamaConfig, params: LlamaParams, prompts: readonly (readonly number[])[], opts: GenerateOptions): AsyncGenerator<GenerateStep, void, undefined> {
  // Checked at the call, before the first step is asked for.
  checkGenerateOptions(c, opts);
  if (!Array.isArray(prompts)) throw new TypeError(`generate: prompts must be an array of token id arrays, got ${String(prompts)}`);
  if (prompts.length === 0) throw new RangeError('generate: no prompts (give at least one)');
  for (const [b, p] of prompts.entries()) {
    if (!Array.isArray(p)) throw new TypeError(`generate: prompt ${b} must be an array of token ids, got ${String(p)}`);
    if (p.length === 0) throw new RangeError(`generate: prompt ${b} is empty: every prompt needs at least one token`);
    const bad = p.findIndex((id) => !isTokenId(c, id));
    if (bad >= 0) throw new RangeError(`generate: prompt ${b} token ${bad} is ${p[bad]}, outside [0, ${c.vocabSize})`);
  }
  const L = Math.max(...prompts.map((p) => p.length));
  if (L > c.seqLen) throw new RangeError(`generate: prompt of ${L} tokens is longer than the context (${c.seqLen})`);
  return run(c, params, prompts, opts);
}

async function* run(c: LlamaConfig, params: LlamaParams, prompts: readonly (readonly number[])[], opts: GenerateOptions): AsyncGenerator<GenerateStep, void, undefined> {
  const B = prompts.length;
  const L = Math.max(...prompts.map((p) => p.length));
  const steps = Math.min(opts.maxTokens, c.seqLen - L + 1);
  if (steps <= 0) return;
  const { padId = 0, temperature = 0 } = opts;
  const stop = new Set(opts.stop ?? [c.eosId]);
  const pads = prompts.map((p) => L - p.length);
  const ids = tensor(prompts.map((p, b) => [...Array<number>(pads[b]!).fill(padId), ...p]), { dtype: 'i32' }); // (B, L)
  const start = pads.some((n) => n > 0) ? { start: tensor(pads, { dtype: 'i32' }) } : {}; // (B,)
  const dtype = params.tokEmb.dtype as FloatDType;
  // The cache and the sampling uniforms cover `room` steps and grow as the steps come: a huge maxTokens and context
  // allocate only what the generation reaches. Uniforms are counter-based, so a longer draw extends a shorter one.
  let room = Math.min(steps, FIRST_ROOM);
  const ownKey = temperature > 0 && !opts.key ? makeKey(0) : null; // freed with the loop's tensors
  const draw = async (n: number) => { // (n, B) uniforms, read to the host; their device copy is freed at once
    if (!(temperature > 0)) return null;
    const u = uniform(opts.key ?? ownKey!, [n, B], 'f32'); // (n, B)
    try { return await data(u); } finally { u.dispose(); }
  };
  let u = await draw(room);

  const first = forward(c, params, ids, { cache: emptyCache(c, B, L + room - 1, { dtype, ...start }) }); // (B, L, V)
  let [last, cache] = await settleCache(slice(first.logits, [0, L - 1, 0], [B, L, c.vocabSize]), first.cache); // (B, 1, V)
  // The loop owns the cache and logits it realises: each step frees the previous ones (device memory), and the
  // last ones are freed when the caller finishes or stops iterating.
  const owned = () => [last, ...cache.layers.flatMap((l) => [l.k, l.v]), ids, ...(start.start ? [start.start] : []), ...(ownKey ? [ownKey] : [])];
  const done = Array<boolean>(B).fill(false);
  // On WebGPU every decode step replays one compiled plan: the position is a run-time scalar and the donated
  // cache is written in place (writeAt), so a token costs one submit and no compile, copy or allocation.
  const compiled = (await getBackend()).name === 'webgpu' ? decodeStep(c) : null;
  try {
    for (let step = 0; step < steps; step++) {
      const rows = await data(last);
      const V = c.vocabSize;
      const tokens = done.map((d, b) => (d ? null : sampleRow(rows.subarray(b * V, (b + 1) * V), u ? u[step * B + b]! : 0, opts)));
      yield { step, tokens };
      tokens.forEach((t, b) => { if (t !== null && stop.has(t)) done[b] = true; });
      if (step === steps - 1 || done.every(Boolean)) return;
      if (step === room - 1) { // the cache's last slot (L + room − 2) is written; this token needs the next one
        const more = Math.min(steps, 2 * room) - room;
        cache = await growCache(cache, more);
        room += more;
        u = await draw(room);
      }
      const fed = tensor(tokens.map((t) => [t ?? padId]), { dtype: 'i32' }); // (B, 1)
      if (compiled) {
        // The cache layers are donated: the step writes them in place and returns them as its own.
        const previous = last;
        const [logits, layers] = await compiled(params, cache.layers, fed, L + step, cache.start ?? null); // (B, 1, V)
        [last, cache] = [logits, { ...cache, layers, length: L + step + 1 }];
        previous.dispose();
      } else {
        const next = forward(c, params, fed, { cache }); // (B, 1, V)
        const previous = [last, ...cache.layers.flatMap((l) => [l.k, l.v])];
        [last, cache] = await settleCache(next.logits, next.cache);
        previous.forEach((t) => t.dispose());
      }
      fed.dispose();
    }
  } finally {
    owned().forEach((t) => t.dispose());
  }
}

/**
 * Runs `generate` to the end: each row's generated ids, without the stop token.
 * @example const [ids] = await generateIds(cfg, params, [[1, 403, 407]], { maxTokens: 8 });
 */
export const generateIds = async (c: LlamaConfig, params: LlamaParams, prompts: readonly (readonly number[])[], opts: GenerateOptions): Promise<number[][]> => {
  const steps = generate(c, params, prompts, opts); // checks the prompts and options before they are used here
  const out = prompts.map((): number[] => []);
  const stop = new Set(opts.stop ?? [c.eosId]);
  for await (const { tokens } of steps) {
    tokens.forEach((t, b) => { if (t !== null && !stop.has(t)) out[b]!.push(t); });
  }
  return out;
};
