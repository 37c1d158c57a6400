// SFT data on the host: Tulu v2 mix JSONL rows (io-ts, streamed line by line), encoding with encodeChat, mixing
// files by weight, a seeded shuffle, the train/eval split, and padded batches. No model code; tensors only at the
// last step (batchTensors).
//
// Loss reduction (implemented by the loss, sftLoss's `reduction`; RECIPES-FACTS §3.4): open-instruct's default
// `--reduce_loss mean` is HF's mean over the trained tokens of each micro-batch, with 1 example per device, so every
// example weighs the same; EasyLM (what Tulu 2 was trained with) and `--reduce_loss sum` weigh every trained token
// the same. `Batch.tokens` (trained targets) is what a token mean across micro-batches divides by.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import * as t from 'io-ts';
import type { Tensor } from '../core/tensor.js';
import type { Tokenizer } from '../models/tokenizer/index.js';
import { tensor } from '../ops/create.js';
import { encodeChat, IGNORE, type EncodeChatOpts, type Message } from './chat.js';
import { mulberry32, permutation } from './random.js';

export interface Example { readonly ids: readonly number[]; readonly labels: readonly number[] }
/** B rows padded on the right to T: ids with the pad id, labels with -100. `tokens`: trained targets (labels ≠ -100
 * at positions ≥ 1, since position t predicts labels[t+1]); `rows`: the examples' indices, for error messages. */
export interface Batch {
  readonly B: number; readonly T: number; readonly ids: Int32Array; readonly labels: Int32Array;
  readonly tokens: number; readonly rows: readonly number[];
}

export interface DataError {
  readonly _tag: 'DataError';
  readonly kind: 'io' | 'json' | 'row' | 'empty' | 'option';
  readonly file: string;
  readonly line?: number;
  readonly field?: string;
  /** Whole sentence, starting with file:line: `mix.jsonl:12: field messages[2].role: expected …, got "tool"`. */
  readonly message: string;
}
const dataError = (kind: DataError['kind'], file: string, what: string, line?: number, field?: string): DataError =>
  ({ _tag: 'DataError', kind, file, line, field, message: `${file}${line === undefined ? '' : `:${line}`}: ${what}` });

/** One Tulu v2 mix message; keys other than role and content are ignored. */
export const ChatMessage = t.type({ role: t.keyof({ system: null, user: null, assistant: null }, "'system' | 'user' | 'assistant'"), content: t.string }, 'message');
/** One Tulu v2 mix row: `{"messages": [{"role", "content"}, …], …}` (`dataset`, `id` and other keys ignored). */
export const ChatRow = t.type({ messages: t.array(ChatMessage, 'array of messages') }, 'object with "messages"');
export type ChatRow = t.TypeOf<typeof ChatRow>;

