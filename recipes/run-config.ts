// What every recipe run's config shares (SFT, DPO): strict number codecs whose failures name the field; the fields
// of the model, the data's shape, the optimizer, the schedule, checkpoints and adapters; and how layers of settings
// (a config file, the flags) are checked and merged over the defaults and a preset. Each recipe adds its own fields
// around these (recipes/sft.ts, recipes/dpo-run.ts).

import * as E from 'fp-ts/lib/Either.js';
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

/** "unknown key 'a'" or "unknown keys 'a', 'b'". */
export const unknownKeys = (keys: readonly string[]): string => `unknown key${keys.length > 1 ? 's' : ''} ${keys.map((k) => `'${k}'`).join(', ')}`;

/** An intersection, bare or under t.exact: its members' context entries are keyed by their index. */
const joins = (c: unknown): boolean => c instanceof t.IntersectionType || (c instanceof t.ExactType && joins(c.type));

/**
 * Checks one layer of a run's settings (a config file, the flags): an object, no unknown key (named, with the known
 * ones), then every field by the codec, each failure as `path: why`.
 * @example parseLayer(SftConfigPartial, SFT_KEYS, { lerning_rate: 1 }, 'cfg.json') // Left: cfg.json: unknown key 'lerning_rate' (known: …)
 */
export const parseLayer = <A>(codec: t.Decoder<unknown, A>, keys: readonly string[], raw: unknown, source: string): E.Either<string, A> => {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return E.left(`${source}: expected a JSON object of settings`);
  const unknown = Object.keys(raw).filter((k) => !keys.includes(k));
  if (unknown.length) return E.left(`${source}: ${unknownKeys(unknown)} (known: ${keys.join(', ')})`);
  const r = codec.decode(raw);
  if (E.isRight(r)) return r;
  // The path by keys, less the member index an intersection adds (data.0.path, not data.0.0.path).
  const msgs = r.left.map((e) => `${e.context.filter((c, i) => c.key && !joins(e.context[i - 1]?.type)).map((c) => c.key).join('.')}: ${e.message ?? `expected ${e.context[e.context.length - 1]!.type.name}, got ${JSON.stringify(e.value)}`}`);
  return E.left(`${source}: ${[...new Set(msgs)].join('; ')}`);
};

/** What mergeLayers reads of a layer. */
export interface RunLayer { readonly preset?: string; readonly epochs?: number; readonly steps?: number; readonly model?: string; readonly output?: string; readonly data?: readonly unknown[] }

/**
 * Defaults ← the preset a layer names (the last one) ← the layers in order; a run given `steps` in a layer counts
 * steps (epochs from the defaults or the preset are dropped, epochs in a layer too are an error); model, output
 * and at least one data file are required.
 * @example mergeLayers(SFT_DEFAULTS, { tulu2: TULU2_SFT }, [fileLayer, flagLayer])
 */
export const mergeLayers = <L extends RunLayer>(defaults: L, presets: Readonly<Record<string, L>>, layers: readonly L[]): E.Either<string, L> => {
  const preset = layers.reduce<string | undefined>((p, l) => l.preset ?? p, undefined);
  const merged: L = Object.assign({}, defaults, preset ? presets[preset] : {}, ...layers);
  if (layers.some((l) => l.steps !== undefined) && !layers.some((l) => l.epochs !== undefined)) delete (merged as { epochs?: number }).epochs;
  if (merged.steps !== undefined && merged.epochs !== undefined) return E.left('config: give epochs or steps, not both');
  const missing = (['model', 'data', 'output'] as const).filter((k) => merged[k] === undefined);
  if (missing.length) return E.left(`config: missing ${missing.join(', ')}`);
  if (merged.data!.length === 0) return E.left('config: data lists no file');
  return E.right(merged);
};
