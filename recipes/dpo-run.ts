// DPO (Tulu 2 stage 2) as a run: the strict run config (io-ts; unknown keys rejected by name), the tulu2-dpo
// preset, and runDpo, which loads model, tokenizer and preference data, sets up the reference (disabled LoRA
// adapters, a frozen copy, or a cache), builds the jitted DPO step and hands it to the shared training loop.

import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { LlamaConfig } from '../models/config.js';
import type { LlamaParams } from '../models/llama.js';
import { loadLlama } from '../models/load.js';
import { disable, type LoraAdapters } from '../models/lora.js';
import { UsageError } from '../models/cli-options.js';
import type { Weight } from '../ops/nn.js';
import { defaultPadId } from './data.js';
import { cachedReference, dpoLossFn, DPO_KINDS, type DpoBatch, type DpoKind, type DpoModel } from './dpo.js';
import { cachedRefLogps, computeRefLogps, hashPairs, hashParams, refBatch, type RefLogps } from './dpo-ref.js';
import { loadBase, loraRun } from './lora-sft.js';
import { mergeLayers, numberField, parseLayer, positive, trainFields } from './run-config.js';
import { adamw, type AdamState } from './optim.js';
import { encodePairs, makePrefBatches, prefBatchTensors, readPrefs, type PrefPair } from './prefs.js';
import { makeSchedule, warmupFromRatio } from './schedule.js';
import { trainStep } from './step.js';
import { checkVocab, epochPlan, resumeDirOf, resumeState, runTokenizer, saveRunModel } from './run-parts.js';
import { trainLoop, type TrainResult } from './train.js';

const fields = {
  preset: t.keyof({ 'tulu2-dpo': null }),
  ...trainFields,
  data: t.array(t.string),
  onBadRow: t.keyof({ error: null, skip: null }),
  beta: positive('beta'),
  loss: t.keyof(Object.fromEntries(DPO_KINDS.map((k) => [k, null])) as Record<DpoKind, null>),
  labelSmoothing: numberField('labelSmoothing', (x) => x >= 0 && x < 0.5, 'in [0, 0.5)'),
  gamma: t.number,
  rpoAlpha: numberField('rpoAlpha', (x) => x >= 0, 'a non-negative number'),
  /** 'adapter' (LoRA/QLoRA only), 'frozen' (a second copy of the model) or 'cache' (one pass before training). */
  reference: t.keyof({ adapter: null, frozen: null, cache: null }),
  refCacheDir: t.string,
};
export const DpoConfigPartial = t.partial(fields, 'DpoConfig');
export type DpoConfigPartial = t.TypeOf<typeof DpoConfigPartial>;
export const DPO_KEYS = Object.keys(fields) as (keyof typeof fields)[];
type Req = 'model' | 'data' | 'output' | 'maxSeqLen' | 'batchSize' | 'gradAccum' | 'lr' | 'schedule' | 'warmupRatio' | 'weightDecay' | 'b1' | 'b2' | 'eps' | 'clipNorm' | 'seed' | 'variant' | 'padToMultiple' | 'saveEvery' | 'logEvery' | 'beta' | 'loss' | 'onBadRow';
export type DpoConfig = DpoConfigPartial & Required<Pick<DpoConfigPartial, Req>>;

/** TRL DPOConfig's defaults (RECIPES-FACTS §4.3: β 0.1, sigmoid, lr 1e-6, max length 1024, clip 1.0), 1 epoch. */
export const DPO_DEFAULTS: DpoConfigPartial = {
  maxSeqLen: 1024, batchSize: 8, gradAccum: 1, epochs: 1, lr: 1e-6, schedule: 'linear', warmupRatio: 0, weightDecay: 0, b1: 0.9, b2: 0.999,
  eps: 1e-8, clipNorm: 1, seed: 42, variant: 'hf-legacy', padToMultiple: 1, saveEvery: 0, keepCheckpoints: 1, logEvery: 1, beta: 0.1,
  loss: 'sigmoid', onBadRow: 'error',
};

/** Tulu 2 DPO (paper App. B; open-instruct dpo_train_with_accelerate.sh): β 0.1, lr 5e-7, 3 epochs, warmup ratio
 * 0.1, effective batch 32 (1 × 32 accumulated), max length 8192, linear, weight decay 0, clipping 1.0 (accelerate's
 * DeepSpeed "auto"). */
