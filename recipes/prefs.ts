// Preference data for DPO: JSONL rows in the UltraFeedback-binarized layout ({chosen, rejected} message lists) or
// the older {prompt, chosen, rejected} strings, io-ts checked (bad rows named by file and line), both sides rendered
// with the Tulu template training the final assistant turn only, and host-side batching of pairs to one length.
// No tensors beyond `prefBatchTensors`, no model.

import { readFile } from 'node:fs/promises';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import * as t from 'io-ts';
import type { Tensor } from '../core/tensor.js';
import { reportIoTsErrors } from '../models/config.js';
import type { Tokenizer } from '../models/tokenizer/index.js';
import { tensor } from '../ops/create.js';
import { encodeChat, IGNORE, type ChatVariant, type Message } from './chat.js';
import { mulberry32, permutation } from './random.js';

const MessageCodec = t.type({ role: t.keyof({ system: null, user: null, assistant: null }), content: t.string }, 'Message');
/** `HuggingFaceH4/ultrafeedback_binarized` train_prefs: chosen and rejected conversations (prompt, prompt_id and
 * score fields are ignored: the conversations carry the prompt). */
export const MessagesPrefRow = t.type({ chosen: t.array(MessageCodec), rejected: t.array(MessageCodec) }, 'MessagesPrefRow');
/** The older layout (EasyLM's Tulu 2 DPO data): one user prompt and two completions. */
export const StringPrefRow = t.type({ prompt: t.string, chosen: t.string, rejected: t.string }, 'StringPrefRow');

/** One preference pair as conversations, each ending in the assistant turn that is compared. */
export interface PrefPair { readonly chosen: readonly Message[]; readonly rejected: readonly Message[] }

/** A row that is not a preference pair: the file, the 1-based line and what is wrong. */
export class PrefError extends Error {
  override name = 'PrefError';
  constructor(readonly file: string, readonly line: number, readonly reason: string) { super(`${file}:${line}: ${reason}`); }
}

/** Messages with only role and content (io-ts keeps a row's extra keys). */
const plain = (ms: readonly Message[]): Message[] => ms.map((m) => ({ role: m.role, content: m.content }));

const lastAssistant = (side: string, ms: readonly Message[]): string | null => {
  const last = ms[ms.length - 1];
  if (!last || last.role !== 'assistant') return `${side}: the conversation must end with an assistant turn`;
  if (last.content.trim() === '') return `${side}: empty completion (the final assistant turn has no text)`;
  return null;
};

/**
 * One JSON value as a preference pair, or why it is not one. The string layout becomes [user prompt, assistant
 * completion] on each side.
 * @example toPair({ prompt: 'Hi', chosen: 'Hello!', rejected: 'Go away.' }) // Right({ chosen: [user, assistant], … })
 */
export const toPair = (u: unknown): E.Either<string, PrefPair> => {
  if (typeof u !== 'object' || u === null || Array.isArray(u)) return E.left('expected an object with chosen and rejected');
  const o = u as Record<string, unknown>;
  for (const side of ['chosen', 'rejected']) if (!(side in o)) return E.left(`missing field '${side}'`);
  const stringForm = typeof o.chosen === 'string' || typeof o.rejected === 'string';
  const codec = stringForm ? StringPrefRow : MessagesPrefRow;
  const decoded = codec.decode(u);
  if (E.isLeft(decoded)) {
    const issues = reportIoTsErrors(decoded.left).map((i) => `${i.field}: expected ${i.expected}, got ${i.got}`);
    return E.left(`not a ${codec.name}: ${issues.join('; ')}`);
  }
  const v = decoded.right;
  const pair: PrefPair = 'prompt' in v && typeof v.chosen === 'string'
    ? {
      chosen: [{ role: 'user', content: v.prompt }, { role: 'assistant', content: v.chosen }],
      rejected: [{ role: 'user', content: v.prompt }, { role: 'assistant', content: v.rejected as string }],
    }
    : { chosen: plain((v as PrefPair).chosen), rejected: plain((v as PrefPair).rejected) };
  const bad = lastAssistant('chosen', pair.chosen) ?? lastAssistant('rejected', pair.rejected);
  return bad ? E.left(bad) : E.right(pair);
};

export interface ParsedPrefs {
  readonly pairs: PrefPair[];
  /** Bad rows skipped (only with onBadRow 'skip'), each named. */
  readonly skipped: PrefError[];
}

/**
 * JSONL text → preference pairs; blank lines are ignored. A bad row is a Left naming file and line, or, with
 * `onBadRow: 'skip'`, counted in `skipped` (never silently dropped).
 * @example parsePrefs('{"prompt":"Hi","chosen":"Hello","rejected":"No"}\n', 'prefs.jsonl') // Right({ pairs: [1], skipped: [] })
 */
export const parsePrefs = (text: string, file: string, opts: { onBadRow?: 'error' | 'skip' } = {}): E.Either<PrefError, ParsedPrefs> => {
  const pairs: PrefPair[] = [], skipped: PrefError[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    let row: E.Either<string, PrefPair>;
    try { row = toPair(JSON.parse(line)); } catch (e) { row = E.left(`invalid JSON (${e instanceof Error ? e.message : String(e)})`); }
    if (E.isRight(row)) { pairs.push(row.right); continue; }
    const err = new PrefError(file, i + 1, row.left);
    if (opts.onBadRow !== 'skip') return E.left(err);
    skipped.push(err);
  }
  return E.right({ pairs, skipped });
};

