// LoRA and QLoRA for the SFT run (open-instruct `--use_lora` / `--use_qlora`, RECIPES-FACTS §4.2): the strict
// `lora` setting (an object, or the flag's "r=64,alpha=16,dropout=0.1,targets=wq+wv" string), and the setup that
// turns a loaded base into (trainable adapters, frozen base, adapted params, adapter-folder saving).

import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { Tensor } from '../core/tensor.js';
import type { LlamaConfig } from '../models/config.js';
import type { LlamaParams } from '../models/llama.js';
import { lora, LORA_TARGETS, withLora, type LoraAdapters, type LoraTarget } from '../models/lora.js';
import { quantizeBase } from '../models/nf4.js';
import { loadAdapters, saveAdapters } from '../models/peft.js';
import { HF_NAMES, loadLlama } from '../models/load.js';
import { isBnb4bit, loadBnb4bit } from '../models/bnb.js';
import { UsageError } from '../models/cli-options.js';
import { key as makeKey, type Key } from '../ops/random.js';
import type { Weight } from '../ops/nn.js';

export interface LoraSettings {
  readonly r: number;
  readonly alpha: number;
  readonly dropout?: number;
  readonly targets?: readonly LoraTarget[];
  readonly rslora?: boolean;
}

/** Tulu 2's LoRA (open-instruct defaults): r 64, α 16, dropout 0.1, all seven projections. */
export const TULU2_LORA: LoraSettings = { r: 64, alpha: 16, dropout: 0.1 };

const LORA_KEYS = ['r', 'alpha', 'dropout', 'targets', 'rslora'];
/** A target by our name (wq) or Hugging Face's module name (q_proj). */
const targetOf = (s: string): LoraTarget | undefined =>
  (LORA_TARGETS as readonly string[]).includes(s) ? (s as LoraTarget) : LORA_TARGETS.find((tg) => HF_NAMES.layer[tg].split('.')[1] === s);

/** "r=64,alpha=16,dropout=0.1,targets=wq+wv,rslora=true" → its fields (values still unchecked). */
const fromString = (s: string): E.Either<string, Record<string, unknown>> => {
  const out: Record<string, unknown> = {};
  // Parts are trimmed, so a value is never spaces alone: empty is the one value Number() would misread (as 0).
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-zA-Z_]+)=(.*)$/.exec(part);
    if (!m) return E.left(`'${part}' is not key=value`);
    const [k, v] = [m[1]!, m[2]!];
    out[k] = k === 'targets' ? v.split(/[+ ]/).filter(Boolean) : k === 'rslora' ? (v === 'true' ? true : v === 'false' ? false : v) : v === '' ? Number.NaN : Number(v);
  }
  return E.right(out);
};

/** Checks a lora setting: unknown keys by name, r a positive integer, α finite, dropout in [0, 1), known targets. */
export const checkLora = (u: unknown): E.Either<string, LoraSettings> => {
  const raw = typeof u === 'string' ? fromString(u) : typeof u === 'object' && u !== null && !Array.isArray(u) ? E.right(u as Record<string, unknown>) : E.left('expected an object {r, alpha, dropout?, targets?, rslora?} or "r=…,alpha=…"');
  if (E.isLeft(raw)) return raw;
  const o = raw.right;
  const unknown = Object.keys(o).filter((k) => !LORA_KEYS.includes(k));
  if (unknown.length) return E.left(`unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')} (known: ${LORA_KEYS.join(', ')})`);
  const { r, alpha, dropout, targets, rslora } = o;
  if (typeof r !== 'number' || !Number.isSafeInteger(r) || r <= 0) return E.left(`r must be an integer > 0, got ${JSON.stringify(r)}`);
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) return E.left(`alpha must be a number, got ${JSON.stringify(alpha)}`);
  if (dropout !== undefined && !(typeof dropout === 'number' && dropout >= 0 && dropout < 1)) return E.left(`dropout must be in [0, 1), got ${JSON.stringify(dropout)}`);
  if (rslora !== undefined && typeof rslora !== 'boolean') return E.left(`rslora must be true or false, got ${JSON.stringify(rslora)}`);
  let tg: LoraTarget[] | undefined;
  if (targets !== undefined) {
    if (!Array.isArray(targets) || targets.length === 0) return E.left('targets must be a non-empty list');
    tg = [];
    for (const x of targets) {
      const v = typeof x === 'string' ? targetOf(x) : undefined;
      if (!v) return E.left(`unknown target ${JSON.stringify(x)} (known: ${LORA_TARGETS.join(' ')} or q_proj k_proj v_proj o_proj gate_proj down_proj up_proj)`);
      tg.push(v);
    }
  }
  return E.right({ r, alpha, ...(dropout !== undefined ? { dropout } : {}), ...(tg ? { targets: tg } : {}), ...(rslora !== undefined ? { rslora } : {}) });
};

