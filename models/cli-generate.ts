// `camelid generate`: load a checkpoint and its tokenizer, stream a continuation of a prompt to stdout.
// Argument and file problems are one-line errors (the caller maps them to a non-zero exit code).

import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Command } from 'commander';
import * as E from 'fp-ts/lib/Either.js';
import { key } from '../ops/random.js';
import { generate } from './generate.js';
import { checkVocab } from './config.js';
import { loadLlama } from './load.js';
import { loadTokenizer, type Tokenizer } from './tokenizer/index.js';
import { nonNegative, nonNegativeInt, positiveInt, unitInterval, UsageError } from './cli-options.js';

export { UsageError };

export interface GenerateArgs {
  readonly model: string;
  readonly prompt: string;
  readonly tokenizer?: string;
  readonly maxTokens: number;
  readonly temperature: number;
  readonly topP: number;
  readonly seed: number;
  /** Wrap the prompt as one user turn of a chat template (the model answers as the assistant). */
  readonly chat?: boolean;
}

/** A chat template's generation prompt for one user turn (recipes/chat.ts gives Tulu's to the command line). */
export type ChatPrompt = (tok: Tokenizer, text: string) => number[];

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
export const runGenerate = async (a: GenerateArgs, out: (s: string) => void, chatPrompt?: ChatPrompt): Promise<void> => {
  // The model first: a missing model is reported as such, not as a tokenizer that cannot be found beside it.
  if (!existsSync(a.model)) throw new UsageError(`${a.model}: cannot open model (no such file or directory)`);
  const tokPath = a.tokenizer ?? findTokenizer(a.model);
  if (!tokPath) throw new UsageError(`no tokenizer found beside ${a.model}: pass --tokenizer PATH`);
  const tok = await loadTokenizer(tokPath)();
  if (E.isLeft(tok)) throw new UsageError(tok.left.message);
  const m = await loadLlama(a.model)();
  if (E.isLeft(m)) throw new UsageError(m.left.message);
  const { config, params } = m.right;
  const fits = checkVocab(config, tok.right, { model: a.model, tokenizer: tokPath });
  if (E.isLeft(fits)) throw new UsageError(fits.left.message);
  if (a.chat && !chatPrompt) throw new UsageError('--chat: no chat template is available here');
  const ids = a.chat ? chatPrompt!(tok.right, a.prompt) : tok.right.encode(a.prompt, { bos: true });
  const dec = tok.right.decoder();
  for (const id of ids.slice(1)) dec.push(id); // the prompt is context, not output
  dec.flush();
  if (!a.chat) out(a.prompt); // a chat reply is printed alone
  const k = key(a.seed);
  try {
    for await (const { tokens } of generate(config, params, [ids], { maxTokens: a.maxTokens, temperature: a.temperature, topP: a.topP, key: k })) {
      const t = tokens[0];
      if (t === null || t === undefined || t === config.eosId) break;
      out(dec.push(t));
    }
  } finally {
    k.dispose();
  }
  out(`${dec.flush()}\n`);
};

/**
 * `camelid generate`: commander parses and checks the flags; --model and --prompt are required. `chatPrompt` is the
 * template --chat uses (the command line passes Tulu's; without one, --chat is an error).
 */
export const makeGenerateCommand = (chatPrompt?: ChatPrompt): Command => new Command('generate')
  .description('continue a prompt with a checkpoint (a Hugging Face folder or a llama2.c .bin), streamed to stdout')
  .option('--model <DIR|FILE.bin>', 'the checkpoint: a folder with config.json and safetensors, or a llama2.c .bin')
  .option('--prompt <TEXT>', 'the text to continue')
  .option('--tokenizer <PATH>', 'tokenizer.model, tokenizer.json or a llama2.c tokenizer .bin (default: found beside the model)')
  .option('--max-tokens <N>', 'tokens to generate at most', positiveInt('--max-tokens'), 64)
  .option('--temperature <T>', 'sampling temperature; 0 is greedy', nonNegative('--temperature'), 0.8)
  .option('--top-p <P>', 'nucleus sampling mass', unitInterval('--top-p'), 0.9)
  .option('--seed <S>', 'random seed of the sampler', nonNegativeInt('--seed'), 0)
  .option('--chat', 'the prompt is a user turn in the Tulu chat format; print the assistant\'s reply (for chat-tuned checkpoints)')
  .action(async (o: { model?: string; prompt?: string; tokenizer?: string; maxTokens: number; temperature: number; topP: number; seed: number; chat?: boolean }) => {
    if (!o.model) throw new UsageError('--model DIR (or a llama2.c .bin) is required');
    if (o.prompt === undefined) throw new UsageError('--prompt TEXT is required');
    const args: GenerateArgs = {
      model: o.model, prompt: o.prompt, ...(o.tokenizer ? { tokenizer: o.tokenizer } : {}),
      maxTokens: o.maxTokens, temperature: o.temperature, topP: o.topP, seed: o.seed, ...(o.chat ? { chat: true } : {}),
    };
    await runGenerate(args, (s) => process.stdout.write(s), chatPrompt);
  });
