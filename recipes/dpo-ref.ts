// Cached DPO reference log-probs: one no-gradient pass over the encoded pairs before training, stored in a file
// named by a hash of the model, the data and the template, reused across epochs and runs, recomputed when any of
// them changes (open-instruct HEAD `build_reference_logprobs_cache`, EasyLM `precalculate_reference_logps`; both
// after Tulu 2, which recomputed the reference every step). No training here.

import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import * as t from 'io-ts';
import { data } from '../core/backend.js';
import type { FloatDType } from '../core/dtype.js';
import { jit } from '../core/jit.js';
import type { Tensor } from '../core/tensor.js';
import { flatten } from '../core/tree.js';
import type { LlamaConfig } from '../models/config.js';
import type { LlamaParams } from '../models/llama.js';
import { tensor } from '../ops/create.js';
import type { Weight } from '../ops/nn.js';
import { pairLogprobs, type SeqLogprobsOpts } from './dpo.js';
import { makePrefBatches, prefBatchTensors, type EncodedPair } from './prefs.js';

/** Summed reference log-probs of every pair, by its position in the encoded list. */
export interface RefLogps { readonly chosen: Float64Array; readonly rejected: Float64Array }

/** What the cached numbers depend on; any change gives another key (and file). */
export interface RefCacheParts {
  /** `hashParams` of the reference model (or another identity of its exact weights). */
  readonly model: string;
  /** `hashPairs` of the encoded pairs. */
  readonly data: string;
  /** The chat template variant and truncation, e.g. 'tulu hf-legacy max 8192'. */
  readonly template: string;
}

const sha256 = (...chunks: (string | Uint8Array)[]): string => {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c);
  return h.digest('hex');
};

/** The cache key: 16 hex digits of the SHA-256 of the parts (open-instruct keeps 16 as well). */
export const refCacheKey = (p: RefCacheParts): string => sha256(JSON.stringify([p.model, p.data, p.template])).slice(0, 16);

/** SHA-256 of the encoded pairs' ids and labels, in order. */
export const hashPairs = (pairs: readonly EncodedPair[]): string => {
  const h = createHash('sha256');
  for (const p of pairs) for (const side of [p.chosen, p.rejected]) h.update(Int32Array.from([side.ids.length, ...side.ids, ...side.labels]));
  return h.digest('hex');
};

/** SHA-256 of a parameter tree: each leaf's dtype, shape and bytes (read back from the device), in tree order. */
export const hashParams = async (params: unknown): Promise<string> => {
  const h = createHash('sha256');
  for (const leaf of flatten(params).leaves) {
    const d = await data(leaf);
    h.update(`${leaf.dtype}(${leaf.shape.join(',')})`);
    h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  return h.digest('hex');
};

export interface RefPassOpts extends SeqLogprobsOpts {
  readonly batchSize: number;
  readonly padId: number;
  /** Round each batch's T up to a multiple (fewer compiled plans). Default 64. */
  readonly padToMultiple?: number;
}

/**
 * One no-gradient pass of the reference over the pairs, in order.
 * @example const ref = await computeRefLogps(cfg, base, encoded, { batchSize: 8, padId: 0 })
 */
export const computeRefLogps = async (cfg: LlamaConfig, params: LlamaParams<Weight>, pairs: readonly EncodedPair[], opts: RefPassOpts): Promise<RefLogps> => {
  const chosen = new Float64Array(pairs.length), rejected = new Float64Array(pairs.length);
  const pass = jit((p: LlamaParams<Weight>, tokens: Tensor, labels: Tensor) => {
    const r = pairLogprobs(cfg, p, tokens, labels, opts);
    return { c: r.chosen, r: r.rejected };
  });
  for (const b of makePrefBatches(pairs, { batchSize: opts.batchSize, padId: opts.padId, padToMultiple: opts.padToMultiple ?? 64 })) {
    const { tokens, labels } = prefBatchTensors(b);
    const out = await pass(params, tokens, labels);
    const [c, r] = [await data(out.c), await data(out.r)];
    b.index.forEach((pi, j) => { chosen[pi] = c[j]!; rejected[pi] = r[j]!; });
  }
  return { chosen, rejected };
};

const CacheFile = t.type({ key: t.string, parts: t.type({ model: t.string, data: t.string, template: t.string }), chosen: t.array(t.number), rejected: t.array(t.number) }, 'RefCacheFile');

/**
 * The reference log-probs from `dir/<key>.json` when a file for these parts exists (hit), else `compute()` stored
 * there first (miss). A file that does not parse, or whose recorded parts differ from its name's, is a Left.
 * @example const { logps, hit } = orThrow(await cachedRefLogps('runs/ref', parts, () => computeRefLogps(cfg, base, pairs, o))())
 */
export const cachedRefLogps = (dir: string, parts: RefCacheParts, compute: () => Promise<RefLogps>): TaskEither<Error, { logps: RefLogps; hit: boolean; file: string }> => async () => {
  const key = refCacheKey(parts);
  const file = join(dir, `${key}.json`);
  let text: string | null = null;
  try { text = await readFile(file, 'utf8'); } catch { text = null; }
  if (text !== null) {
    let json: unknown;
    try { json = JSON.parse(text); } catch (e) { return E.left(new Error(`${file}: not JSON (${e instanceof Error ? e.message : String(e)}); delete it to recompute`)); }
    const c = CacheFile.decode(json);
    if (E.isLeft(c)) return E.left(new Error(`${file}: not a reference log-prob cache (expected ${CacheFile.name}); delete it to recompute`));
    const v = c.right;
    if (v.key !== key || v.parts.model !== parts.model || v.parts.data !== parts.data || v.parts.template !== parts.template || v.chosen.length !== v.rejected.length) {
      return E.left(new Error(`${file}: records another model, data or template than its name says; delete it to recompute`));
    }
    return E.right({ logps: { chosen: Float64Array.from(v.chosen), rejected: Float64Array.from(v.rejected) }, hit: true, file });
  }
  const logps = await compute();
  await mkdir(dir, { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify({ key, parts, chosen: Array.from(logps.chosen), rejected: Array.from(logps.rejected) }));
  await rename(tmp, file); // a crash mid-write leaves no half file under the key's name
  return E.right({ logps, hit: false, file });
};

/**
 * The cached reference log-probs of a batch's pairs, as the (N,) tensors a DpoBatch carries.
 * @example const batch = { ...prefBatchTensors(b), ...refBatch(ref, b.index) }
 */
export const refBatch = (ref: RefLogps, index: Int32Array, dtype: FloatDType = 'f32'): { refChosen: Tensor; refRejected: Tensor } => {
  const pick = (xs: Float64Array) => Float64Array.from(index, (i) => {
    if (i < 0 || i >= xs.length) throw new RangeError(`refBatch: pair ${i} is not in the cache of ${xs.length} pairs`);
    return xs[i]!;
  });
  return { refChosen: tensor(pick(ref.chosen), { dtype }), refRejected: tensor(pick(ref.rejected), { dtype }) }; // (N,) each
};
