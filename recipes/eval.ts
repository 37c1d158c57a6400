// Evaluation in the benchmarks' own formats, as open-instruct runs them for Tulu 2 (OI-T2 `eval/mmlu/run_eval.py`,
// `eval/gsm/run_eval.py`, `eval/templates.py`): MMLU by the next-token logit of each answer letter after the chat
// prompt and "The answer is:", GSM8k by greedy chain-of-thought generation and the last number of the reply.
// Readers return Either with file:line errors; scoring is batched through the model. Files are read whole: the
// benchmark files are small (MMLU's largest subject is 1.5k rows; GSM8k's test set 1.3k).

import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { data } from '../core/backend.js';
import { tensor } from '../ops/create.js';
import { gather } from '../ops/gather.js';
import { linear } from '../ops/nn.js';
import { reshape } from '../ops/movement.js';
import type { LlamaConfig } from '../models/config.js';
import { forward, type LlamaParams } from '../models/llama.js';
import { generate } from '../models/generate.js';
import type { Tokenizer } from '../models/tokenizer/index.js';
import { chatPrompt } from './chat.js';

export interface EvalError { readonly _tag: 'EvalError'; readonly message: string }
const evalError = (message: string): EvalError => ({ _tag: 'EvalError', message });

// ---------------------------------------------------------------------------------------------------------------
// Readers

/** RFC 4180 CSV: quoted fields may hold commas, newlines and doubled quotes. Each record with its first line. */
export const parseCsv = (text: string, file: string): E.Either<EvalError, { line: number; fields: string[] }[]> => {
  const rows: { line: number; fields: string[] }[] = [];
  let fields: string[] = [], field = '', quoted = false, closed = false, line = 1, start = 1, i = 0, fieldStart = true;
  const endRecord = () => { fields.push(field); if (!(fields.length === 1 && fields[0] === '')) rows.push({ line: start, fields }); fields = []; field = ''; fieldStart = true; closed = false; };
  for (; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') { quoted = false; closed = true; } else { if (c === '\n') line++; field += c; }
    } else if (c === '"' && fieldStart) { quoted = true; fieldStart = false; }
    else if (c === ',') { fields.push(field); field = ''; fieldStart = true; closed = false; }
    else if (c === '\n' || c === '\r') { if (c === '\r' && text[i + 1] === '\n') i++; endRecord(); line++; start = line; }
    else if (closed) return E.left(evalError(`${file}:${line}: text after a quoted field's closing quote`));
    else if (c === '"') return E.left(evalError(`${file}:${line}: a quote inside an unquoted field`));
    else { field += c; fieldStart = false; }
  }
  if (quoted) return E.left(evalError(`${file}:${start}: a quoted field is not closed before the end of the file`));
  if (field !== '' || fields.length > 0) endRecord();
  return E.right(rows);
};

/** One MMLU question: the stem, its choices (A, B, C, D…) and the correct letter's index. */
export interface McItem { readonly question: string; readonly choices: readonly string[]; readonly answer: number; readonly line: number }
export interface McSet { readonly subject: string; readonly items: readonly McItem[] }

const LETTERS = 'ABCDEFGHIJ';

/**
 * Reads an MMLU CSV (`question, A, B, C, D, answer`, no header, as in the official `data/test/*_test.csv`); the
 * subject comes from the file name (`high_school_physics_test.csv` → "high school physics").
 * @example const set = orThrow(await readMmlu('astronomy_test.csv')());
 */
