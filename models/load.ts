// Loading and saving Llama parameters: a Hugging Face folder (config.json + safetensors, single or sharded) or a
// llama2.c `.bin`, into the LlamaParams tree; saving as config.json + model.safetensors (F32). The one table that
// maps our names to Hugging Face names lives here. Every problem is a Left naming the file and the tensor.

import { mkdir, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { fmt, sameShape, type Shape } from '../core/shape.js';
import type { Tensor } from '../core/tensor.js';
import { data } from '../core/backend.js';
import { fromStorage } from '../ops/create.js';
import { configError, loadLlamaConfig, toHfConfig, type ConfigError, type LlamaConfig } from './config.js';
import { layerKeys, layerShapes, topShapes, type LayerKey, type LlamaLayer, type LlamaParams } from './llama.js';
import { readLlama2c } from './llama2c.js';
import { checkpointError, openCheckpoint, writeSafetensors, type CheckpointError } from './safetensors.js';
import { ioProblem } from './safetensors/header.js';

export type LoadError = ConfigError | CheckpointError;

/** Our parameter names ↔ Hugging Face `LlamaForCausalLM` tensor names: the only place the latter appear. */
export const HF_NAMES = {
  tokEmb: 'model.embed_tokens.weight',
  norm: 'model.norm.weight',
  out: 'lm_head.weight',
  layer: {
    attnNorm: 'input_layernorm.weight',
    wq: 'self_attn.q_proj.weight',
    wk: 'self_attn.k_proj.weight',
    wv: 'self_attn.v_proj.weight',
    wo: 'self_attn.o_proj.weight',
    ffnNorm: 'post_attention_layernorm.weight',
    w1: 'mlp.gate_proj.weight',
    w2: 'mlp.down_proj.weight',
    w3: 'mlp.up_proj.weight',
  } satisfies Record<LayerKey, string>,
} as const;

const layerName = (i: number, k: LayerKey) => `model.layers.${i}.${HF_NAMES.layer[k]}`;

/** Every tensor a config implies, as [Hugging Face name, shape, where it goes in the tree]. */
const plan = (c: LlamaConfig): { name: string; shape: Shape; put: (p: Building, t: Tensor) => void }[] => {
  const top = topShapes(c);
  const ls = layerShapes(c);
  return [
    { name: HF_NAMES.tokEmb, shape: top.tokEmb, put: (p, t) => { p.tokEmb = t; } },
    ...Array.from({ length: c.nLayers }, (_, i) => layerKeys.map((k) => ({ name: layerName(i, k), shape: ls[k], put: (p: Building, t: Tensor) => { p.layers[i]![k] = t; } }))).flat(),
    { name: HF_NAMES.norm, shape: top.norm, put: (p, t) => { p.norm = t; } },
    ...(top.out ? [{ name: HF_NAMES.out, shape: top.out, put: (p: Building, t: Tensor) => { p.out = t; } }] : []),
  ];
};

interface Building { tokEmb?: Tensor; norm?: Tensor; out?: Tensor; layers: Partial<Record<LayerKey, Tensor>>[] }

/** Tensors a checkpoint may hold beyond the plan: RoPE tables of old exports; lm_head when tied. */
const harmless = (c: LlamaConfig, name: string) => /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/.test(name) || (c.tieEmbeddings && name === HF_NAMES.out);

interface Source {
  readonly file: string;
  readonly names: readonly string[];
  shape(name: string): Shape | undefined;
  read(name: string): Promise<E.Either<CheckpointError, Float32Array>>;
}

const assemble = async (c: LlamaConfig, src: Source): Promise<E.Either<LoadError, LlamaParams>> => {
  const wanted = plan(c);
  const known = new Set(wanted.map((w) => w.name));
  for (const name of src.names) {
    if (!known.has(name) && !harmless(c, name)) return E.left(checkpointError(src.file, 'unexpected tensor: not part of a Llama model with this config', name));
  }
  for (const w of wanted) {
    const s = src.shape(w.name);
    if (s === undefined) return E.left(checkpointError(src.file, `missing (expected ${fmt(w.shape)} from config)`, w.name));
    if (!sameShape(s, w.shape)) return E.left(checkpointError(src.file, `expected ${fmt(w.shape)} from config, file has ${fmt(s)}`, w.name));
  }
  const p: Building = { layers: Array.from({ length: c.nLayers }, () => ({})) };
  for (const w of wanted) {
    const arr = await src.read(w.name);
    if (E.isLeft(arr)) return arr;
    w.put(p, fromStorage(arr.right, w.shape, 'f32'));
  }
  return E.right({ tokEmb: p.tokEmb!, layers: p.layers as LlamaLayer[], norm: p.norm!, ...(p.out ? { out: p.out } : {}) });
};

const fromHf = async (dir: string, weights: string): Promise<E.Either<LoadError, { config: LlamaConfig; params: LlamaParams }>> => {
  const cfg = await loadLlamaConfig(dir)();
  if (E.isLeft(cfg)) return cfg;
  const ckpt = await openCheckpoint(weights)();
  if (E.isLeft(ckpt)) return ckpt;
  const ck = ckpt.right;
  try {
    const params = await assemble(cfg.right, {
      file: ck.path, names: ck.tensors.map((t) => t.name), shape: (n) => ck.info(n)?.shape, read: (n) => ck.read(n)(),
    });
    return E.isLeft(params) ? params : E.right({ config: cfg.right, params: params.right });
  } finally {
    await ck.close();
  }
};

const fromLlama2c = async (file: string): Promise<E.Either<LoadError, { config: LlamaConfig; params: LlamaParams }>> => {
  const r = await readLlama2c(file)();
  if (E.isLeft(r)) return r;
  const { config, tensors } = r.right;
  const params = await assemble(config, {
    file, names: [...tensors.keys()], shape: (n) => tensors.get(n)?.shape,
    read: async (n) => E.right(tensors.get(n)!.data),
  });
  return E.isLeft(params) ? params : E.right({ config, params: params.right });
};

/**
 * Loads a Llama model: a Hugging Face folder (config.json + model.safetensors or a sharded index), one of its
 * safetensors files, or a llama2.c `.bin`. Parameters come back as f32 tensors in Hugging Face layout.
 * @example
 * const { config, params } = orThrow(await loadLlama('../shared/fixtures/stories260K/hf')());
 * const logits = forward(config, params, tensor([[1, 403, 407]], { dtype: 'i32' }));
 */
export const loadLlama = (path: string): TaskEither<LoadError, { config: LlamaConfig; params: LlamaParams }> => async () => {
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (e) {
    return E.left(configError(path, [], `cannot open model (${ioProblem(e)})`));
  }
  if (isDir) return fromHf(path, path);
  if (path.endsWith('.bin')) return fromLlama2c(path);
  if (path.endsWith('.safetensors') || path.endsWith('.index.json')) return fromHf(dirname(path), path);
  return E.left(configError(path, [], `cannot tell the format of '${basename(path)}' (expected a folder, a .safetensors, a .index.json or a llama2.c .bin)`));
};

/** Our tree as Hugging Face-named tensors, in checkpoint order (tied models write no lm_head). */
export const toHfTensors = (c: LlamaConfig, params: LlamaParams): { name: string; tensor: Tensor }[] => [
  { name: HF_NAMES.tokEmb, tensor: params.tokEmb },
  ...params.layers.flatMap((l, i) => layerKeys.map((k) => ({ name: layerName(i, k), tensor: l[k] }))),
  { name: HF_NAMES.norm, tensor: params.norm },
  ...(!c.tieEmbeddings && params.out ? [{ name: HF_NAMES.out, tensor: params.out }] : []),
];

const asF32 = async (t: Tensor): Promise<Float32Array> => {
  const d = await data(t);
  return d instanceof Float32Array && t.dtype === 'f32' ? d : Float32Array.from(d);
};

/**
 * Writes config.json and model.safetensors (F32) into `dir` (created if needed); `loadLlama(dir)` gives the same
 * config and bit-identical f32 parameters back.
 * @example await saveLlama('out/tiny', cfg, params)();
 */
export const saveLlama = (dir: string, c: LlamaConfig, params: LlamaParams): TaskEither<LoadError, void> => async () => {
  const file = join(dir, 'config.json');
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(file, JSON.stringify(toHfConfig(c), null, 2) + '\n');
  } catch (e) {
    return E.left(configError(file, [], `cannot write (${ioProblem(e)})`));
  }
  const tensors = toHfTensors(c, params).map(({ name, tensor }) => ({ name, dtype: 'F32' as const, shape: tensor.shape, data: () => asF32(tensor) }));
  return writeSafetensors(join(dir, 'model.safetensors'), tensors)();
};
