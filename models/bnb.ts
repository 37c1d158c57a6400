// Hugging Face's bitsandbytes 4-bit serialisation (bitsandbytes `QuantState.as_dict(packed=True)`): per quantised
// weight `….weight` (U8, packed codes, shape (⌈n/2⌉, 1)), `….weight.absmax` (U8 codes when nested, else F32),
// `….weight.quant_map`, `….weight.nested_absmax`, `….weight.nested_quant_map`, and the JSON blob
// `….weight.quant_state.bitsandbytes__nf4` (U8 bytes). Reads "bnb-4bit" Llama checkpoints; writes the same layout.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import * as t from 'io-ts';
import { data } from '../core/backend.js';
import { fmt, numel, sameShape } from '../core/shape.js';
import { isTensor, type Tensor } from '../core/tensor.js';
import { fromStorage } from '../ops/create.js';
import type { Weight } from '../ops/nn.js';
import { configError, loadLlamaConfig, toHfConfig, type LlamaConfig } from './config.js';
import { layerKeys, layerShapes, topShapes, type LayerKey, type LlamaLayer, type LlamaParams } from './llama.js';
import { HF_NAMES, type LoadError } from './load.js';
import { nf4Weight, type Nf4Quantized, type Nf4Weight } from './nf4.js';
import { checkpointError, openCheckpoint, writeSafetensors, type Checkpoint, type TensorToWrite } from './safetensors.js';

const QS = '.quant_state.bitsandbytes__nf4';

/** The JSON blob of a quantised weight (bitsandbytes' non-tensor QuantState fields). */
export const BnbQuantState = t.intersection([
  t.type({ quant_type: t.literal('nf4'), blocksize: t.number, shape: t.array(t.number) }),
  t.partial({ dtype: t.string, nested_blocksize: t.number, nested_offset: t.number, nested_dtype: t.string }),
]);

/** The tensors one NF4 weight is stored as, under `name` (e.g. model.layers.0.self_attn.q_proj.weight). */
export const bnbTensors = (name: string, q: Nf4Quantized): TensorToWrite[] => {
  const state: Record<string, unknown> = { quant_type: 'nf4', blocksize: q.blockSize, dtype: 'bfloat16', shape: q.shape };
  if (q.nested) Object.assign(state, { nested_blocksize: q.nested.blockSize, nested_dtype: 'float32', nested_offset: q.nested.offset });
  const blob = new TextEncoder().encode(JSON.stringify(state));
  const f32 = (n: string, a: Float32Array): TensorToWrite => ({ name: n, dtype: 'F32', shape: [a.length], data: a });
  return [
    { name, dtype: 'U8', shape: [q.packed.length, 1], data: q.packed },
    q.nested ? { name: `${name}.absmax`, dtype: 'U8', shape: [q.nested.codes.length], data: q.nested.codes } : f32(`${name}.absmax`, q.absmax!),
    f32(`${name}.quant_map`, q.quantMap),
    ...(q.nested ? [f32(`${name}.nested_absmax`, q.nested.absmax), f32(`${name}.nested_quant_map`, q.nested.quantMap)] : []),
    { name: `${name}${QS}`, dtype: 'U8', shape: [blob.length], data: blob },
  ];
};

