// Supervised fine-tuning (Tulu 2 stage 1) as a run: the strict run config (io-ts; unknown keys rejected by name),
// the tulu2 preset, and runSft, which loads model, tokenizer and chat data, builds the jitted SFT step and hands it
// to the shared training loop. Library users can do the same by hand (README "SFT").

import { basename, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { Tensor } from '../core/tensor.js';
import { jit } from '../core/jit.js';
import { data } from '../core/backend.js';
import { saveLlama } from '../models/load.js';
import { loadLlamaConfig } from '../models/config.js';
import type { LlamaParams } from '../models/llama.js';
import { loadTokenizer } from '../models/tokenizer/index.js';
import { findTokenizer } from '../models/cli-generate.js';
import { UsageError } from '../models/cli-options.js';
import { batchTensors, defaultPadId, describeData, loadChatData, makeBatches, type Batch, type Example } from './data.js';
import { copyInto, readOptState, readTrainerState, resolveCheckpoint } from './checkpoint.js';
import { sftLoss } from './loss.js';
import { adamw, type AdamState } from './optim.js';
import { makeSchedule, warmupFromRatio } from './schedule.js';
import { trainStep } from './step.js';
import { trainLoop, type TrainResult } from './train.js';
import { loadBase, loraRun } from './lora-sft.js';
import { count, nonNeg, trainFields } from './run-config.js';
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

const PRESETS = { tulu2: TULU2_SFT } as const;

/**
 * Checks one layer of settings (a config file, the flags): unknown keys by name, then every field's type.
 * @example parseSftConfig({ lerning_rate: 1 }, 'cfg.json') // Left: cfg.json: unknown key 'lerning_rate' (known: …)
 */
export const parseSftConfig = (raw: unknown, source: string): E.Either<string, SftConfigPartial> => {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return E.left(`${source}: expected a JSON object of settings`);
  const unknown = Object.keys(raw).filter((k) => !(SFT_KEYS as string[]).includes(k));
  if (unknown.length) return E.left(`${source}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')} (known: ${SFT_KEYS.join(', ')})`);
  const r = SftConfigPartial.decode(raw);
  if (E.isLeft(r)) {
    const msgs = r.left.map((e) => {
      const path = e.context.map((c) => c.key).filter(Boolean).join('.');
      return `${path}: ${e.message ?? `expected ${e.context[e.context.length - 1]?.type.name}, got ${JSON.stringify(e.value)}`}`;
    });
    return E.left(`${source}: ${[...new Set(msgs)].join('; ')}`);
  }
  const extra = (raw as { data?: unknown[] }).data?.flatMap((d, i) => (typeof d === 'object' && d ? Object.keys(d).filter((k) => k !== 'path' && k !== 'weight').map((k) => `data.${i}.${k}`) : []));
  if (extra?.length) return E.left(`${source}: unknown key${extra.length > 1 ? 's' : ''} ${extra.map((k) => `'${k}'`).join(', ')} (a data entry has path and weight)`);
  return E.right(r.right);
};

/**
 * Defaults ← preset ← config file ← flags; then the required fields and `epochs` xor `steps`.
 * @example resolveSftConfig([{ preset: 'tulu2', model: 'm', data: [{ path: 'd.jsonl' }], output: 'o' }, { lr: 1e-5 }])
 */
export const resolveSftConfig = (layers: readonly SftConfigPartial[]): E.Either<string, SftConfig> => {
  const preset = layers.reduce<string | undefined>((p, l) => l.preset ?? p, undefined);
  const merged: SftConfigPartial = Object.assign({}, SFT_DEFAULTS, preset ? PRESETS[preset as keyof typeof PRESETS] : {}, ...layers);
  // A run given `steps` anywhere counts steps, not epochs (epochs come from the defaults or a preset).
  if (layers.some((l) => l.steps !== undefined) && !layers.some((l) => l.epochs !== undefined)) delete merged.epochs;
  if (merged.steps !== undefined && merged.epochs !== undefined) return E.left('config: give epochs or steps, not both');
  const missing = (['model', 'data', 'output'] as const).filter((k) => merged[k] === undefined);
  if (missing.length) return E.left(`config: missing ${missing.join(', ')}`);
  if (merged.data!.length === 0) return E.left('config: data lists no file');
  return E.right(merged as SftConfig);
};

export interface SftRun extends TrainResult<LlamaParams | LoraAdapters, AdamState> { readonly totalSteps: number; readonly output: string }

/**
 * Runs SFT from a resolved config: loads everything, trains, writes checkpoints and the final model into `output`.
 * Problems with files, data or the config throw UsageError naming them.
 * @example await runSft(orThrow(resolveSftConfig([{ preset: 'tulu2', model: 'llama', data: [{ path: 'mix.jsonl' }], output: 'out' }])));
 */
export const runSft = async (c: SftConfig, opts: { log?: (s: string) => void; progress?: 'auto' | 'bar' | 'lines' | 'none'; stopAfter?: number } = {}): Promise<SftRun> => {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const tokPath = c.tokenizer ?? findTokenizer(c.model);
  if (!tokPath) throw new UsageError(`no tokenizer found beside ${c.model}: set tokenizer`);
  const tok = await loadTokenizer(tokPath)();
  if (E.isLeft(tok)) throw new UsageError(tok.left.message);
  const cfgOnly = await loadLlamaConfig(c.model)();
  if (E.isRight(cfgOnly) && cfgOnly.right.vocabSize !== tok.right.vocabSize) {
    throw new UsageError(`tokenizer ${tokPath} has ${tok.right.vocabSize} tokens but model ${c.model} has vocab_size ${cfgOnly.right.vocabSize}`);
  }
  const chat = await loadChatData(tok.right, c.data, { maxSeqLen: c.maxSeqLen, variant: c.variant, seed: c.seed,
    ...(c.evalFraction ? { evalFraction: c.evalFraction } : {}), ...(c.evalData ? { evalFiles: c.evalData } : {}) })();
  if (E.isLeft(chat)) throw new UsageError(chat.left.message);
  log(describeData(chat.right));
  // Resume: weights, optimizer state and position from the checkpoint; otherwise the model as given.
  const resumeDir = c.resume ? await resolveCheckpoint(c.resume) : undefined;
  if (resumeDir && E.isLeft(resumeDir)) throw new UsageError(resumeDir.left.message);
  // A LoRA checkpoint holds adapters: the base always comes from the model.
  const tuneLora = !!(c.lora || c.qlora);
  const { config, params } = await loadBase(resumeDir && !tuneLora ? resumeDir.right : c.model, tuneLora);
  if (config.vocabSize !== tok.right.vocabSize) throw new UsageError(`tokenizer ${tokPath} has ${tok.right.vocabSize} tokens but model ${c.model} has vocab_size ${config.vocabSize}`);
  const optimizer = adamw({ lr: c.lr, b1: c.b1, b2: c.b2, eps: c.eps, weightDecay: c.weightDecay });
  const run = tuneLora ? await loraRun(config, params, { ...(c.lora ? { lora: c.lora } : {}), qlora: !!c.qlora, seed: c.seed, model: c.model, ...(resumeDir && E.isRight(resumeDir) ? { resumeDir: resumeDir.right } : {}) }) : null;
  if (run) log(run.summary);
  /** The parameters the loss reads: the model itself, or the base with the adapters (dropout keyed per micro-batch). */
  const adapt = (p: unknown, f: unknown, k?: Tensor): LlamaParams<Weight> => (run ? run.params(p as LoraAdapters, f as LlamaParams<Weight>, k) : (p as LlamaParams));
  const trainable: LlamaParams | LoraAdapters = run ? run.trainable : (params as LlamaParams); // dense: an NF4 base needs adapters (loadBase)
  let optState = optimizer.init(trainable);
  let resume;
  if (resumeDir && E.isRight(resumeDir)) {
    const st = await readOptState(resumeDir.right, optState);
    if (E.isLeft(st)) throw new UsageError(st.left.message);
    optState = st.right;
    const tr = await readTrainerState(resumeDir.right);
    if (E.isLeft(tr)) throw new UsageError(tr.left.message);
    resume = tr.right;
    log(`resuming from ${resumeDir.right} at step ${resume.step}`);
  }
  const padId = defaultPadId(tok.right);
  const batchOpts = { batchSize: c.batchSize, padId, seed: c.seed, padToMultiple: c.padToMultiple };
  const train: readonly Example[] = chat.right.train;
  const perEpoch = makeBatches(train, { ...batchOpts, epoch: 0 }).length;
  const totalSteps = c.steps ?? (c.epochs ?? 1) * Math.ceil(perEpoch / c.gradAccum);
  // Micro-batch i of the run: epoch ⌊i / perEpoch⌋, its batches rebuilt from (seed, epoch) alone.
  let cached: { epoch: number; batches: Batch[] } | null = null;
  const hostBatch = (i: number): Batch => {
    const epoch = Math.floor(i / perEpoch);
    if (cached?.epoch !== epoch) cached = { epoch, batches: makeBatches(train, { ...batchOpts, epoch }) };
    return cached.batches[i % perEpoch]!;
  };
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
    describeBatch: (i) => `epoch ${Math.floor(i / perEpoch) + 1}, batch ${(i % perEpoch) + 1} (examples ${hostBatch(i).rows.join(', ')})`,
    tokensOf: (b) => b.tokens.size,
    totalSteps, gradAccum: c.gradAccum, schedule: makeSchedule(c.schedule, { peak: c.lr, warmupSteps: warmup, totalSteps }),
    output: c.output, saveEvery: c.saveEvery, keepCheckpoints: c.keepCheckpoints ?? 1, logEvery: c.logEvery, config: c,
    saveModel: async (dir, p) => {
      if (run) await run.save(dir, p as LoraAdapters);
      else {
        const s = await saveLlama(dir, config, p as LlamaParams)();
        if (E.isLeft(s)) throw new Error(s.left.message);
      }
      await copyInto(tokPath, dir, tokPath.endsWith('.json') ? 'tokenizer.json' : basename(tokPath).endsWith('.model') ? 'tokenizer.model' : basename(tokPath));
    },
    ...(evalBatches.length && c.evalEvery ? { evalEvery: c.evalEvery, evalLoss } : {}),
    key: [0, c.seed], ...(resume ? { resume } : {}), log, progress: opts.progress ?? 'auto',
    ...(opts.stopAfter !== undefined ? { stopAfter: opts.stopAfter } : {}),
  });
  log(`sft: ${r.step} steps done; model in ${c.output}${r.losses.length ? `, last loss ${r.losses[r.losses.length - 1]!.toFixed(4)}` : ''}`);
  return { ...r, totalSteps, output: join(c.output) };
};
