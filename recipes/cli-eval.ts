// `camelid eval`: a checkpoint on an MMLU CSV or a GSM8k JSONL file in the official formats; prints the accuracy with
// its 95% interval and writes one JSON line per item with --output.

import { writeFile } from 'node:fs/promises';
import { Command, InvalidArgumentError } from 'commander';
import * as E from 'fp-ts/lib/Either.js';
import { loadLlama } from '../models/load.js';
import { loadTokenizer } from '../models/tokenizer/index.js';
import { findTokenizer } from '../models/cli-generate.js';
import { nonNegativeInt, positiveInt, UsageError } from '../models/cli-options.js';
import { evalGsm8k, evalMultipleChoice, readGsm8k, readMmlu, type Accuracy } from './eval.js';

export interface EvalArgs {
  readonly model: string;
  readonly task: 'mmlu' | 'gsm8k';
  readonly data: string;
  readonly tokenizer?: string;
  /** Solved examples in the prompt, taken from `shotsData` (MMLU's dev CSV, GSM8k's train JSONL) or else from the
   * start of `data`, which are then not scored. */
  readonly shots: number;
  readonly shotsData?: string;
  readonly limit?: number;
  readonly maxTokens: number;
  readonly batchSize: number;
  readonly output?: string;
}

const orUsage = <A>(e: E.Either<{ message: string }, A>): A => { if (E.isLeft(e)) throw new UsageError(e.left.message); return e.right; };
const pct = (a: Accuracy) => `${(100 * a.accuracy).toFixed(1)}% [${(100 * a.low).toFixed(1)}, ${(100 * a.high).toFixed(1)}] (${a.correct}/${a.n})`;

/** Runs one evaluation; returns the summary line. */
export const runEval = async (a: EvalArgs): Promise<string> => {
  const tokPath = a.tokenizer ?? findTokenizer(a.model);
  if (!tokPath) throw new UsageError(`no tokenizer found beside ${a.model}: pass --tokenizer PATH`);
  const tok = orUsage(await loadTokenizer(tokPath)());
  const { config, params } = orUsage(await loadLlama(a.model)());
  if (tok.vocabSize !== config.vocabSize) throw new UsageError(`tokenizer ${tokPath} has ${tok.vocabSize} tokens but model ${a.model} has vocab_size ${config.vocabSize}`);
  const split = <T>(items: readonly T[], extra: readonly T[] | null) => {
    const shots = (extra ?? items).slice(0, a.shots);
    const scored = (extra ? items : items.slice(a.shots)).slice(0, a.limit ?? Infinity);
    if (shots.length < a.shots) throw new UsageError(`--shots ${a.shots}: only ${shots.length} examples to take them from`);
    if (scored.length === 0) throw new UsageError(`${a.data}: no items left to score`);
    return { shots, scored };
  };
  let acc: Accuracy, rows: readonly object[], label: string;
  if (a.task === 'mmlu') {
    const set = orUsage(await readMmlu(a.data)());
    const { shots, scored } = split(set.items, a.shotsData ? orUsage(await readMmlu(a.shotsData)()).items : null);
    const r = await evalMultipleChoice(config, params, tok, { subject: set.subject, items: scored }, { shots, batchSize: a.batchSize });
    [acc, rows, label] = [r.acc, r.results, `mmlu ${set.subject}, ${a.shots}-shot`];
  } else {
    const items = orUsage(await readGsm8k(a.data)());
    const { shots, scored } = split(items, a.shotsData ? orUsage(await readGsm8k(a.shotsData)()) : null);
    const r = await evalGsm8k(config, params, tok, scored, { shots, maxTokens: a.maxTokens, batchSize: a.batchSize });
    [acc, rows, label] = [r.acc, r.results, `gsm8k, ${a.shots}-shot`];
  }
  if (a.output) await writeFile(a.output, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return `${label}: exact match ${pct(acc)}`;
};

export const evalCommand = new Command('eval')
  .description('evaluate a checkpoint on MMLU (CSV) or GSM8k (JSONL) in their official formats, with the Tulu chat prompt')
  .option('--model <DIR|FILE.bin>', 'the checkpoint: a Hugging Face folder or a llama2.c .bin')
  .option('--task <TASK>', 'the benchmark format: mmlu or gsm8k', (v: string) => {
    if (v !== 'mmlu' && v !== 'gsm8k') throw new InvalidArgumentError(`--task must be mmlu or gsm8k, got '${v}'`);
    return v;
  })
  .option('--data <FILE>', 'the items: an MMLU *_test.csv or a GSM8k test.jsonl')
  .option('--tokenizer <PATH>', 'tokenizer (default: found beside the model)')
  .option('--shots <K>', 'solved examples in each prompt', nonNegativeInt('--shots'), 0)
  .option('--shots-data <FILE>', 'where the shots come from (MMLU dev CSV, GSM8k train JSONL); default: the first K items of --data, not scored')
  .option('--limit <N>', 'score only the first N items (open-instruct scores 200 of GSM8k)', positiveInt('--limit'))
  .option('--max-tokens <N>', 'GSM8k: tokens generated per answer at most', positiveInt('--max-tokens'), 512)
  .option('--batch-size <N>', 'prompts per forward', positiveInt('--batch-size'), 8)
  .option('--output <FILE>', 'write one JSON line per item (prediction, target, correct)')
  .action(async (o: { model?: string; task?: 'mmlu' | 'gsm8k'; data?: string; tokenizer?: string; shots: number; shotsData?: string; limit?: number; maxTokens: number; batchSize: number; output?: string }) => {
    if (!o.model) throw new UsageError('--model DIR is required');
    if (!o.task) throw new UsageError('--task mmlu|gsm8k is required');
    if (!o.data) throw new UsageError('--data FILE is required');
    const line = await runEval({
      model: o.model, task: o.task, data: o.data, shots: o.shots, maxTokens: o.maxTokens, batchSize: o.batchSize,
      ...(o.tokenizer ? { tokenizer: o.tokenizer } : {}), ...(o.shotsData ? { shotsData: o.shotsData } : {}),
      ...(o.limit ? { limit: o.limit } : {}), ...(o.output ? { output: o.output } : {}),
    });
    process.stdout.write(`${line}\n`);
  });
