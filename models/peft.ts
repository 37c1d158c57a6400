// LoRA adapters as PEFT folders (`adapter_config.json` + `adapter_model.safetensors`, RECIPES-FACTS §6.1): PEFT
// loads what camelid writes and camelid loads what PEFT writes. Every mismatch with the base model is a Left that
// names the file and the key.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import * as t from 'io-ts';
import { isFloat } from '../core/dtype.js';
import { data } from '../core/backend.js';
import { fmt, sameShape } from '../core/shape.js';
import type { Tensor } from '../core/tensor.js';
import { fromStorage } from '../ops/create.js';
import { cast } from '../ops/elementwise.js';
import { weightShape, type Weight } from '../ops/nn.js';
import { configError, reportIoTsErrors } from './config.js';
import type { LlamaParams } from './llama.js';
import { HF_NAMES, type LoadError } from './load.js';
import { LORA_TARGETS, type LoraAdapters, type LoraPair, type LoraTarget } from './lora.js';
import { checkpointError, openSafetensors, writeSafetensors } from './safetensors.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

/** Our target ↔ the module name PEFT's `target_modules` uses (the last part of the Hugging Face name). */
const hfModule = (tg: LoraTarget): string => HF_NAMES.layer[tg].split('.')[1]!;
const fromHfModule = new Map(LORA_TARGETS.map((tg) => [hfModule(tg), tg]));

/** PEFT's key of an adapter matrix, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight. */
export const peftKey = (layer: number, tg: LoraTarget, m: 'A' | 'B'): string =>
  `base_model.model.model.layers.${layer}.${HF_NAMES.layer[tg].replace(/\.weight$/, '')}.lora_${m}.weight`;
const KEY = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_(A|B)\.weight$/;

/** adapter_config.json as PEFT writes it (lenient: PEFT's other fields are ignored). */
export const AdapterConfig = t.intersection([
  t.type({ r: t.number, lora_alpha: t.number, target_modules: t.union([t.array(t.string), t.string]) }),
  t.partial({
    lora_dropout: t.union([t.number, t.null]), bias: t.union([t.string, t.null]), use_rslora: t.union([t.boolean, t.null]),
    fan_in_fan_out: t.union([t.boolean, t.null]), peft_type: t.union([t.string, t.null]), task_type: t.union([t.string, t.null]),
  }),
]);
export type AdapterConfig = t.TypeOf<typeof AdapterConfig>;

const asF32 = async (x: Tensor): Promise<Float32Array> => {
  const d = await data(x);
  return d instanceof Float32Array ? d : Float32Array.from(d);
};

/**
 * Writes `adapter_config.json` and `adapter_model.safetensors` (F32) into `dir` (created if needed).
 * @example await saveAdapters('out/adapter', adapters, { baseModel: 'meta-llama/Llama-2-7b-hf' })();
 */
export const saveAdapters = (dir: string, a: LoraAdapters, opts: { baseModel?: string } = {}): TaskEither<LoadError, void> => async () => {
  const file = join(dir, ADAPTER_CONFIG);
  const cfg = {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: opts.baseModel ?? null, r: a.r, lora_alpha: a.alpha,
    lora_dropout: a.dropout, target_modules: a.targets.map(hfModule), bias: 'none', use_rslora: a.rslora, fan_in_fan_out: false,
    inference_mode: true, init_lora_weights: true, modules_to_save: null, layers_to_transform: null,
  };
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(file, JSON.stringify(cfg, null, 2) + '\n');
  } catch (e) {
    return E.left(configError(file, [], `cannot write (${e instanceof Error ? e.message : String(e)})`));
  }
  const tensors = a.layers.flatMap((l, i) => LORA_TARGETS.flatMap((tg) => {
    const p = l[tg];
    return p ? (['A', 'B'] as const).map((m) => ({ name: peftKey(i, tg, m), dtype: 'F32' as const, shape: p[m].shape, data: () => asF32(p[m]) })) : [];
  }));
  return writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors)();
};