/** `parsePrefs` of a file; a missing or unreadable file is a Left naming it. */
export const readPrefs = (file: string, opts: { onBadRow?: 'error' | 'skip' } = {}): TaskEither<PrefError, ParsedPrefs> => async () => {
  let text: string;
  try { text = await readFile(file, 'utf8'); } catch (e) { return E.left(new PrefError(file, 0, `cannot read (${e instanceof Error ? e.message : String(e)})`)); }
  return parsePrefs(text, file, opts);
};

/** Ids and labels of both sides (labels aligned with ids; −100 where not trained). */
export interface EncodedPair {
  readonly chosen: { readonly ids: number[]; readonly labels: number[] };
  readonly rejected: { readonly ids: number[]; readonly labels: number[] };
}

export interface EncodePairsOpts { readonly maxSeqLen?: number; readonly variant?: ChatVariant }

const trained = (labels: readonly number[]): boolean => labels.some((l, i) => i > 0 && l !== IGNORE);

/**
 * Both sides in the Tulu template, only the final assistant turn trained (open-instruct's DPO masking); a pair
 * where either side keeps no trained token after truncation is dropped and counted (open-instruct filters both).
 * @example const { pairs, dropped } = encodePairs(tok, parsed.pairs, { maxSeqLen: 8192 })
 */
export const encodePairs = (tok: Tokenizer, pairs: readonly PrefPair[], opts: EncodePairsOpts = {}): { pairs: EncodedPair[]; dropped: number } => {
  const o = { ...opts, train: 'last' as const };
  const out: EncodedPair[] = [];
  let dropped = 0;
  for (const p of pairs) {
    const chosen = encodeChat(tok, p.chosen, o), rejected = encodeChat(tok, p.rejected, o);
    if (trained(chosen.labels) && trained(rejected.labels)) out.push({ chosen, rejected });
    else dropped++;
  }
  return { pairs: out, dropped };
};

/** N pairs as 2N rows of one length T: the chosen sides first, then the rejected ones in the same order. */
export interface PrefBatch {
  readonly N: number;
  readonly T: number;
  /** (2N·T) row-major: rows 0…N−1 chosen, N…2N−1 rejected; padded with padId. */
  readonly ids: Int32Array;
  /** (2N·T) labels, padded with −100. */
  readonly labels: Int32Array;
  /** (N) the pairs' positions in the encoded list (for a reference log-prob cache). */
  readonly index: Int32Array;
}

export interface PrefBatchOpts {
  readonly batchSize: number;
  readonly padId: number;
  /** Shuffle the pairs with this seed (and epoch); default: in order. */
  readonly seed?: number;
  readonly epoch?: number;
  /** Round T up to a multiple (each distinct T is a new compiled plan). Default 1. */
  readonly padToMultiple?: number;
  /** Keep a last batch of fewer than batchSize pairs. Default true. */
  readonly keepLast?: boolean;
}

/** The order of n items for (seed, epoch): a Fisher–Yates shuffle (recipes/random.ts). */
export const shuffledOrder = (n: number, seed: number, epoch = 0): number[] => permutation(n, mulberry32((seed * 1000003 + epoch * 7919) | 0));

/**
 * Pairs → batches of both sides padded to the batch's longest row (rounded up to padToMultiple).
 * @example const batches = makePrefBatches(encoded, { batchSize: 4, padId: 0, seed: 42, epoch })
 */
export const makePrefBatches = (pairs: readonly EncodedPair[], opts: PrefBatchOpts): PrefBatch[] => {
  const { batchSize, padId, padToMultiple = 1, keepLast = true } = opts;
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new RangeError(`makePrefBatches: batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isInteger(padToMultiple) || padToMultiple <= 0) throw new RangeError(`makePrefBatches: padToMultiple must be a positive integer, got ${padToMultiple}`);
  const order = opts.seed === undefined ? pairs.map((_, i) => i) : shuffledOrder(pairs.length, opts.seed, opts.epoch ?? 0);
  const out: PrefBatch[] = [];
  for (let at = 0; at < order.length; at += batchSize) {
    const idx = order.slice(at, at + batchSize);
    if (idx.length < batchSize && !keepLast) break;
    const N = idx.length;
    const rows = [...idx.map((i) => pairs[i]!.chosen), ...idx.map((i) => pairs[i]!.rejected)];
    const longest = Math.max(2, ...rows.map((r) => r.ids.length));
    const T = Math.ceil(longest / padToMultiple) * padToMultiple;
    const ids = new Int32Array(2 * N * T).fill(padId), labels = new Int32Array(2 * N * T).fill(IGNORE);
    rows.forEach((r, b) => { ids.set(r.ids, b * T); labels.set(r.labels, b * T); });
    out.push({ N, T, ids, labels, index: Int32Array.from(idx) });
  }
  return out;
};

/** A batch as tensors: tokens and labels (2N, T) i32 each. */
export const prefBatchTensors = (b: PrefBatch): { tokens: Tensor; labels: Tensor } => ({
  tokens: tensor(b.ids, { shape: [2 * b.N, b.T], dtype: 'i32' }), // (2N, T)
  labels: tensor(b.labels, { shape: [2 * b.N, b.T], dtype: 'i32' }), // (2N, T)
});