/** Reads one NF4 weight's tensors from a checkpoint, checked against the shape the model expects. */
export const readBnb = async (ck: Checkpoint, name: string, want: readonly number[]): Promise<E.Either<LoadError, Nf4Quantized>> => {
  const raw = async (n: string) => {
    if (!ck.info(n)) return E.left(checkpointError(ck.path, 'missing (part of a bitsandbytes 4-bit weight)', n));
    return ck.read(n, { as: 'raw' })();
  };
  const u8 = async (n: string): Promise<E.Either<LoadError, Uint8Array>> => {
    const r = await raw(n);
    if (E.isLeft(r)) return r;
    return r.right instanceof Uint8Array ? E.right(r.right) : E.left(checkpointError(ck.path, `expected U8, file has ${ck.info(n)!.dtype}`, n));
  };
  const f32 = async (n: string): Promise<E.Either<LoadError, Float32Array>> => (ck.info(n) ? ck.read(n)() : E.left(checkpointError(ck.path, 'missing (part of a bitsandbytes 4-bit weight)', n)));
  const blob = await u8(`${name}${QS}`);
  if (E.isLeft(blob)) return blob;
  let json: unknown;
  try { json = JSON.parse(new TextDecoder().decode(blob.right)); } catch { return E.left(checkpointError(ck.path, 'quant state is not JSON', `${name}${QS}`)); }
  const st = BnbQuantState.decode(json);
  if (E.isLeft(st)) return E.left(checkpointError(ck.path, `quant state must hold quant_type "nf4", blocksize and shape, got ${JSON.stringify(json)}`, `${name}${QS}`));
  const s = st.right;
  if (!sameShape(s.shape, want)) return E.left(checkpointError(ck.path, `quant state shape ${fmt(s.shape)}, the model expects ${fmt(want)}`, `${name}${QS}`));
  const n = numel(want), nBlocks = Math.ceil(n / s.blocksize);
  const packed = await u8(name);
  if (E.isLeft(packed)) return packed;
  if (packed.right.length !== Math.ceil(n / 2)) return E.left(checkpointError(ck.path, `${packed.right.length} packed bytes, ${fmt(want)} needs ${Math.ceil(n / 2)}`, name));
  const quantMap = await f32(`${name}.quant_map`);
  if (E.isLeft(quantMap)) return quantMap;
  if (quantMap.right.length !== 16) return E.left(checkpointError(ck.path, `a 4-bit code book has 16 values, file has ${quantMap.right.length}`, `${name}.quant_map`));
  const base = { shape: [...want], blockSize: s.blocksize, packed: packed.right, quantMap: quantMap.right };
  const nested = s.nested_offset !== undefined;
  const absmax = nested ? await u8(`${name}.absmax`) : await f32(`${name}.absmax`);
  if (E.isLeft(absmax)) return absmax;
  if (absmax.right.length !== nBlocks) return E.left(checkpointError(ck.path, `${absmax.right.length} absmax values, ${fmt(want)} in blocks of ${s.blocksize} needs ${nBlocks}`, `${name}.absmax`));
  if (!nested) return E.right({ ...base, absmax: absmax.right as Float32Array });
  const nb = s.nested_blocksize ?? 256;
  const [na, nm] = [await f32(`${name}.nested_absmax`), await f32(`${name}.nested_quant_map`)];
  if (E.isLeft(na)) return na;
  if (E.isLeft(nm)) return nm;
  if (na.right.length !== Math.ceil(nBlocks / nb)) return E.left(checkpointError(ck.path, `${na.right.length} values, ${nBlocks} absmax codes in blocks of ${nb} need ${Math.ceil(nBlocks / nb)}`, `${name}.nested_absmax`));
  if (nm.right.length !== 256) return E.left(checkpointError(ck.path, `an 8-bit map has 256 values, file has ${nm.right.length}`, `${name}.nested_quant_map`));
  return E.right({ ...base, nested: { codes: absmax.right as Uint8Array, absmax: na.right, offset: s.nested_offset!, blockSize: nb, quantMap: nm.right } });
};

/** The host form of an NF4 leaf (its tensors read back). */
export const nf4FromWeight = async (w: Nf4Weight): Promise<Nf4Quantized> => {
  const bytes = async (x: Tensor, n: number) => new Uint8Array(Uint32Array.from(await data(x)).buffer).slice(0, n);
  const n = w.shape[0] * w.shape[1], nBlocks = Math.ceil(n / w.blockSize);
  const f32 = async (x: Tensor) => Float32Array.from(await data(x));
  const base = { shape: [...w.shape], blockSize: w.blockSize, packed: await bytes(w.codes, Math.ceil(n / 2)), quantMap: await f32(w.quantMap) };
  if (w.absmax) return { ...base, absmax: await f32(w.absmax) };
  return { ...base, nested: { codes: await bytes(w.absmaxCodes!, nBlocks), absmax: await f32(w.absmax2!), offset: (await f32(w.offset!))[0]!, blockSize: 256, quantMap: await f32(w.nestedMap!) } };
};

const layerName = (i: number, k: LayerKey) => `model.layers.${i}.${HF_NAMES.layer[k]}`;

/**
 * Loads a Hugging Face folder whose projections are bitsandbytes NF4 ("bnb-4bit" checkpoints): those become NF4
 * leaves; embeddings, norms and the LM head load as f32. A projection stored dense loads dense.
 * @example const { config, params } = orThrow(await loadBnb4bit('llama-2-7b-bnb-4bit')());
 */