export const TULU2_DPO: DpoConfigPartial = {
  beta: 0.1, lr: 5e-7, epochs: 3, warmupRatio: 0.1, batchSize: 1, gradAccum: 32, maxSeqLen: 8192, schedule: 'linear', weightDecay: 0, clipNorm: 1, loss: 'sigmoid',
};

/** Checks one layer of settings (a config file, the flags): unknown keys by name, then every field. */
export const parseDpoConfig = (raw: unknown, source: string): E.Either<string, DpoConfigPartial> => parseLayer(DpoConfigPartial, DPO_KEYS, raw, source);

/** Defaults ← preset ← config file ← flags; then the required fields, epochs xor steps, and the reference mode. */
export const resolveDpoConfig = (layers: readonly DpoConfigPartial[]): E.Either<string, DpoConfig> => {
  const merged = mergeLayers(DPO_DEFAULTS, { 'tulu2-dpo': TULU2_DPO }, layers);
  if (E.isLeft(merged)) return merged;
  const m = merged.right;
  if (m.reference === 'adapter' && !m.lora && !m.qlora) return E.left("config: reference 'adapter' needs lora or qlora (the reference is the base under the disabled adapters)");
  if (m.loss === 'simpo' && m.reference === 'cache') return E.left("config: simpo uses no reference; drop reference 'cache'");
  return E.right(m as DpoConfig);
};

export interface DpoRun extends TrainResult<LlamaParams | LoraAdapters, AdamState> { readonly totalSteps: number; readonly refCacheHit?: boolean }

/**
 * Runs DPO from a resolved config; checkpoints, metrics.jsonl and the final model (or adapters) go to `output`.
 * Problems with files, data or the config throw UsageError naming them.
 * @example await runDpo(orThrow(resolveDpoConfig([{ preset: 'tulu2-dpo', model: 'tulu-sft', data: ['prefs.jsonl'], output: 'out' }])));
 */
