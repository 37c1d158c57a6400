// `camelid generate`: load a checkpoint and its tokenizer, stream a continuation of a prompt to stdout.
// Argument and file problems are one-line errors (the caller maps them to a non-zero exit code).

import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { key } from '../ops/random.js';
import { generate } from './generate.js';
import { loadLlama } from './load.js';
import { loadTokenizer } from './tokenizer/index.js';

export class UsageError extends Error { override name = 'UsageError'; }

export interface GenerateArgs {
  readonly model: string;
  readonly prompt: string;
  readonly tokenizer?: string;
  readonly maxTokens: number;
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number;
}

const FLAGS = { '--model': 'model', '--prompt': 'prompt', '--tokenizer': 'tokenizer', '--max-tokens': 'maxTokens', '--temperature': 'temperature', '--top-p': 'topP', '--seed': 'seed' } as const;

/** Parse `--flag value` pairs strictly: unknown flags, missing values and bad numbers are errors. */
export const parseGenerateArgs = (argv: readonly string[]): GenerateArgs => {
  const got: Record<string, string> = {};
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i]!;
    const name = (FLAGS as Record<string, string>)[flag];
    if (!name) throw new UsageError(`unknown option '${flag}' (expected ${Object.keys(FLAGS).join(', ')})`);
    const v = argv[i + 1];
    if (v === undefined) throw new UsageError(`${flag} needs a value`);
    got[name] = v;
  }
  if (!got.model) throw new UsageError('--model DIR (or a llama2.c .bin) is required');
  if (got.prompt === undefined) throw new UsageError('--prompt TEXT is required');
  const num = (name: string, dflt: number, ok: (x: number) => boolean, what: string): number => {
    if (got[name] === undefined) return dflt;
    const x = Number(got[name]);
    if (!Number.isFinite(x) || !ok(x)) throw new UsageError(`--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} must be ${what}, got '${got[name]}'`);
    return x;
  };
  return {
    model: got.model, prompt: got.prompt, ...(got.tokenizer ? { tokenizer: got.tokenizer } : {}),
    maxTokens: num('maxTokens', 64, (x) => Number.isInteger(x) && x > 0, 'a positive integer'),
    temperature: num('temperature', 0.8, (x) => x >= 0, '≥ 0'),
    topP: num('topP', 0.9, (x) => x > 0 && x <= 1, 'in (0, 1]'),
    seed: num('seed', 0, (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer'),
  };
};

/** The tokenizer beside a checkpoint: tokenizer.model/.json in its folder or the folder above, else a lone *.model. */
export const findTokenizer = (model: string): string | null => {
  const dir = existsSync(model) && statSync(model).isDirectory() ? model : dirname(model);
  for (const d of [dir, dirname(dir)]) {
    for (const f of ['tokenizer.model', 'tokenizer.json']) if (existsSync(join(d, f))) return join(d, f);
    const models = existsSync(d) ? readdirSync(d).filter((f) => f.endsWith('.model')) : [];
    if (models.length === 1) return join(d, models[0]!);
  }
  return null;
};

/** Stream the continuation to `out` as it is produced. */
export const runGenerate = async (a: GenerateArgs, out: (s: string) => void): Promise<void> => {
  const tokPath = a.tokenizer ?? findTokenizer(a.model);
  if (!tokPath) throw new UsageError(`no tokenizer found beside ${a.model}: pass --tokenizer PATH`);
  const tok = await loadTokenizer(tokPath)();
  if (E.isLeft(tok)) throw new UsageError(tok.left.message);
  const m = await loadLlama(a.model)();
  if (E.isLeft(m)) throw new UsageError(m.left.message);
  const { config, params } = m.right;
  const ids = tok.right.encode(a.prompt, { bos: true });
  const dec = tok.right.decoder();
  for (const id of ids.slice(1)) dec.push(id); // the prompt is context, not output
  dec.flush();
  out(a.prompt);
  const opts = { maxTokens: a.maxTokens, temperature: a.temperature, topP: a.topP, key: key(a.seed) };
  for await (const { tokens } of generate(config, params, [ids], opts)) {
    const t = tokens[0];
    if (t === null || t === undefined || t === config.eosId) break;
    out(dec.push(t));
  }
  out(`${dec.flush()}\n`);
};
