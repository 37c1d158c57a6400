// `camelid dpo`: preference tuning from a strict JSON config (--config) and/or flags; every config key is also a
// flag `--key value` that overrides the file. Problems with the config or files are one-line usage errors.

import * as E from 'fp-ts/lib/Either.js';
import { Command } from 'commander';
import { UsageError } from '../models/cli-options.js';
import { DPO_KEYS, parseDpoConfig, resolveDpoConfig, runDpo, type DpoConfig } from './dpo-run.js';
import { commandSettings, numberFlags, progressMode } from './cli-settings.js';

const NUMBER_KEYS = new Set(['maxSeqLen', 'batchSize', 'gradAccum', 'epochs', 'steps', 'lr', 'warmupRatio', 'weightDecay', 'b1', 'b2', 'eps', 'clipNorm', 'seed',
  'padToMultiple', 'saveEvery', 'keepCheckpoints', 'logEvery', 'beta', 'labelSmoothing', 'gamma', 'rpoAlpha']);
const HELP: Record<string, string> = {
  preset: "settings to start from: 'tulu2-dpo' (β 0.1, lr 5e-7, 3 epochs, warmup 0.1, max length 8192, batch 1 × 32 accumulated, linear, clip 1.0)",
  model: 'the policy to start from (and the reference): a Hugging Face folder or a llama2.c .bin',
  tokenizer: 'tokenizer.model or tokenizer.json (default: found beside the model)',
  data: 'preference JSONL: {"chosen": messages, "rejected": messages} (UltraFeedback) or {"prompt", "chosen", "rejected"} strings (repeatable)',
  onBadRow: "'error' (stop at the first bad row, naming file and line) or 'skip' (count and report them)",
  output: 'output folder: metrics.jsonl, checkpoint-N folders, the final model or adapters', maxSeqLen: 'tokens per side at most (right truncation)',
  batchSize: 'pairs per micro-batch', gradAccum: 'micro-batches per optimizer update', epochs: 'passes over the data', steps: 'optimizer updates (instead of epochs)',
  lr: 'peak learning rate', schedule: 'linear | cosine | constant', warmupRatio: 'warmup steps = floor(steps × ratio)', weightDecay: 'AdamW decoupled weight decay',
  b1: 'AdamW β1', b2: 'AdamW β2', eps: 'AdamW ε', clipNorm: 'clip the gradient to this global norm (0: off)', seed: 'data order and adapter init seed',
  variant: 'chat tokenization: hf-legacy | hf | easylm', padToMultiple: 'pad each batch to a multiple of this many tokens (fewer compiled shapes)',
  saveEvery: 'checkpoint every N steps (0: only at the end)', keepCheckpoints: 'complete checkpoints kept', logEvery: 'metrics every N steps',
  resume: 'continue from a checkpoint folder (or an output folder: its newest checkpoint)',
  beta: 'β, the KL strength', loss: 'sigmoid | hinge | ipo | dpo_norm | simpo', labelSmoothing: 'cDPO ε (sigmoid, dpo_norm, simpo)', gamma: 'SimPO target margin γ (default 0.3·β)', rpoAlpha: 'RPO: α × the chosen answers\' mean token NLL added to the loss (TRL rpo_alpha; 0 off)',
  reference: "'adapter' (LoRA: the base under disabled adapters; the LoRA default), 'frozen' (a second copy; the full fine-tuning default), 'cache' (one pass before training, reused)",
  refCacheDir: 'where cached reference log-probs live (default OUTPUT/ref-cache)',
  lora: 'train LoRA adapters: r=64,alpha=16,dropout=0.1[,targets=wq+wk+…|q_proj+…][,rslora=true]',
  qlora: 'QLoRA: the base projections in NF4 (double quantisation), LoRA on top',
};

/** The settings of a command line: the config file's, then the flags' over them. */
export const dpoSettings = (o: Record<string, unknown>): Promise<E.Either<string, DpoConfig>> =>
  commandSettings(o, { parse: parseDpoConfig, resolve: resolveDpoConfig, flags: (f) => numberFlags(f, NUMBER_KEYS) });

export const dpoCommand = new Command('dpo')
  .description('preference tuning (Tulu 2 DPO): sigmoid/cDPO, hinge, IPO, length-normalised and SimPO losses; reference from disabled adapters, a frozen copy or a cache')
  .option('--config <FILE>', 'JSON settings (unknown keys are errors); flags override it')
  .option('--progress <MODE>', 'auto | bar | lines | none', 'auto');
for (const k of DPO_KEYS) dpoCommand.option(k === 'qlora' ? '--qlora' : k === 'data' ? `--${k} <VALUE...>` : `--${k} <VALUE>`, HELP[k] ?? k);
dpoCommand.action(async (o: Record<string, unknown>) => {
  const cfg = await dpoSettings(o);
  if (E.isLeft(cfg)) throw new UsageError(cfg.left);
  await runDpo(cfg.right, { progress: progressMode(o.progress) });
});