export const runDpo = async (c: DpoConfig, opts: { log?: (s: string) => void; progress?: 'auto' | 'bar' | 'lines' | 'none'; stopAfter?: number } = {}): Promise<DpoRun> => {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const tok = await runTokenizer(c.model, c.tokenizer);
  const rows: PrefPair[] = [];
  let skipped = 0;
  for (const f of c.data) {
    const r = await readPrefs(f, { onBadRow: c.onBadRow })();
    if (E.isLeft(r)) throw new UsageError(r.left.message);
    rows.push(...r.right.pairs);
    skipped += r.right.skipped.length;
    for (const s of r.right.skipped.slice(0, 5)) log(`skipped ${s.message}`);
  }
  const enc = encodePairs(tok.tok, rows, { maxSeqLen: c.maxSeqLen, variant: c.variant });
  log(`dpo data: ${rows.length} pairs read (${skipped} bad rows skipped), ${enc.dropped} dropped with an untrained side, ${enc.pairs.length} kept`);
  if (enc.pairs.length === 0) throw new UsageError(`no preference pair left to train on in ${c.data.join(', ')}`);
  const resumeDir = await resumeDirOf(c.resume);
  const tuneLora = !!(c.lora || c.qlora);
  const base = await loadBase(c.model, tuneLora);
  const config: LlamaConfig = base.config;
  checkVocab(tok, c.model, config.vocabSize);
  const mode = c.reference ?? (tuneLora ? 'adapter' : 'frozen');
  const run = tuneLora ? await loraRun(config, base.params, { lora: c.lora, qlora: !!c.qlora, seed: c.seed, model: c.model, resumeDir }) : null;
  if (run) log(`${run.summary} (adapter dropout off for DPO, as TRL's disable_dropout)`);
  // Full fine-tuning: the policy from the checkpoint when resuming, the reference always the model as given.
  let policy = base.params as LlamaParams; // dense: an NF4 base is refused without adapters (loadBase)
  if (!run && resumeDir) {
    const p = await loadLlama(resumeDir)();
    if (E.isLeft(p)) throw new UsageError(p.left.message);
    policy = p.right.params;
  }
  const policyOf = (p: LlamaParams | LoraAdapters, f: LlamaParams<Weight> | null): LlamaParams<Weight> => (run ? run.params(p as LoraAdapters, f!) : (p as LlamaParams));
  const trainable: LlamaParams | LoraAdapters = run ? run.trainable : policy;
  // The frozen tree: the LoRA base, or (full fine-tuning, 'frozen') a separate copy of the reference.
  let frozen: LlamaParams<Weight> | null = run ? run.frozen : null;
  if (!run && mode === 'frozen') {
    const ref = await loadLlama(c.model)();
    if (E.isLeft(ref)) throw new UsageError(ref.left.message);
    frozen = ref.right.params;
  }
  const padId = defaultPadId(tok.tok);
  let cache: RefLogps | null = null, refCacheHit: boolean | undefined;
  if (mode === 'cache') {
    const refParams = run ? disable(run.params(run.trainable, run.frozen)) : base.params;
    const parts = { model: await hashParams(refParams), data: hashPairs(enc.pairs), template: `tulu ${c.variant} max ${c.maxSeqLen}` };
    const dir = c.refCacheDir ?? join(c.output, 'ref-cache');
    const got = await cachedRefLogps(dir, parts, () => computeRefLogps(config, refParams, enc.pairs, { batchSize: c.batchSize, padId, padToMultiple: Math.max(c.padToMultiple, 8) }))();
    if (E.isLeft(got)) throw new UsageError(got.left.message);
    ({ logps: cache, hit: refCacheHit } = got.right);
    log(`reference log-probs ${refCacheHit ? 'reused from' : 'computed into'} ${got.right.file}`);
  }
  type F = LlamaParams<Weight> | null;
  const model: DpoModel<LlamaParams | LoraAdapters, F> = cache || c.loss === 'simpo' ? cachedReference(policyOf)
    : run ? { policy: policyOf, reference: (a, f) => disable(policyOf(a, f)) } : { policy: policyOf, reference: (_p, f) => f! };
  const lossFn = dpoLossFn(config, model, { beta: c.beta, kind: c.loss, labelSmoothing: c.labelSmoothing, gamma: c.gamma, rpoAlpha: c.rpoAlpha });
  const optimizer = adamw({ lr: c.lr, b1: c.b1, b2: c.b2, eps: c.eps, weightDecay: c.weightDecay });
  const init = optimizer.init(trainable);
  const { optState, resume } = resumeDir ? await resumeState(resumeDir, init, log) : { optState: init, resume: undefined };
  const batchOpts = { batchSize: c.batchSize, padId, seed: c.seed, padToMultiple: c.padToMultiple };
  const { perEpoch, totalSteps, at: hostBatch, where } = epochPlan((epoch) => makePrefBatches(enc.pairs, { ...batchOpts, epoch }), c);
  const warmup = warmupFromRatio(totalSteps, c.warmupRatio);
  log(`dpo: ${enc.pairs.length} pairs, ${perEpoch} batches of ${c.batchSize} per epoch, ${totalSteps} steps of ${c.gradAccum} micro-batches, warmup ${warmup}, lr ${c.lr} (${c.schedule}), β ${c.beta}, loss ${c.loss}, reference ${c.loss === 'simpo' ? 'none' : mode}`);
  const r = await trainLoop({
    step: trainStep(lossFn, { optimizer, clipNorm: c.clipNorm }), trainable, optState, frozen,
    batchAt: (i): DpoBatch => { const b = hostBatch(i); return { ...prefBatchTensors(b), ...(cache ? refBatch(cache, b.index) : {}) }; },
    describeBatch: (i) => `${where(i)} (pairs ${Array.from(hostBatch(i).index).join(', ')})`,
    tokensOf: (b) => b.tokens.size, totalSteps, gradAccum: c.gradAccum,
    schedule: makeSchedule(c.schedule, { peak: c.lr, warmupSteps: warmup, totalSteps }),
    output: c.output, saveEvery: c.saveEvery, keepCheckpoints: c.keepCheckpoints, logEvery: c.logEvery, config: c,
    saveModel: saveRunModel(config, tok.path, run),
    key: [0, c.seed], resume, log, progress: opts.progress, stopAfter: opts.stopAfter,
  });
  log(`dpo: ${r.step} steps done; ${run ? 'adapters' : 'model'} in ${c.output}${r.losses.length ? `, last loss ${r.losses[r.losses.length - 1]!.toFixed(4)}` : ''}`);
  return { ...r, totalSteps, ...(refCacheHit !== undefined ? { refCacheHit } : {}) };
};
