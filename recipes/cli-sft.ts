// `camelid sft`: supervised fine-tuning from a strict JSON config (--config) and/or flags; every config key is also a
// flag `--key value` that overrides the file. Problems with the config or files are one-line usage errors.

import * as E from 'fp-ts/lib/Either.js';
import { Command } from 'commander';
import { UsageError } from '../models/cli-options.js';
import { parseSftConfig, resolveSftConfig, runSft, SFT_KEYS } from './sft.js';
import { commandSettings, numberFlags, progressMode } from './cli-settings.js';

const NUMBER_KEYS = new Set(['evalFraction', 'maxSeqLen', 'batchSize', 'gradAccum', 'epochs', 'steps', 'lr', 'warmupRatio', 'weightDecay', 'b1', 'b2', 'eps', 'clipNorm', 'seed', 'padToMultiple', 'evalEvery', 'saveEvery', 'keepCheckpoints', 'logEvery']);
const HELP: Record<string, string> = {
  preset: "settings to start from: 'tulu2' (lr 2e-5, 2 epochs, warmup 0.03, max length 8192, batch 1 × 128 accumulated, clip 1.0)",
  model: 'the model to fine-tune: a Hugging Face folder (config.json + safetensors) or a llama2.c .bin',
  tokenizer: 'tokenizer.model or tokenizer.json (default: found beside the model)',
  data: "training JSONL in the Tulu v2 mix format; PATH or PATH:WEIGHT, repeatable (replaces the config's list)",
  evalData: 'eval JSONL files (repeatable)', evalFraction: 'fraction of each train file held out for eval',
  output: 'output folder: metrics.jsonl, checkpoint-N folders, the final model', maxSeqLen: 'tokens per example at most (right truncation)',
  batchSize: 'examples per micro-batch', gradAccum: 'micro-batches per optimizer update', epochs: 'passes over the data', steps: 'optimizer updates (instead of epochs)',
  lr: 'peak learning rate', schedule: 'linear | cosine | constant', warmupRatio: 'warmup steps = floor(steps × ratio)', weightDecay: 'AdamW decoupled weight decay (matrices only)',
  b1: 'AdamW β1', b2: 'AdamW β2', eps: 'AdamW ε', clipNorm: 'clip the gradient to this global norm (0: off)', seed: 'data order and RNG seed',
  lossReduction: "'mean' (each example weighs the same, open-instruct) or 'sum' (each trained token, EasyLM)", variant: 'chat tokenization: hf-legacy | hf | easylm',
  padToMultiple: 'pad each batch to a multiple of this many tokens (fewer compiled shapes)', evalEvery: 'eval loss every N steps (0: off)',
  saveEvery: 'checkpoint every N steps (0: only at the end)', keepCheckpoints: 'complete checkpoints kept', logEvery: 'metrics every N steps',
  resume: 'continue from a checkpoint folder (or an output folder: its newest checkpoint)',
  lora: 'train LoRA adapters: r=64,alpha=16,dropout=0.1[,targets=wq+wk+…|q_proj+…][,rslora=true]; checkpoints are PEFT adapter folders',
  qlora: 'QLoRA: the base projections in NF4 (double quantisation), LoRA on top (Tulu 2: r 64, alpha 16, dropout 0.1 unless --lora)',
};

/**
 * Flag values as config fields: numbers parsed (the codec then checks them), data entries as {path, weight?}.
 * @example flagsToConfig({ lr: '1e-5', data: ['a.jsonl', 'b.jsonl:2'] }) // { lr: 1e-5, data: [{ path: 'a.jsonl' }, { path: 'b.jsonl', weight: 2 }] }
 */
export const flagsToConfig = (o: Record<string, unknown>): Record<string, unknown> => numberFlags(o, NUMBER_KEYS, {
  data: (v) => (v as string[]).map((s) => { const m = /^(.*):([0-9.]+)$/.exec(s); return m ? { path: m[1]!, weight: Number(m[2]) } : { path: s }; }),
});

export const sftCommand = new Command('sft')
  .description('supervised fine-tuning (Tulu 2 SFT): AdamW, warmup + decay, clipping, checkpoints and exact resume')
  .option('--config <FILE>', 'JSON settings (unknown keys are errors); flags override it')
  .option('--progress <MODE>', 'auto | bar | lines | none', 'auto');
for (const k of SFT_KEYS) {
  const repeat = k === 'data' || k === 'evalData';
  sftCommand.option(k === 'qlora' ? '--qlora' : repeat ? `--${k} <VALUE...>` : `--${k} <VALUE>`, HELP[k] ?? k);
}
sftCommand.action(async (o: Record<string, unknown>) => {
  const cfg = await commandSettings(o, { parse: parseSftConfig, resolve: resolveSftConfig, flags: flagsToConfig });
  if (E.isLeft(cfg)) throw new UsageError(cfg.left);
  await runSft(cfg.right, { progress: progressMode(o.progress) });
});
