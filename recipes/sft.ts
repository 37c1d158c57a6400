// Supervised fine-tuning (Tulu 2 stage 1) as a run: the strict run config (io-ts; unknown keys rejected by name),
// the tulu2 preset, and runSft, which loads model, tokenizer and chat data, builds the jitted SFT step and hands it
// to the shared training loop. Library users can do the same by hand (README "SFT").

import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { Tensor } from '../core/tensor.js';
import { jit } from '../core/jit.js';
import { data } from '../core/backend.js';
import { loadLlamaConfig } from '../models/config.js';
import type { LlamaParams } from '../models/llama.js';
import { UsageError } from '../models/cli-options.js';
import { batchTensors, defaultPadId, describeData, loadChatData, makeBatches, type Example } from './data.js';
import { sftLoss } from './loss.js';
import { adamw, type AdamState } from './optim.js';
import { makeSchedule, warmupFromRatio } from './schedule.js';
import { trainStep } from './step.js';
import { checkVocab, epochPlan, resumeDirOf, resumeState, runTokenizer, saveRunModel } from './run-parts.js';
import { trainLoop, type TrainResult } from './train.js';
import { loadBase, loraRun } from './lora-sft.js';
import { count, mergeLayers, nonNeg, parseLayer, trainFields, unknownKeys } from './run-config.js';
import { tensor } from '../ops/create.js';
import type { LoraAdapters } from '../models/lora.js';
import type { Weight } from '../ops/nn.js';

/** Every field of an SFT run; all optional here, the required ones checked after presets and overrides merge. */
const fields = {
  preset: t.keyof({ tulu2: null }),
  ...trainFields,
  data: t.array(t.exact(t.intersection([t.type({ path: t.string }), t.partial({ weight: nonNeg('weight') })]))),
  evalData: t.array(t.string),
  evalFraction: nonNeg('evalFraction'),
  lossReduction: t.keyof({ mean: null, sum: null }),
  evalEvery: count('evalEvery'),
};
export const SftConfigPartial = t.partial(fields, 'SftConfig');
export type SftConfigPartial = t.TypeOf<typeof SftConfigPartial>;
export const SFT_KEYS = Object.keys(fields) as (keyof typeof fields)[];

export type SftConfig = SftConfigPartial & Required<Pick<SftConfigPartial, 'model' | 'data' | 'output' | 'maxSeqLen' | 'batchSize' | 'gradAccum' | 'lr' | 'schedule' | 'warmupRatio' | 'weightDecay' | 'b1' | 'b2' | 'eps' | 'clipNorm' | 'seed' | 'lossReduction' | 'variant' | 'padToMultiple' | 'evalEvery' | 'saveEvery' | 'logEvery'>>;

/** open-instruct finetune.py's defaults (RECIPES-FACTS §4.1), clipping off as there; epochs 3. */
export const SFT_DEFAULTS: SftConfigPartial = {
  maxSeqLen: 512, batchSize: 8, gradAccum: 1, epochs: 3, lr: 5e-5, schedule: 'linear', warmupRatio: 0, weightDecay: 0,
  b1: 0.9, b2: 0.999, eps: 1e-8, clipNorm: 0, seed: 42, lossReduction: 'mean', variant: 'hf-legacy', padToMultiple: 1,
  evalEvery: 0, saveEvery: 0, keepCheckpoints: 1, logEvery: 1,
};

/**
 * Tulu 2 SFT (paper App. B): lr 2e-5, 2 epochs, warmup ratio 0.03, weight decay 0, max length 8192, effective batch
 * 128 (1 per device × 128 accumulated, as open-instruct's scripts), linear schedule, clipping 1.0 (DeepSpeed "auto").
 */
export const TULU2_SFT: SftConfigPartial = {
  lr: 2e-5, epochs: 2, warmupRatio: 0.03, weightDecay: 0, maxSeqLen: 8192, batchSize: 1, gradAccum: 128, schedule: 'linear', clipNorm: 1.0,
};

const PRESETS: Record<string, SftConfigPartial> = { tulu2: TULU2_SFT };

/**
 * Checks one layer of settings (a config file, the flags): unknown keys by name (a data entry has path and weight),
 * then every field's type.
 * @example parseSftConfig({ lerning_rate: 1 }, 'cfg.json') // Left: cfg.json: unknown key 'lerning_rate' (known: …)
 */
export const parseSftConfig = (raw: unknown, source: string): E.Either<string, SftConfigPartial> => {
  const r = parseLayer(SftConfigPartial, SFT_KEYS, raw, source);
  // The codec's t.exact strips other keys of a data entry: look for them in the raw layer.
  const extra = E.isRight(r) ? (raw as { data?: object[] }).data?.flatMap((d, i) => Object.keys(d).filter((k) => k !== 'path' && k !== 'weight').map((k) => `data.${i}.${k}`)) : [];
  return extra?.length ? E.left(`${source}: ${unknownKeys(extra)} (a data entry has path and weight)`) : r;
};

/**
 * Defaults ← preset ← config file ← flags; then the required fields and `epochs` xor `steps`.
 * @example resolveSftConfig([{ preset: 'tulu2', model: 'm', data: [{ path: 'd.jsonl' }], output: 'o' }, { lr: 1e-5 }])
 */
export const resolveSftConfig = (layers: readonly SftConfigPartial[]): E.Either<string, SftConfig> =>
  mergeLayers(SFT_DEFAULTS, PRESETS, layers) as E.Either<string, SftConfig>;

export interface SftRun extends TrainResult<LlamaParams | LoraAdapters, AdamState> { readonly totalSteps: number; readonly output: string }

