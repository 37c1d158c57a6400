// DPO (Tulu 2 stage 2) as a run: the strict run config (io-ts; unknown keys rejected by name), the tulu2-dpo
// preset, and runDpo, which loads model, tokenizer and preference data, sets up the reference (disabled LoRA
// adapters, a frozen copy, or a cache), builds the jitted DPO step and hands it to the shared training loop.

import { basename, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { LlamaConfig } from '../models/config.js';
import type { LlamaParams } from '../models/llama.js';
import { loadLlama, saveLlama } from '../models/load.js';
import { disable, type LoraAdapters } from '../models/lora.js';
import { loadTokenizer } from '../models/tokenizer/index.js';
import { findTokenizer } from '../models/cli-generate.js';
import { UsageError } from '../models/cli-options.js';
import type { Weight } from '../ops/nn.js';
import { copyInto, readOptState, readTrainerState, resolveCheckpoint } from './checkpoint.js';
import { defaultPadId } from './data.js';
import { cachedReference, dpoLossFn, DPO_KINDS, type DpoBatch, type DpoKind, type DpoModel } from './dpo.js';
import { cachedRefLogps, computeRefLogps, hashPairs, hashParams, refBatch, type RefLogps } from './dpo-ref.js';
import { loadBase, loraRun } from './lora-sft.js';
import { numberField, positive, trainFields } from './run-config.js';
import { adamw, type AdamState } from './optim.js';
import { encodePairs, makePrefBatches, prefBatchTensors, readPrefs, type PrefBatch, type PrefPair } from './prefs.js';
import { makeSchedule, warmupFromRatio } from './schedule.js';
import { trainStep } from './step.js';
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
export const parseDpoConfig = (raw: unknown, source: string): E.Either<string, DpoConfigPartial> => {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return E.left(`${source}: expected a JSON object of settings`);
  const unknown = Object.keys(raw).filter((k) => !(DPO_KEYS as string[]).includes(k));
  if (unknown.length) return E.left(`${source}: unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')} (known: ${DPO_KEYS.join(', ')})`);
  const r = DpoConfigPartial.decode(raw);
  if (E.isLeft(r)) {
    const msgs = r.left.map((e) => `${e.context.map((c) => c.key).filter(Boolean).join('.')}: ${e.message ?? `expected ${e.context[e.context.length - 1]?.type.name}, got ${JSON.stringify(e.value)}`}`);
    return E.left(`${source}: ${[...new Set(msgs)].join('; ')}`);
  }
  return E.right(r.right);
};

/** Defaults ← preset ← config file ← flags; then the required fields, epochs xor steps, and the reference mode. */
export const resolveDpoConfig = (layers: readonly DpoConfigPartial[]): E.Either<string, DpoConfig> => {
  const preset = layers.reduce<string | undefined>((p, l) => l.preset ?? p, undefined);
  const merged: DpoConfigPartial = Object.assign({}, DPO_DEFAULTS, preset === 'tulu2-dpo' ? TULU2_DPO : {}, ...layers);
  if (layers.some((l) => l.steps !== undefined) && !layers.some((l) => l.epochs !== undefined)) delete merged.epochs;
  if (merged.steps !== undefined && merged.epochs !== undefined) return E.left('config: give epochs or steps, not both');
  const missing = (['model', 'data', 'output'] as const).filter((k) => merged[k] === undefined);
  if (missing.length) return E.left(`config: missing ${missing.join(', ')}`);
  if (merged.data!.length === 0) return E.left('config: data lists no file');
  if (merged.reference === 'adapter' && !merged.lora && !merged.qlora) return E.left("config: reference 'adapter' needs lora or qlora (the reference is the base under the disabled adapters)");
  if (merged.loss === 'simpo' && merged.reference === 'cache') return E.left("config: simpo uses no reference; drop reference 'cache'");
  return E.right(merged as DpoConfig);
};

export interface DpoRun extends TrainResult<LlamaParams | LoraAdapters, AdamState> { readonly totalSteps: number; readonly refCacheHit?: boolean }

/**
 * Runs DPO from a resolved config; checkpoints, metrics.jsonl and the final model (or adapters) go to `output`.
 * Problems with files, data or the config throw UsageError naming them.
 * @example await runDpo(orThrow(resolveDpoConfig([{ preset: 'tulu2-dpo', model: 'tulu-sft', data: ['prefs.jsonl'], output: 'out' }])));
 */
export const runDpo = async (c: DpoConfig, opts: { log?: (s: string) => void; progress?: 'auto' | 'bar' | 'lines' | 'none'; stopAfter?: number } = {}): Promise<DpoRun> => {
  const log = opts.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const tokPath = c.tokenizer ?? findTokenizer(c.model);
  if (!tokPath) throw new UsageError(`no tokenizer found beside ${c.model}: set tokenizer`);
  const tok = await loadTokenizer(tokPath)();
  if (E.isLeft(tok)) throw new UsageError(tok.left.message);
  const rows: PrefPair[] = [];
  let skipped = 0;
  for (const f of c.data) {
    const r = await readPrefs(f, { onBadRow: c.onBadRow })();
    if (E.isLeft(r)) throw new UsageError(r.left.message);
    rows.push(...r.right.pairs);
    skipped += r.right.skipped.length;
    for (const s of r.right.skipped.slice(0, 5)) log(`skipped ${s.message}`);
  }
  const enc = encodePairs(tok.right, rows, { maxSeqLen: c.maxSeqLen, variant: c.variant });
  log(`dpo data: ${rows.length} pairs read (${skipped} bad rows skipped), ${enc.dropped} dropped with an untrained side, ${enc.pairs.length} kept`);
  if (enc.pairs.length === 0) throw new UsageError(`no preference pair left to train on in ${c.data.join(', ')}`);
  const resumeDir = c.resume ? await resolveCheckpoint(c.resume) : undefined;
  if (resumeDir && E.isLeft(resumeDir)) throw new UsageError(resumeDir.left.message);
  const tuneLora = !!(c.lora || c.qlora);
  const base = await loadBase(c.model, tuneLora);
  const config: LlamaConfig = base.config;
  if (config.vocabSize !== tok.right.vocabSize) throw new UsageError(`tokenizer ${tokPath} has ${tok.right.vocabSize} tokens but model ${c.model} has vocab_size ${config.vocabSize}`);
  const mode = c.reference ?? (tuneLora ? 'adapter' : 'frozen');
  const run = tuneLora ? await loraRun(config, base.params, { ...(c.lora ? { lora: c.lora } : {}), qlora: !!c.qlora, seed: c.seed, model: c.model, ...(resumeDir && E.isRight(resumeDir) ? { resumeDir: resumeDir.right } : {}) }) : null;
  if (run) log(`${run.summary} (adapter dropout off for DPO, as TRL's disable_dropout)`);
  // Full fine-tuning: the policy from the checkpoint when resuming, the reference always the model as given.
  let policy = base.params as LlamaParams; // dense: an NF4 base is refused without adapters (loadBase)
  if (!run && resumeDir && E.isRight(resumeDir)) {
    const p = await loadLlama(resumeDir.right)();
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
  const padId = defaultPadId(tok.right);
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
  const lossFn = dpoLossFn(config, model, { beta: c.beta, kind: c.loss, ...(c.labelSmoothing !== undefined ? { labelSmoothing: c.labelSmoothing } : {}), ...(c.gamma !== undefined ? { gamma: c.gamma } : {}), ...(c.rpoAlpha ? { rpoAlpha: c.rpoAlpha } : {}) });
  const optimizer = adamw({ lr: c.lr, b1: c.b1, b2: c.b2, eps: c.eps, weightDecay: c.weightDecay });
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
  const batchOpts = { batchSize: c.batchSize, padId, seed: c.seed, padToMultiple: c.padToMultiple };
  const perEpoch = makePrefBatches(enc.pairs, { ...batchOpts, epoch: 0 }).length;
  const totalSteps = c.steps ?? (c.epochs ?? 1) * Math.ceil(perEpoch / c.gradAccum);
  let held: { epoch: number; batches: PrefBatch[] } | null = null;
  const hostBatch = (i: number): PrefBatch => {
    const epoch = Math.floor(i / perEpoch);
    if (held?.epoch !== epoch) held = { epoch, batches: makePrefBatches(enc.pairs, { ...batchOpts, epoch }) };
    return held.batches[i % perEpoch]!;
  };
  const warmup = warmupFromRatio(totalSteps, c.warmupRatio);
  log(`dpo: ${enc.pairs.length} pairs, ${perEpoch} batches of ${c.batchSize} per epoch, ${totalSteps} steps of ${c.gradAccum} micro-batches, warmup ${warmup}, lr ${c.lr} (${c.schedule}), β ${c.beta}, loss ${c.loss}, reference ${c.loss === 'simpo' ? 'none' : mode}`);
  const r = await trainLoop({
    step: trainStep(lossFn, { optimizer, clipNorm: c.clipNorm }), trainable, optState, frozen,
    batchAt: (i): DpoBatch => { const b = hostBatch(i); return { ...prefBatchTensors(b), ...(cache ? refBatch(cache, b.index) : {}) }; },
    describeBatch: (i) => `epoch ${Math.floor(i / perEpoch) + 1}, batch ${(i % perEpoch) + 1} (pairs ${Array.from(hostBatch(i).index).join(', ')})`,
    tokensOf: (b) => b.tokens.size, totalSteps, gradAccum: c.gradAccum,
    schedule: makeSchedule(c.schedule, { peak: c.lr, warmupSteps: warmup, totalSteps }),
    output: c.output, saveEvery: c.saveEvery, keepCheckpoints: c.keepCheckpoints ?? 1, logEvery: c.logEvery, config: c,
    saveModel: async (dir, p) => {
      if (run) await run.save(dir, p as LoraAdapters);
      else {
        const s = await saveLlama(dir, config, p as LlamaParams)();
        if (E.isLeft(s)) throw new Error(s.left.message);
      }
      await copyInto(tokPath, dir, tokPath.endsWith('.json') ? 'tokenizer.json' : basename(tokPath).endsWith('.model') ? 'tokenizer.model' : basename(tokPath));
    },
    key: [0, c.seed], ...(resume ? { resume } : {}), log, progress: opts.progress ?? 'auto',
    ...(opts.stopAfter !== undefined ? { stopAfter: opts.stopAfter } : {}),
  });
  log(`dpo: ${r.step} steps done; ${run ? 'adapters' : 'model'} in ${c.output}${r.losses.length ? `, last loss ${r.losses[r.losses.length - 1]!.toFixed(4)}` : ''}`);
  return { ...r, totalSteps, ...(refCacheHit !== undefined ? { refCacheHit } : {}) };
};