const show = (u: unknown): string => {
  if (u === undefined) return 'nothing (missing)';
  const s = JSON.stringify(u);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

/** The first decoding error as field + expectation: `messages[2].role`, expected one of the roles, got "tool". */
const rowIssue = (errors: t.Errors): { field: string; what: string } => {
  const err = errors[0]!;
  const keys = err.context.slice(1).map((c) => c.key);
  const field = keys.map((k, i) => (/^\d+$/.test(k) ? `[${k}]` : i === 0 ? k : `.${k}`)).join('');
  const expected = err.context[err.context.length - 1]!.type.name;
  return { field, what: `${field ? `field ${field}: ` : ''}expected ${expected}, got ${show(err.value)}` };
};

/** A line's row, or why it is bad. */
export const parseChatRow = (text: string, file: string, line: number): E.Either<DataError, ChatRow> => {
  let json: unknown;
  try { json = JSON.parse(text); }
  catch (e) { return E.left(dataError('json', file, `not valid JSON (${(e as Error).message})`, line)); }
  const row = ChatRow.decode(json);
  if (E.isLeft(row)) { const { field, what } = rowIssue(row.left); return E.left(dataError('row', file, what, line, field)); }
  if (row.right.messages.length === 0) return E.left(dataError('row', file, 'field messages: expected at least one message, got []', line, 'messages'));
  return row;
};

/**
 * The rows of a JSONL file, streamed line by line (the file is never held whole). Blank lines are not rows. Each
 * item is a row or the error of its line; an unreadable file ends the stream with its io error.
 * @example
 * for await (const r of readChatRows('mix.jsonl')) if (E.isRight(r.row)) console.log(r.line, r.row.right.messages.length);
 */
export async function* readChatRows(file: string): AsyncGenerator<{ line: number; row: E.Either<DataError, ChatRow> }> {
  let line = 0;
  try {
    const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
    for await (const raw of lines) {
      line++;
      const text = line === 1 && raw.startsWith('\ufeff') ? raw.slice(1) : raw; // a UTF-8 byte order mark
      if (text.trim() === '') continue;
      yield { line, row: parseChatRow(text, file, line) };
    }
  } catch (e) {
    const code = (e as { code?: string }).code;
    const what = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, not a JSONL file' : `cannot read (${String(e)})`;
    yield { line, row: E.left(dataError('io', file, what)) };
  }
}

// ---- seeded randomness (host side: recipes/random.ts) -------------------------------------------------------
/** A uniform [0, 1) stream from a seed and a stream number (file index, epoch): reproducible across runs. */
const uniform = (seed: number, stream: number): (() => number) => mulberry32(seed ^ Math.imul(stream + 1, 0x9e3779b9));
/** A seeded permutation of 0…n−1 (Fisher–Yates), one per (seed, stream). */
export const seededPermutation = (n: number, seed: number, stream = 0): number[] => permutation(n, uniform(seed, stream));

// ---- loading and mixing -------------------------------------------------------------------------------------
/** A training file and its weight in the mix (default 1). Weight w takes w × (its usable examples): ⌊w⌋ full
 * copies plus a seeded round(frac(w)·n)-example subset, so 0.25 = a quarter of the file, 2 = every example twice.
 * The Tulu v2 mix was built this way with absolute counts (FLAN v2 50,000 of its rows …): weight = count / rows. */
export interface DataSource { readonly path: string; readonly weight?: number }
export interface LoadChatOpts extends EncodeChatOpts {
  /** A bad row stops loading with its error (default), or is skipped, counted and reported. */
  readonly onBadRow?: 'error' | 'skip';
  readonly seed?: number;
  /** Fraction of each train file's examples held out for eval (before weighting, so copies never leak). */
  readonly evalFraction?: number;
  /** Eval files (every usable row once); not together with evalFraction. */
  readonly evalFiles?: readonly string[];
}
export interface FileStats {
  readonly file: string;
  readonly rows: number; // rows read (blank lines aside)
  readonly skipped: number; // bad rows skipped (onBadRow 'skip')
  readonly dropped: number; // no trained token after truncation (open-instruct drops these too)
  readonly atMaxLen: number; // examples of exactly maxSeqLen ids: truncated (or exactly that long)
  readonly train: number; // examples in the train set, after weighting
  readonly eval: number;
  readonly skips: readonly string[]; // the first 10 skipped rows' errors
}
export interface ChatData { readonly train: Example[]; readonly eval: Example[]; readonly files: readonly FileStats[] }

interface Loaded { examples: Example[]; stats: Omit<FileStats, 'train' | 'eval'> }

const loadFile = async (tok: Tokenizer, file: string, opts: LoadChatOpts): Promise<E.Either<DataError, Loaded>> => {
  const examples: Example[] = [];
  let rows = 0, skipped = 0, dropped = 0, atMaxLen = 0;
  const skips: string[] = [];
  for await (const { line, row } of readChatRows(file)) {
    if (E.isLeft(row)) {
      if (row.left.kind === 'io' || opts.onBadRow !== 'skip') return row;
      rows++; skipped++;
      if (skips.length < 10) skips.push(row.left.message);
      continue;
    }
    rows++;
    let ex: Example;
    try { ex = encodeChat(tok, row.right.messages as readonly Message[], opts); }
    catch (e) { return E.left(dataError('row', file, (e as Error).message, line)); }
    if (ex.ids.length === opts.maxSeqLen) atMaxLen++;
    if (ex.labels.every((l) => l === IGNORE)) { dropped++; continue; }
    examples.push(ex);
  }
  if (rows === 0) return E.left(dataError('empty', file, 'empty file: no JSONL rows'));
  return E.right({ examples, stats: { file, rows, skipped, dropped, atMaxLen, skips } });
};

/** Takes a file's share: ⌊w⌋ copies of all, plus a seeded round(frac(w)·n) subset (in file order). */
const weighted = (xs: readonly Example[], w: number, seed: number, stream: number): Example[] => {
  const out: Example[] = [];
  for (let k = 0; k < Math.floor(w); k++) out.push(...xs);
  const extra = Math.round((w - Math.floor(w)) * xs.length);
  if (extra > 0) for (const i of seededPermutation(xs.length, seed, stream).slice(0, extra).sort((a, b) => a - b)) out.push(xs[i]!);
  return out;
};

/**
 * Reads, checks and encodes the train files (and eval files), mixes them by weight, holds out eval, and shuffles
 * train with the seed. A file or row error is a Left naming file, line and field; skipped and dropped rows are
 * counted per file (`describeData` prints them). No file is held whole in memory; the encoded examples are.
 * @example
 * const data = orThrow(await loadChatData(tok, [{ path: 'tulu.jsonl' }, { path: 'lima.jsonl', weight: 2 }], { maxSeqLen: 2048, evalFraction: 0.01 })());
 */
export const loadChatData = (tok: Tokenizer, sources: readonly DataSource[], opts: LoadChatOpts = {}): TaskEither<DataError, ChatData> => async () => {
  const seed = opts.seed ?? 42; // open-instruct's and EasyLM's default seed
  const frac = opts.evalFraction ?? 0;
  if (sources.length === 0) return E.left(dataError('option', '(data)', 'no training files given'));
  if (!(frac >= 0 && frac < 1)) return E.left(dataError('option', '(data)', `evalFraction must be in [0, 1), got ${frac}`));
  if (frac > 0 && opts.evalFiles?.length) return E.left(dataError('option', '(data)', 'give evalFraction or evalFiles, not both'));
  for (const s of sources)
    if (!(Number.isFinite(s.weight ?? 1) && (s.weight ?? 1) >= 0)) return E.left(dataError('option', s.path, `weight must be a finite number ≥ 0, got ${s.weight}`));
  const train: Example[] = [], evalSet: Example[] = [], files: FileStats[] = [];
  for (const [i, s] of sources.entries()) {
    const got = await loadFile(tok, s.path, opts);
    if (E.isLeft(got)) return got;
    const { examples, stats } = got.right;
    const nEval = Math.round(frac * examples.length);
    const order = nEval > 0 ? seededPermutation(examples.length, seed, 2 * i + 1) : null;
    const held = order ? new Set(order.slice(0, nEval)) : new Set<number>();
    const mine = weighted(examples.filter((_, k) => !held.has(k)), s.weight ?? 1, seed, 2 * i + 2);
    train.push(...mine);
    for (const k of [...held].sort((a, b) => a - b)) evalSet.push(examples[k]!);
    files.push({ ...stats, train: mine.length, eval: nEval });
  }
  for (const f of opts.evalFiles ?? []) {
    const got = await loadFile(tok, f, opts);
    if (E.isLeft(got)) return got;
    evalSet.push(...got.right.examples);
    files.push({ ...got.right.stats, train: 0, eval: got.right.examples.length });
  }
  if (train.length === 0) return E.left(dataError('empty', sources.map((s) => s.path).join(', '), 'no training example left (every row skipped, dropped or weighted 0)'));
  return E.right({ train: seededPermutation(train.length, seed, 0).map((k) => train[k]!), eval: evalSet, files });
};

/** One line per file for the run's log: rows, skips, drops, and what went to train and eval. */
export const describeData = (d: ChatData): string =>
  d.files.map((f) => `${f.file}: ${f.rows} rows, ${f.skipped} bad rows skipped, ${f.dropped} dropped (no trained token after truncation), `
    + `${f.atMaxLen} at maxSeqLen; ${f.train} train, ${f.eval} eval` + f.skips.map((s) => `\n  skipped ${s}`).join('')).join('\n');

// ---- batching -----------------------------------------------------------------------------------------------
export interface BatchOpts {
  readonly batchSize: number;
  /** Llama's tokenizer has no pad token; open-instruct adds one and resizes the embedding (32001), EasyLM pads
   * with 0. Padded positions carry label -100 and come after every real token (causal attention), so any id in the
   * vocabulary works and no resize is needed: `defaultPadId` gives EOS. */
  readonly padId: number;
  readonly seed?: number;
  /** Reshuffles per epoch: the order depends on (seed, epoch) only, so a resumed run rebuilds the same batches. */
  readonly epoch?: number;
  readonly shuffle?: boolean; // default true
  /** Sort each pool of 64 batches' worth of examples by length before cutting batches (less padding), then shuffle
   * the batches. */
  readonly bucketByLength?: boolean;
  /** T rounded up to a multiple of this (default 1 = the batch's longest row): fewer distinct T, fewer jit plans. */
  readonly padToMultiple?: number;
  /** Drop a last batch smaller than batchSize (EasyLM drops it; open-instruct keeps it, as here by default). */
  readonly dropLast?: boolean;
}

/** EOS, or 0 when the tokenizer has none: a pad id that needs no new vocabulary row. */
export const defaultPadId = (tok: Tokenizer): number => (tok.eosId >= 0 ? tok.eosId : 0);

const POOL = 64;

/**
 * Host-side batches: shuffled (seeded by seed and epoch), optionally bucketed by length, right-padded to the
 * longest row (rounded up to padToMultiple). Throws RangeError on bad options or an example whose ids and labels
 * differ in length.
 * @example
 * const batches = makeBatches(data.train, { batchSize: 8, padId: defaultPadId(tok), seed: 42, epoch: 0, padToMultiple: 64 });
 * const { tokens, labels } = batchTensors(batches[0]!); // (8, T) i32 each
 */
export const makeBatches = (examples: readonly Example[], opts: BatchOpts): Batch[] => {
  const { batchSize, padId, seed = 42, epoch = 0, shuffle = true, bucketByLength = false, padToMultiple = 1, dropLast = false } = opts;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`makeBatches: batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isSafeInteger(padToMultiple) || padToMultiple < 1) throw new RangeError(`makeBatches: padToMultiple must be a positive integer, got ${padToMultiple}`);
  if (!Number.isSafeInteger(padId) || padId < 0 || padId > 0x7fffffff) throw new RangeError(`makeBatches: padId must be a token id (integer ≥ 0), got ${padId}`);
  examples.forEach((e, i) => {
    if (e.ids.length !== e.labels.length) throw new RangeError(`makeBatches: example ${i} has ${e.ids.length} ids but ${e.labels.length} labels`);
  });
  const order = shuffle ? seededPermutation(examples.length, seed, 2 * epoch) : examples.map((_, i) => i);
  let groups: number[][] = [];
  const pool = bucketByLength ? POOL * batchSize : examples.length;
  for (let p = 0; p < order.length; p += pool) {
    const chunk = order.slice(p, p + pool);
    if (bucketByLength) chunk.sort((a, b) => examples[a]!.ids.length - examples[b]!.ids.length || a - b);
    for (let q = 0; q < chunk.length; q += batchSize) groups.push(chunk.slice(q, q + batchSize));
  }
  if (dropLast) groups = groups.filter((g) => g.length === batchSize);
  if (bucketByLength && shuffle) { const perm = seededPermutation(groups.length, seed, 2 * epoch + 1); groups = perm.map((k) => groups[k]!); }
  return groups.map((rows) => {
    const longest = Math.max(1, ...rows.map((r) => examples[r]!.ids.length));
    const T = Math.ceil(longest / padToMultiple) * padToMultiple, B = rows.length;
    const ids = new Int32Array(B * T).fill(padId), labels = new Int32Array(B * T).fill(IGNORE);
    let tokens = 0;
    rows.forEach((r, b) => {
      const e = examples[r]!;
      ids.set(e.ids, b * T);
      labels.set(e.labels, b * T);
      for (let i = 1; i < e.labels.length; i++) if (e.labels[i] !== IGNORE) tokens++;
    });
    return { B, T, ids, labels, tokens, rows };
  });
};

/**
 * The batch as tensors for the step.
 * @example const { tokens, labels } = batchTensors(batch); // (B, T) i32 each
 */
export const batchTensors = (b: Batch): { tokens: Tensor; labels: Tensor } => ({
  tokens: tensor(b.ids, { shape: [b.B, b.T], dtype: 'i32' }), // (B, T)
  labels: tensor(b.labels, { shape: [b.B, b.T], dtype: 'i32' }), // (B, T)
});
