// What every recipe run's config shares (SFT, DPO): strict number codecs whose failures name the field, and the
// fields of the model, the data's shape, the optimizer, the schedule, checkpoints and adapters. Each recipe adds its
// own fields around these (recipes/sft.ts, recipes/dpo-run.ts).

import * as t from 'io-ts';
import { LoraSetting } from './lora-sft.js';

/** A finite number that `ok` accepts; a failure reads `${name} must be ${what}`. */
export const numberField = (name: string, ok: (x: number) => boolean, what: string) => new t.Type<number, number, unknown>(name, (u): u is number => typeof u === 'number',
  (u, c) => (typeof u === 'number' && Number.isFinite(u) && ok(u) ? t.success(u) : t.failure(u, c, `${name} must be ${what}`)), (x) => x);
export const posInt = (n: string) => numberField(n, (x) => Number.isSafeInteger(x) && x > 0, 'an integer > 0');
export const count = (n: string) => numberField(n, (x) => Number.isSafeInteger(x) && x >= 0, 'an integer ≥ 0');
export const nonNeg = (n: string) => numberField(n, (x) => x >= 0, 'a number ≥ 0');
export const positive = (n: string) => numberField(n, (x) => x > 0, 'a number > 0');

/** The fields of a training run that SFT and DPO read alike (all optional; presets and flags fill them). */
export const trainFields = {
  model: t.string,
  tokenizer: t.string,
  output: t.string,
  maxSeqLen: posInt('maxSeqLen'),
  batchSize: posInt('batchSize'),
  gradAccum: posInt('gradAccum'),
  epochs: posInt('epochs'),
  steps: posInt('steps'),
  lr: nonNeg('lr'),
  schedule: t.keyof({ linear: null, cosine: null, constant: null }),
  warmupRatio: nonNeg('warmupRatio'),
  weightDecay: nonNeg('weightDecay'),
  b1: nonNeg('b1'),
  b2: nonNeg('b2'),
  eps: positive('eps'),
  clipNorm: nonNeg('clipNorm'),
  seed: count('seed'),
  variant: t.keyof({ 'hf-legacy': null, hf: null, easylm: null }),
  padToMultiple: posInt('padToMultiple'),
  saveEvery: count('saveEvery'),
  keepCheckpoints: posInt('keepCheckpoints'),
  logEvery: posInt('logEvery'),
  resume: t.string,
  /** LoRA adapters instead of full fine-tuning (models/lora.ts; recipes/lora-sft.ts). */
  lora: LoraSetting,
  /** QLoRA: the base's projections in NF4 with double quantisation, LoRA on top (Tulu 2's settings unless `lora`). */
  qlora: t.boolean,
};