export const loadBnb4bit = (dir: string): TaskEither<LoadError, { config: LlamaConfig; params: LlamaParams<Weight> }> => async () => {
  const cfg = await loadLlamaConfig(dir)();
  if (E.isLeft(cfg)) return cfg;
  const c = cfg.right;
  const ck = await openCheckpoint(dir)();
  if (E.isLeft(ck)) return ck;
  const f = ck.right;
  try {
    const dense = async (name: string, shape: readonly number[]): Promise<E.Either<LoadError, Tensor>> => {
      const info = f.info(name);
      if (!info) return E.left(checkpointError(f.path, `missing (expected ${fmt(shape)} from config)`, name));
      if (!sameShape(info.shape, shape)) return E.left(checkpointError(f.path, `expected ${fmt(shape)} from config, file has ${fmt(info.shape)}`, name));
      const r = await f.read(name)();
      return E.isLeft(r) ? r : E.right(fromStorage(r.right, shape, 'f32'));
    };
    const top = topShapes(c), ls = layerShapes(c);
    const tokEmb = await dense(HF_NAMES.tokEmb, top.tokEmb);
    if (E.isLeft(tokEmb)) return tokEmb;
    const norm = await dense(HF_NAMES.norm, top.norm);
    if (E.isLeft(norm)) return norm;
    const out = top.out ? await dense(HF_NAMES.out, top.out) : undefined;
    if (out && E.isLeft(out)) return out;
    const layers: LlamaLayer<Weight>[] = [];
    for (let i = 0; i < c.nLayers; i++) {
      const l: Partial<Record<LayerKey, Weight>> = {};
      for (const k of layerKeys) {
        const name = layerName(i, k);
        const w = f.info(`${name}${QS}`) ? await readBnb(f, name, ls[k]) : await dense(name, ls[k]);
        if (E.isLeft(w)) return w;
        l[k] = isTensor(w.right) ? w.right : nf4Weight(w.right as Nf4Quantized);
      }
      layers.push(l as LlamaLayer<Weight>);
    }
    return E.right({ config: c, params: { tokEmb: tokEmb.right, layers, norm: norm.right, ...(out ? { out: (out as E.Right<Tensor>).right } : {}) } });
  } finally {
    await f.close();
  }
};

/**
 * Whether a Hugging Face folder is a bitsandbytes 4-bit checkpoint (config.json's `quantization_config` says
 * `quant_method: bitsandbytes`, `load_in_4bit`): an error for FP4, which camelid does not read.
 * @example if (orThrow(await isBnb4bit(dir)())) ({ params } = orThrow(await loadBnb4bit(dir)()));
 */
export const isBnb4bit = (dir: string): TaskEither<LoadError, boolean> => async () => {
  const file = join(dir, 'config.json');
  let q: { quant_method?: unknown; load_in_4bit?: unknown; bnb_4bit_quant_type?: unknown } | undefined;
  try {
    q = (JSON.parse(await readFile(file, 'utf8')) as { quantization_config?: typeof q }).quantization_config;
  } catch {
    return E.right(false); // no readable config: not this format (loading it says what is wrong)
  }
  if (!q || q.quant_method !== 'bitsandbytes' || q.load_in_4bit !== true) return E.right(false);
  if (q.bnb_4bit_quant_type !== 'nf4') return E.left(configError(file, [{ field: 'quantization_config.bnb_4bit_quant_type', expected: '"nf4" (camelid reads NF4 4-bit checkpoints only)', got: JSON.stringify(q.bnb_4bit_quant_type) }], 'unsupported quantisation'));
  return E.right(true);
};

/**
 * Writes config.json (with its `quantization_config`) and model.safetensors: NF4 projections in bitsandbytes'
 * layout, everything else F32. `loadBnb4bit(dir)` reads it back bit for bit.
 * @example await saveBnb4bit('out/q', cfg, await quantizeBase(params))();
 */
export const saveBnb4bit = (dir: string, c: LlamaConfig, params: LlamaParams<Weight>): TaskEither<LoadError, void> => async () => {
  const file = join(dir, 'config.json');
  const quantization_config = {
    quant_method: 'bitsandbytes', load_in_4bit: true, load_in_8bit: false, bnb_4bit_quant_type: 'nf4', bnb_4bit_compute_dtype: 'bfloat16',
    bnb_4bit_use_double_quant: params.layers.some((l) => layerKeys.some((k) => !isTensor(l[k]) && l[k].kind === 'nf4' && !l[k].absmax)), bnb_4bit_quant_storage: 'uint8',
  };
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(file, JSON.stringify({ ...toHfConfig(c), quantization_config }, null, 2) + '\n');
  } catch (e) {
    return E.left(configError(file, [], `cannot write (${e instanceof Error ? e.message : String(e)})`));
  }
  const f32 = async (x: Tensor) => Float32Array.from(await data(x));
  const tensors: TensorToWrite[] = [
    { name: HF_NAMES.tokEmb, dtype: 'F32', shape: params.tokEmb.shape, data: await f32(params.tokEmb) },
    { name: HF_NAMES.norm, dtype: 'F32', shape: params.norm.shape, data: await f32(params.norm) },
    ...(!c.tieEmbeddings && params.out ? [{ name: HF_NAMES.out, dtype: 'F32' as const, shape: params.out.shape, data: await f32(params.out) }] : []),
  ];
  for (const [i, l] of params.layers.entries()) {
    for (const k of layerKeys) {
      const w = l[k];
      if (isTensor(w)) tensors.push({ name: layerName(i, k), dtype: 'F32', shape: w.shape, data: await f32(w) });
      else if (w.kind === 'nf4') tensors.push(...bnbTensors(layerName(i, k), await nf4FromWeight(w)));
      else return E.left(configError(file, [{ field: layerName(i, k), expected: 'a plain or NF4 weight', got: 'a LoRA weight (merge first)' }], 'cannot save'));
    }
  }
  return writeSafetensors(join(dir, 'model.safetensors'), tensors)();
};