/**
 * Runs SFT from a resolved config: loads everything, trains, writes checkpoints and the final model into `output`.
 * Problems with files, data or the config throw UsageError naming them.
 * @example await runSft(orThrow(resolveSftConfig([{ preset: 'tulu2', model: 'llama', data: [{ path: 'mix.jsonl' }], output: 'out' }])));
 */
export const runSft = async (c: SftConfig, opts: { log?: (s: string) => void; progress?: 'auto' | 'bar' | 'lines' | 'none'; stopAfter?: number } = {}): Promise<SftRun> => {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const tok = await runTokenizer(c.model, c.tokenizer);
  // Before the data is read: a model whose config says another vocabulary is refused at once.
  const cfgOnly = await loadLlamaConfig(c.model)();
  if (E.isRight(cfgOnly)) checkVocab(tok, c.model, cfgOnly.right.vocabSize);
  const chat = await loadChatData(tok.tok, c.data, { maxSeqLen: c.maxSeqLen, variant: c.variant, seed: c.seed,
    ...(c.evalFraction ? { evalFraction: c.evalFraction } : {}), ...(c.evalData ? { evalFiles: c.evalData } : {}) })();
  if (E.isLeft(chat)) throw new UsageError(chat.left.message);
  log(describeData(chat.right));
  // Resume: weights, optimizer state and position from the checkpoint; otherwise the model as given.
  const resumeDir = await resumeDirOf(c.resume);
  // A LoRA checkpoint holds adapters: the base always comes from the model.
  const tuneLora = !!(c.lora || c.qlora);
  const { config, params } = await loadBase(resumeDir && !tuneLora ? resumeDir : c.model, tuneLora);
  checkVocab(tok, c.model, config.vocabSize);
  const optimizer = adamw({ lr: c.lr, b1: c.b1, b2: c.b2, eps: c.eps, weightDecay: c.weightDecay });
  const run = tuneLora ? await loraRun(config, params, { lora: c.lora, qlora: !!c.qlora, seed: c.seed, model: c.model, resumeDir }) : null;
  if (run) log(run.summary);
  /** The parameters the loss reads: the model itself, or the base with the adapters (dropout keyed per micro-batch). */
  const adapt = (p: unknown, f: unknown, k?: Tensor): LlamaParams<Weight> => (run ? run.params(p as LoraAdapters, f as LlamaParams<Weight>, k) : (p as LlamaParams));
  const trainable: LlamaParams | LoraAdapters = run ? run.trainable : (params as LlamaParams); // dense: an NF4 base needs adapters (loadBase)
  const init = optimizer.init(trainable);
  const { optState, resume } = resumeDir ? await resumeState(resumeDir, init, log) : { optState: init, resume: undefined };
  const padId = defaultPadId(tok.tok);
  const batchOpts = { batchSize: c.batchSize, padId, seed: c.seed, padToMultiple: c.padToMultiple };
  const train: readonly Example[] = chat.right.train;
  const { perEpoch, totalSteps, at: hostBatch, where } = epochPlan((epoch) => makeBatches(train, { ...batchOpts, epoch }), c);
  const lossFn = (p: LlamaParams | LoraAdapters, f: unknown, b: { tokens: Tensor; labels: Tensor; key?: Tensor }) => sftLoss(config, adapt(p, f, b.key), b.tokens, b.labels, { reduction: c.lossReduction });
  const evalBatches = chat.right.eval.length ? makeBatches(chat.right.eval, { ...batchOpts, shuffle: false }) : [];
  const evalStep = jit((p: LlamaParams<Weight>, b: { tokens: Tensor; labels: Tensor }) => sftLoss(config, p, b.tokens, b.labels, { reduction: c.lossReduction }));
  const evalLoss = async (tp: LlamaParams | LoraAdapters, f: unknown): Promise<number> => {
    const p = adapt(tp, f);
    let total = 0;
    for (const hb of evalBatches) {
      const b = batchTensors(hb);
      const l = await evalStep(p, b);
      total += (await data(l))[0]!;
      for (const x of [l, b.tokens, b.labels]) x.dispose();
    }
    return total / Math.max(1, evalBatches.length);
  };
  const warmup = warmupFromRatio(totalSteps, c.warmupRatio);
  log(`sft: ${train.length} train examples, ${perEpoch} batches of ${c.batchSize} per epoch, ${totalSteps} steps of ${c.gradAccum} micro-batches, warmup ${warmup}, lr ${c.lr} (${c.schedule})`);
  const r = await trainLoop({
    step: trainStep(lossFn, { optimizer, clipNorm: c.clipNorm }), trainable, optState, frozen: run ? run.frozen : null,
    batchAt: (i) => ({ ...batchTensors(hostBatch(i)), ...(run ? { key: tensor([c.seed, i], { dtype: 'u32' }) } : {}) }), disposeBatches: true,
    describeBatch: (i) => `${where(i)} (examples ${hostBatch(i).rows.join(', ')})`,
    tokensOf: (b) => b.tokens.size,
    totalSteps, gradAccum: c.gradAccum, schedule: makeSchedule(c.schedule, { peak: c.lr, warmupSteps: warmup, totalSteps }),
    output: c.output, saveEvery: c.saveEvery, keepCheckpoints: c.keepCheckpoints, logEvery: c.logEvery, config: c,
    saveModel: saveRunModel(config, tok.path, run),
    ...(evalBatches.length && c.evalEvery ? { evalEvery: c.evalEvery, evalLoss } : {}),
    key: [0, c.seed], resume, log, progress: opts.progress, stopAfter: opts.stopAfter,
  });
  log(`sft: ${r.step} steps done; model in ${c.output}${r.losses.length ? `, last loss ${r.losses[r.losses.length - 1]!.toFixed(4)}` : ''}`);
  return { ...r, totalSteps, output: join(c.output) };
};