/** io-ts codec of the `lora` run setting (strict). */
export const LoraSetting = new t.Type<LoraSettings, LoraSettings, unknown>('LoraSettings', (u): u is LoraSettings => E.isRight(checkLora(u)),
  (u, c) => { const r = checkLora(u); return E.isRight(r) ? t.success(r.right) : t.failure(u, c, r.left); }, (x) => x);

/** What a LoRA run trains and how it reads and saves it. */
export interface LoraRun {
  readonly trainable: LoraAdapters;
  readonly frozen: LlamaParams<Weight>;
  /** The adapted parameters; with a key, dropout is drawn from it. */
  readonly params: (a: LoraAdapters, base: LlamaParams<Weight>, dropoutKey?: Tensor) => LlamaParams<Weight>;
  readonly save: (dir: string, a: LoraAdapters) => Promise<void>;
  readonly summary: string;
}

/**
 * The base a run starts from: a Hugging Face folder, or a bitsandbytes 4-bit ("bnb-4bit") one whose NF4 projections
 * load as they are. Only adapters train on an NF4 base: a 4-bit model without `lora` or `qlora` is an error.
 * @example const { config, params } = await loadBase('llama-2-7b-bnb-4bit', true);
 */
export const loadBase = async (dir: string, adapters: boolean): Promise<{ config: LlamaConfig; params: LlamaParams<Weight>; nf4: boolean }> => {
  const bnb = await isBnb4bit(dir)();
  if (E.isLeft(bnb)) throw new UsageError(bnb.left.message);
  if (bnb.right && !adapters) throw new UsageError(`${dir} is a bitsandbytes 4-bit checkpoint: its NF4 weights are frozen; train adapters on it with qlora (or lora)`);
  const loaded = bnb.right ? await loadBnb4bit(dir)() : await loadLlama(dir)();
  if (E.isLeft(loaded)) throw new UsageError(loaded.left.message);
  return { ...loaded.right, nf4: bnb.right };
};

/**
 * Adapters for a loaded base (fresh, or read from a resumed adapter checkpoint), the base quantised to NF4 first
 * for QLoRA.
 * @example const run = await loraRun(config, params, { lora: TULU2_LORA, qlora: true, seed: 42 });
 */
export const loraRun = async (_c: LlamaConfig, dense: LlamaParams<Weight>, o: { lora?: LoraSettings; qlora?: boolean; seed: number; resumeDir?: string; model?: string }): Promise<LoraRun> => {
  const s = o.lora ?? TULU2_LORA;
  const frozen: LlamaParams<Weight> = o.qlora ? await quantizeBase(dense) : dense;
  let trainable: LoraAdapters;
  if (o.resumeDir) {
    const r = await loadAdapters(o.resumeDir, frozen)();
    if (E.isLeft(r)) throw new Error(r.left.message);
    trainable = r.right;
  } else {
    trainable = lora(frozen, { ...s, key: makeKey(o.seed) });
  }
  const count = trainable.layers.reduce((n, l) => n + Object.values(l).reduce((m, p) => m + p!.A.size + p!.B.size, 0), 0);
  return {
    trainable, frozen,
    params: (a, base, k) => withLora(base, a, k ? { dropoutKey: k as Key } : {}),
    save: async (dir, a) => {
      const w = await saveAdapters(dir, a, o.model ? { baseModel: o.model } : {})();
      if (E.isLeft(w)) throw new Error(w.left.message);
    },
    summary: `${o.qlora ? 'QLoRA (NF4 base, double quantisation)' : 'LoRA'}: r ${trainable.r}, alpha ${trainable.alpha}, dropout ${trainable.dropout}, targets ${trainable.targets.join(' ')}; ${count} trainable parameters`,
  };
};