const readConfig = async (file: string): Promise<E.Either<LoadError, AdapterConfig>> => {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    return E.left(configError(file, [], `cannot read adapter config (${e instanceof Error ? e.message : String(e)})`));
  }
  const r = AdapterConfig.decode(json);
  if (E.isLeft(r)) return E.left(configError(file, reportIoTsErrors(r.left), 'invalid adapter config'));
  const c = r.right;
  const bad = (field: string, expected: string, got: unknown) => E.left(configError(file, [{ field, expected, got: JSON.stringify(got) }], 'unsupported adapter config'));
  if (!Number.isInteger(c.r) || c.r <= 0) return bad('r', 'a positive integer', c.r);
  if (c.peft_type != null && c.peft_type !== 'LORA') return bad('peft_type', '"LORA"', c.peft_type);
  if (c.bias != null && c.bias !== 'none') return bad('bias', '"none" (bias adapters are not supported)', c.bias);
  if (c.fan_in_fan_out) return bad('fan_in_fan_out', 'false (weights stored (out, in))', c.fan_in_fan_out);
  const mods = typeof c.target_modules === 'string' ? [c.target_modules] : c.target_modules;
  const unknown = mods.find((m) => !fromHfModule.has(m));
  if (unknown !== undefined) return bad('target_modules', `module names among ${[...fromHfModule.keys()].join(', ')}`, unknown);
  return E.right(c);
};

/**
 * Reads a PEFT LoRA folder for `base`: every adapter's key, layer and shape checked against the base model
 * (errors name the key); adapters take the base's float dtype.
 * @example const adapters = orThrow(await loadAdapters('out/adapter', base)());
 */
export const loadAdapters = (dir: string, base: LlamaParams<Weight>): TaskEither<LoadError, LoraAdapters> => async () => {
  const c = await readConfig(join(dir, ADAPTER_CONFIG));
  if (E.isLeft(c)) return c;
  const cfg = c.right;
  const targets = LORA_TARGETS.filter((tg) => (typeof cfg.target_modules === 'string' ? [cfg.target_modules] : cfg.target_modules).includes(hfModule(tg)));
  const file = join(dir, ADAPTER_WEIGHTS);
  const f = await openSafetensors(file)();
  if (E.isLeft(f)) return f;
  const st = f.right;
  const dtype = isFloat(base.tokEmb.dtype) ? base.tokEmb.dtype : 'f32';
  try {
    const want = new Set(base.layers.flatMap((_, i) => targets.flatMap((tg) => [peftKey(i, tg, 'A'), peftKey(i, tg, 'B')])));
    for (const info of st.tensors) {
      const m = KEY.exec(info.name);
      if (!m) return E.left(checkpointError(file, 'not a LoRA adapter key of a Llama model (base_model.model.model.layers.{i}.….lora_A/B.weight)', info.name));
      const [layer, tg] = [Number(m[1]), fromHfModule.get(m[3]!)];
      if (!tg || HF_NAMES.layer[tg] !== `${m[2]}.${m[3]}.weight`) return E.left(checkpointError(file, `unknown target module '${m[2]}.${m[3]}'`, info.name));
      if (layer >= base.layers.length) return E.left(checkpointError(file, `layer ${layer} does not exist: the base model has ${base.layers.length} layers`, info.name));
      if (!want.has(info.name)) return E.left(checkpointError(file, `target '${m[3]}' is not in the config's target_modules`, info.name));
      const [out, inn] = weightShape(base.layers[layer]![tg]) as [number, number];
      const shape = m[4] === 'A' ? [cfg.r, inn] : [out, cfg.r];
      if (!sameShape(info.shape, shape)) return E.left(checkpointError(file, `expected ${fmt(shape)} for r = ${cfg.r} and a base weight ${fmt([out, inn])}, file has ${fmt(info.shape)}`, info.name));
    }
    const layers: Partial<Record<LoraTarget, LoraPair>>[] = [];
    for (let i = 0; i < base.layers.length; i++) {
      const l: Partial<Record<LoraTarget, LoraPair>> = {};
      for (const tg of targets) {
        const pair: Partial<Record<'A' | 'B', Tensor>> = {};
        for (const m of ['A', 'B'] as const) {
          const name = peftKey(i, tg, m);
          const info = st.info(name);
          if (!info) return E.left(checkpointError(file, `missing: target_modules lists ${hfModule(tg)}`, name));
          const arr = await st.read(name)();
          if (E.isLeft(arr)) return arr;
          pair[m] = cast(fromStorage(arr.right, info.shape, 'f32'), dtype);
        }
        l[tg] = { A: pair.A!, B: pair.B! };
      }
      layers.push(l);
    }
    return E.right({ r: cfg.r, alpha: cfg.lora_alpha, dropout: cfg.lora_dropout ?? 0, rslora: cfg.use_rslora ?? false, targets, layers });
  } finally {
    await st.close();
  }
};