export const readMmlu = (path: string): TaskEither<EvalError, McSet> => async () => {
  let text: string;
  try { text = await readFile(path, 'utf8'); } catch (e) { return E.left(evalError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`)); }
  const rows = parseCsv(text, path);
  if (E.isLeft(rows)) return rows;
  if (rows.right.length === 0) return E.left(evalError(`${path}: no rows`));
  const items: McItem[] = [];
  for (const { line, fields } of rows.right) {
    const k = fields.length - 2;
    if (k < 2) return E.left(evalError(`${path}:${line}: expected question, at least two choices and the answer letter; got ${fields.length} fields`));
    const answer = LETTERS.slice(0, k).indexOf(fields[k + 1]!.trim());
    if (fields[k + 1]!.trim().length !== 1 || answer < 0) return E.left(evalError(`${path}:${line}: answer is '${fields[k + 1]}', expected one of ${[...LETTERS.slice(0, k)].join(', ')}`));
    items.push({ question: fields[0]!, choices: fields.slice(1, k + 1), answer, line });
  }
  const name = basename(path).replace(/\.csv$/, '').replace(/_(test|dev|val)$/, '');
  return E.right({ subject: name.split('_').join(' '), items });
};

/** One GSM8k problem: the question, the reference solution and its final number (after `####`, commas removed). */
export interface GsmItem { readonly question: string; readonly solution: string; readonly target: string; readonly line: number }
const GsmRow = t.type({ question: t.string, answer: t.string });

/**
 * Reads GSM8k JSONL (`{"question": …, "answer": "…\n#### 72"}` per line, as the official `test.jsonl`).
 * @example const items = orThrow(await readGsm8k('test.jsonl')());
 */
export const readGsm8k = (path: string): TaskEither<EvalError, GsmItem[]> => async () => {
  let text: string;
  try { text = await readFile(path, 'utf8'); } catch (e) { return E.left(evalError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`)); }
  const items: GsmItem[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    if (raw.trim() === '') continue;
    let json: unknown;
    try { json = JSON.parse(raw); } catch (e) { return E.left(evalError(`${path}:${i + 1}: not valid JSON (${(e as Error).message})`)); }
    const row = GsmRow.decode(json);
    if (E.isLeft(row)) {
      const at = `${path}:${i + 1}:`;
      if (typeof json !== 'object' || json === null || Array.isArray(json)) return E.left(evalError(`${at} expected an object {question, answer}, got ${JSON.stringify(json).slice(0, 40)}`));
      const o = json as Record<string, unknown>;
      const field = ['question', 'answer'].find((f) => typeof o[f] !== 'string')!; // one of them, or the codec would pass
      return E.left(evalError(o[field] === undefined ? `${at} field '${field}' is missing` : `${at} field '${field}' must be a string, got ${JSON.stringify(o[field]).slice(0, 40)}`));
    }
    const cut = row.right.answer.lastIndexOf('####');
    if (cut < 0) return E.left(evalError(`${path}:${i + 1}: answer has no '#### N' final line`));
    items.push({ question: row.right.question, solution: row.right.answer.slice(0, cut).trim(), target: row.right.answer.slice(cut + 4).trim().replaceAll(',', ''), line: i + 1 });
  }
  if (items.length === 0) return E.left(evalError(`${path}: no rows`));
  return E.right(items);
};

// ---------------------------------------------------------------------------------------------------------------
// Prompts (OI-T2 eval/mmlu/run_eval.py format_example / gen_prompt; eval/gsm/run_eval.py)

const mcExample = (it: McItem, withAnswer: boolean): string =>
  it.question + it.choices.map((c, j) => `\n${LETTERS[j]}. ${c}`).join('') + '\nAnswer:' + (withAnswer ? ` ${LETTERS[it.answer]}\n\n` : '');

/** The MMLU prompt text: the subject line, `shots` solved examples, then the question ending "Answer:". */
export const mmluPrompt = (subject: string, item: McItem, shots: readonly McItem[] = []): string =>
  `The following are multiple choice questions (with answers) about ${subject}.\n\n` + shots.map((s) => mcExample(s, true)).join('') + mcExample(item, false);

/** The GSM8k prompt text: the instruction, `shots` worked examples ("So the answer is N."), then the question. */
export const gsmPrompt = (item: GsmItem, shots: readonly GsmItem[] = []): string =>
  (shots.length ? 'Answer the following questions.\n\n' + shots.map((s) => `Question: ${s.question}\nAnswer: ${s.solution.replaceAll('\n', ' ')} So the answer is ${s.target}.`).join('\n\n') + '\n\n'
    : 'Answer the following question.\n\n') + `Question: ${item.question.trim()}`;

/** open-instruct's GSM8k answer: the last number of the output (commas removed), else the whole output. */
export const lastNumber = (output: string): string => {
  const nums = output.replaceAll(',', '').match(/[-+]?\d*\.\d+|\d+/g);
  return nums ? nums[nums.length - 1]! : output;
};

/** Exact match of GSM8k answers as numbers ("18.0" = "18"), else as strings (a blank is no number: "" ≠ "0"). */
export const sameNumber = (a: string, b: string): boolean => {
  const num = (s: string) => (s.trim() === '' ? Number.NaN : Number(s));
  return Number.isFinite(num(a)) && Number.isFinite(num(b)) ? num(a) === num(b) : a === b;
};

// ---------------------------------------------------------------------------------------------------------------
// Scoring

/** Accuracy with a 95% Wilson score interval (well-behaved at 0 and 1 and for small n). */
export interface Accuracy { readonly correct: number; readonly n: number; readonly accuracy: number; readonly low: number; readonly high: number }
export const accuracy = (correct: number, n: number): Accuracy => {
  const z = 1.959964, p = n ? correct / n : 0;
  const d = 1 + (z * z) / n, mid = (p + (z * z) / (2 * n)) / d, half = (z / d) * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n));
  if (n === 0) return { correct, n, accuracy: 0, low: 0, high: 1 };
  return { correct, n, accuracy: p, low: correct === 0 ? 0 : mid - half, high: correct === n ? 1 : mid + half }; // exact at the ends
};

/**
 * Next-token logits after each prompt, for the listed token ids only: one forward per batch of right-padded prompts,
 * the LM head applied only at each prompt's last position.
 * @example const [[lA, lB]] = await nextTokenLogits(cfg, params, [ids], [tokA, tokB]);
 */
export const nextTokenLogits = async (c: LlamaConfig, params: LlamaParams, prompts: readonly (readonly number[])[], ids: readonly number[], batchSize = 8, padId = 0): Promise<number[][]> => {
  const out: number[][] = [];
  for (let s = 0; s < prompts.length; s += batchSize) {
    const rows = prompts.slice(s, s + batchSize);
    const T = Math.max(...rows.map((p) => p.length));
    const tokens = tensor(rows.map((p) => [...p, ...Array<number>(T - p.length).fill(padId)]), { dtype: 'i32' }); // (B, T)
    const hidden = forward(c, params, tokens, { hidden: true }); // (B, T, dim)
    const last = gather(reshape(hidden, [rows.length * T, c.dim]), tensor(rows.map((p, b) => b * T + p.length - 1), { dtype: 'i32' })); // (B, dim)
    const logits = await data(linear(last, c.tieEmbeddings ? params.tokEmb : params.out!)); // (B, V)
    rows.forEach((_, b) => out.push(ids.map((id) => logits[b * c.vocabSize + id]!)));
  }
  return out;
};

export interface McResult { readonly line: number; readonly predicted: number; readonly answer: number; readonly correct: boolean; readonly scores: readonly number[] }

/**
 * MMLU as open-instruct scores it with the Tulu chat format: the prompt as the user turn, "The answer is:" after
 * `<|assistant|>\n`, and the prediction the letter whose token (the last of " A", …) has the highest next logit.
 * @example const { results, acc } = await evalMultipleChoice(cfg, params, tok, set, { shots: dev.items.slice(0, 5) });
 */
export const evalMultipleChoice = async (c: LlamaConfig, params: LlamaParams, tok: Tokenizer, set: McSet, opts: { shots?: readonly McItem[]; batchSize?: number } = {}): Promise<{ results: McResult[]; acc: Accuracy }> => {
  const k = Math.max(...set.items.map((it) => it.choices.length));
  const letterIds = [...LETTERS.slice(0, k)].map((l) => tok.encode(` ${l}`, { bos: false }).at(-1)!);
  const prompts = set.items.map((it) => chatPrompt(tok, [{ role: 'user', content: mmluPrompt(set.subject, it, opts.shots) }], { answerPrefix: 'The answer is:' }));
  const scores = await nextTokenLogits(c, params, prompts, letterIds, opts.batchSize);
  const results = set.items.map((it, i) => {
    const s = scores[i]!.slice(0, it.choices.length);
    const predicted = s.indexOf(Math.max(...s));
    return { line: it.line, predicted, answer: it.answer, correct: predicted === it.answer, scores: s };
  });
  return { results, acc: accuracy(results.filter((r) => r.correct).length, results.length) };
};

/**
 * Greedy continuations of token prompts, batched through the KV cache; each is cut at the first stop string and a
 * row stops being decoded once it has one (or its EOS).
 * @example const [text] = await greedyContinuations(cfg, params, tok, [tok.encode('Reverse the word bqk.')], { maxTokens: 8 });
 */
export const greedyContinuations = async (c: LlamaConfig, params: LlamaParams, tok: Tokenizer, prompts: readonly (readonly number[])[], opts: { maxTokens: number; stop?: readonly string[]; batchSize?: number }): Promise<string[]> => {
  const replies: string[] = [];
  const stops = opts.stop ?? [];
  const cut = (s: string) => stops.reduce((r, st) => { const i = r.indexOf(st); return i >= 0 ? r.slice(0, i) : r; }, s);
  const bs = opts.batchSize ?? 16;
  for (let s = 0; s < prompts.length; s += bs) {
    const batch = prompts.slice(s, s + bs);
    const ids = batch.map((): number[] => []);
    const done = batch.map(() => false);
    for await (const { tokens } of generate(c, params, batch, { maxTokens: opts.maxTokens, temperature: 0, stop: [tok.eosId] })) {
      tokens.forEach((t, b) => {
        if (t === null || done[b] || t === tok.eosId) { done[b] = true; return; }
        ids[b]!.push(t);
        if (stops.length && cut(tok.decode(ids[b]!)) !== tok.decode(ids[b]!)) done[b] = true;
      });
      if (done.every(Boolean)) break;
    }
    for (const row of ids) replies.push(cut(tok.decode(row)));
  }
  return replies;
};

/**
 * Greedy replies to chat prompts (the Tulu format, up to `<|assistant|>\n` and the answer prefix): greedyContinuations
 * of their tokens.
 * @example const [reply] = await greedyReplies(cfg, params, tok, [[{ role: 'user', content: 'What is 2 plus 3?' }]], { maxTokens: 8 });
 */
export const greedyReplies = (c: LlamaConfig, params: LlamaParams, tok: Tokenizer, chats: readonly (readonly { role: 'system' | 'user' | 'assistant'; content: string }[])[], opts: { maxTokens: number; stop?: readonly string[]; batchSize?: number; answerPrefix?: string }): Promise<string[]> =>
  greedyContinuations(c, params, tok, chats.map((m) => chatPrompt(tok, m, opts.answerPrefix ? { answerPrefix: opts.answerPrefix } : {})), opts);

export interface GenResult { readonly line: number; readonly output: string; readonly predicted: string; readonly target: string; readonly correct: boolean }

/**
 * GSM8k as open-instruct runs it with the chat format: greedy, "Answer:" after `<|assistant|>\n`, the last number of
 * the reply against the reference's `#### N`.
 * @example const { acc } = await evalGsm8k(cfg, params, tok, items, { shots: train.slice(0, 8), maxTokens: 512 });
 */
export const evalGsm8k = async (c: LlamaConfig, params: LlamaParams, tok: Tokenizer, items: readonly GsmItem[], opts: { shots?: readonly GsmItem[]; maxTokens?: number; batchSize?: number } = {}): Promise<{ results: GenResult[]; acc: Accuracy }> => {
  const outputs = await greedyReplies(c, params, tok, items.map((it) => [{ role: 'user' as const, content: gsmPrompt(it, opts.shots) }]), {
    maxTokens: opts.maxTokens ?? 512, stop: ['\n\nQuestion:'], answerPrefix: 'Answer:', ...(opts.batchSize ? { batchSize: opts.batchSize } : {}),
  });
  const results = items.map((it, i) => {
    const predicted = lastNumber(outputs[i]!);
    return { line: it.line, output: outputs[i]!, predicted, target: it.target, correct: sameNumber(predicted, it.target) };
  });
  return { results, acc: accuracy(results.filter((r) => r.correct).length, results.length) };
};
