// What an SFT run and a DPO run do alike around their own data and loss: load the tokenizer (found beside the model
// unless given) and check it against the model's vocabulary, find the checkpoint to resume from and read its
// optimizer and trainer state, walk the epochs' batches rebuilt from (seed, epoch) alone, and save the model or
// its adapters with the tokenizer beside them. Every problem with a file is a UsageError naming it.

import { basename } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { LlamaConfig } from '../models/config.js';
import type { LlamaParams } from '../models/llama.js';
import { saveLlama } from '../models/load.js';
import type { LoraAdapters } from '../models/lora.js';
import { loadTokenizer, type Tokenizer } from '../models/tokenizer/index.js';
import { findTokenizer } from '../models/cli-generate.js';
import { UsageError } from '../models/cli-options.js';
import { copyInto, readOptState, readTrainerState, resolveCheckpoint, type TrainerState } from './checkpoint.js';
import type { LoraRun } from './lora-sft.js';

/** The run's tokenizer: `tokenizer`, or the one beside `model`. */
export const runTokenizer = async (model: string, tokenizer?: string): Promise<{ tok: Tokenizer; path: string }> => {
  const path = tokenizer ?? findTokenizer(model);
  if (!path) throw new UsageError(`no tokenizer found beside ${model}: set tokenizer`);
  const tok = await loadTokenizer(path)();
  if (E.isLeft(tok)) throw new UsageError(tok.left.message);
  return { tok: tok.right, path };
};

/** Refuses a tokenizer whose vocabulary is not the model's, naming both. */
export const checkVocab = (tok: { tok: Tokenizer; path: string }, model: string, vocabSize: number): void => {
  if (vocabSize !== tok.tok.vocabSize) throw new UsageError(`tokenizer ${tok.path} has ${tok.tok.vocabSize} tokens but model ${model} has vocab_size ${vocabSize}`);
};

/** The checkpoint folder `resume` names (a checkpoint, or an output folder: its newest), or undefined without one. */
export const resumeDirOf = async (resume?: string): Promise<string | undefined> => {
  if (!resume) return undefined;
  const dir = await resolveCheckpoint(resume);
  if (E.isLeft(dir)) throw new UsageError(dir.left.message);
  return dir.right;
};

/** The optimizer state (shaped as `template`) and the trainer's position saved in a checkpoint. */
export const resumeState = async <S>(dir: string, template: S, log: (s: string) => void): Promise<{ optState: S; resume: TrainerState }> => {
  const st = await readOptState(dir, template);
  if (E.isLeft(st)) throw new UsageError(st.left.message);
  const tr = await readTrainerState(dir);
  if (E.isLeft(tr)) throw new UsageError(tr.left.message);
  log(`resuming from ${dir} at step ${tr.right.step}`);
  return { optState: st.right, resume: tr.right };
};

/**
 * A run's micro-batches: batch i is batch i mod perEpoch of epoch ⌊i / perEpoch⌋, rebuilt from (seed, epoch) alone
 * (one epoch's batches held at a time), so a resumed run sees the same order; the steps are `steps`, or the epochs
 * times ⌈perEpoch / gradAccum⌉.
 * @example const plan = epochPlan((epoch) => makeBatches(train, { batchSize: 8, padId, seed, epoch }), c);
 */
export const epochPlan = <B>(make: (epoch: number) => B[], c: { readonly steps?: number; readonly epochs?: number; readonly gradAccum: number }) => {
  let held = { epoch: 0, batches: make(0) };
  const perEpoch = held.batches.length;
  const at = (i: number): B => {
    const epoch = Math.floor(i / perEpoch);
    if (held.epoch !== epoch) held = { epoch, batches: make(epoch) };
    return held.batches[i % perEpoch]!;
  };
  const where = (i: number) => `epoch ${Math.floor(i / perEpoch) + 1}, batch ${(i % perEpoch) + 1}`;
  return { perEpoch, totalSteps: c.steps ?? (c.epochs ?? 1) * Math.ceil(perEpoch / c.gradAccum), at, where };
};

/** Saves the trained tree into a folder: the adapters (a LoRA run) or the whole model, and the tokenizer beside it. */
export const saveRunModel = (config: LlamaConfig, tokPath: string, run: LoraRun | null) => async (dir: string, p: LlamaParams | LoraAdapters): Promise<void> => {
  if (run) await run.save(dir, p as LoraAdapters);
  else {
    const s = await saveLlama(dir, config, p as LlamaParams)();
    if (E.isLeft(s)) throw new Error(s.left.message);
  }
  await copyInto(tokPath, dir, tokPath.endsWith('.json') ? 'tokenizer.json' : basename(tokPath).endsWith('.model') ? 'tokenizer.model' : basename(tokPath));
};
