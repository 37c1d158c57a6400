// Reader for llama2.c (karpathy) legacy `.bin` checkpoints: a 7-int32 header, then float32 arrays. Yields the Hugging
// Face tensor names and layout (q/k rows permuted to rotate_half RoPE), so one loader serves both formats.
import type { FileHandle } from 'node:fs/promises';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import type { LlamaConfig } from './config.js';
import { checkpointError, hostIsLittleEndian, readExactly, withFile, type CheckpointError } from './safetensors/header.js';

export interface NamedTensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export interface Llama2cCheckpoint {
  readonly config: LlamaConfig;
  readonly tensors: ReadonlyMap<string, NamedTensor>; // Hugging Face names, in Hugging Face order
}

const headerBytes = 7 * 4;
const versionedMagic = 0x616b3432; // "ak42": llama2.c's newer export formats, which we do not read

/**
 * llama2.c keeps each head's rotary pairs interleaved (rows 2i, 2i+1); Hugging Face's rotate_half wants the first
 * members of all pairs, then the second members. Row h·hd + 2i + p (interleaved) is row h·hd + p·hd/2 + i (halves);
 * `toHalves` says which way the rows move.
 */
const moveRotaryRows = (w: Float32Array, nHeads: number, headDim: number, cols: number, toHalves: boolean): Float32Array => {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++)
    for (let i = 0; i < half; i++)
      for (let p = 0; p < 2; p++) {
        const [inter, halves] = [(h * headDim + 2 * i + p) * cols, (h * headDim + p * half + i) * cols];
        const [src, dst] = toHalves ? [inter, halves] : [halves, inter];
        out.set(w.subarray(src, src + cols), dst);
      }
  return out;
};

/** q/k rows from llama2.c order to Hugging Face's. @example interleavedToHalves(w, 8, 8, 64) // (8·8, 64) q_proj rows */
export const interleavedToHalves = (w: Float32Array, nHeads: number, headDim: number, cols: number): Float32Array =>
  moveRotaryRows(w, nHeads, headDim, cols, true);

/** Inverse of `interleavedToHalves`: Hugging Face q/k rows back to llama2.c order. */
export const halvesToInterleaved = (w: Float32Array, nHeads: number, headDim: number, cols: number): Float32Array =>
  moveRotaryRows(w, nHeads, headDim, cols, false);

/** Header → config, checking what the layout arithmetic relies on. */
export const llama2cConfig = (file: string, h: Int32Array): E.Either<CheckpointError, LlamaConfig> => {
  const [dim = 0, hiddenDim = 0, nLayers = 0, nHeads = 0, nKvHeads = 0, vocab = 0, seqLen = 0] = h;
  if (dim === versionedMagic)
    return E.left(checkpointError(file, 'starts with the "ak42" magic of a versioned llama2.c export; only the legacy (version 0) format is supported'));
  const fields = { dim, hidden_dim: hiddenDim, n_layers: nLayers, n_heads: nHeads, n_kv_heads: nKvHeads, seq_len: seqLen };
  for (const [k, v] of Object.entries(fields))
    if (v <= 0) return E.left(checkpointError(file, `header field ${k} must be positive, got ${v}`));
  if (vocab === 0) return E.left(checkpointError(file, 'header field vocab_size must be non-zero, got 0'));
  if (dim % nHeads !== 0) return E.left(checkpointError(file, `header field dim (${dim}) must be a multiple of n_heads (${nHeads})`));
  if (nHeads % nKvHeads !== 0) return E.left(checkpointError(file, `header field n_kv_heads (${nKvHeads}) must divide n_heads (${nHeads})`));
  const headDim = dim / nHeads;
  if (headDim % 2 !== 0) return E.left(checkpointError(file, `head size dim/n_heads = ${headDim} must be even for RoPE`));
  return E.right({
    dim, hiddenDim, nLayers, nHeads, nKvHeads, headDim,
    vocabSize: Math.abs(vocab), seqLen,
    normEps: 1e-5, ropeTheta: 10000, // fixed in llama2.c's run.c
    tieEmbeddings: vocab > 0, bosId: 1, eosId: 2,
  });
};

// The file as a list of blocks in order: [name or null for skipped, per-layer?, shape].
type Block = { readonly key: string | null; readonly perLayer: boolean; readonly shape: readonly number[] };

const layout = (c: LlamaConfig): Block[] => {
  const kvDim = c.nKvHeads * c.headDim;
  const blocks: Block[] = [
    { key: 'model.embed_tokens.weight', perLayer: false, shape: [c.vocabSize, c.dim] },
    { key: 'input_layernorm.weight', perLayer: true, shape: [c.dim] },
    { key: 'self_attn.q_proj.weight', perLayer: true, shape: [c.nHeads * c.headDim, c.dim] },
    { key: 'self_attn.k_proj.weight', perLayer: true, shape: [kvDim, c.dim] },
    { key: 'self_attn.v_proj.weight', perLayer: true, shape: [kvDim, c.dim] },
    { key: 'self_attn.o_proj.weight', perLayer: true, shape: [c.dim, c.nHeads * c.headDim] },
    { key: 'post_attention_layernorm.weight', perLayer: true, shape: [c.dim] },
    { key: 'mlp.gate_proj.weight', perLayer: true, shape: [c.hiddenDim, c.dim] }, // w1
    { key: 'mlp.down_proj.weight', perLayer: true, shape: [c.dim, c.hiddenDim] }, // w2
    { key: 'mlp.up_proj.weight', perLayer: true, shape: [c.hiddenDim, c.dim] }, // w3
    { key: 'model.norm.weight', perLayer: false, shape: [c.dim] },
    { key: null, perLayer: false, shape: [c.seqLen, c.headDim / 2] }, // freq_cis_real (unused)
    { key: null, perLayer: false, shape: [c.seqLen, c.headDim / 2] }, // freq_cis_imag (unused)
  ];
  if (!c.tieEmbeddings) blocks.push({ key: 'lm_head.weight', perLayer: false, shape: [c.vocabSize, c.dim] });
  return blocks;
};

const numel = (shape: readonly number[]) => shape.reduce((a, d) => a * d, 1);

const hfOrder = (c: LlamaConfig): string[] => {
  const perLayer = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj',
    'mlp.down_proj', 'mlp.up_proj', 'input_layernorm', 'post_attention_layernorm'];
  const layers = Array.from({ length: c.nLayers }, (_, l) => perLayer.map((k) => `model.layers.${l}.${k}.weight`));
  return ['model.embed_tokens.weight', ...layers.flat(), 'model.norm.weight', 'lm_head.weight'];
};

const readAll = async (fh: FileHandle, file: string): Promise<E.Either<CheckpointError, Llama2cCheckpoint>> => {
  const size = (await fh.stat()).size;
  if (size < headerBytes) return E.left(checkpointError(file, `file is ${size} bytes, shorter than the ${headerBytes}-byte header`));
  const header = new Int32Array((await readExactly(fh, 0, headerBytes)).buffer);
  const cfg = llama2cConfig(file, header);
  if (E.isLeft(cfg)) return cfg;
  const c = cfg.right;
  const blocks = layout(c);
  // BigInt: a corrupt header can describe more floats than a double counts exactly.
  const floats = blocks.reduce((a, b) => a + b.shape.reduce((n, d) => n * BigInt(d), BigInt(b.perLayer ? c.nLayers : 1)), 0n);
  const expected = BigInt(headerBytes) + 4n * floats;
  if (expected !== BigInt(size))
    return E.left(checkpointError(file,
      `header (dim ${c.dim}, hidden_dim ${c.hiddenDim}, n_layers ${c.nLayers}, n_heads ${c.nHeads}, n_kv_heads ${c.nKvHeads}, ` +
      `vocab_size ${header[5]}, seq_len ${c.seqLen}) implies ${expected} bytes, but the file has ${size}`));
  const found = new Map<string, NamedTensor>();
  let offset = headerBytes;
  const next = async (shape: readonly number[]): Promise<Float32Array> => {
    const bytes = numel(shape) * 4;
    const data = new Float32Array((await readExactly(fh, offset, bytes)).buffer);
    offset += bytes;
    return data;
  };
  for (const b of blocks) {
    if (b.key === null) {
      offset += numel(b.shape) * 4;
      continue;
    }
    if (!b.perLayer) {
      found.set(b.key, { shape: b.shape, data: await next(b.shape) });
      continue;
    }
    for (let l = 0; l < c.nLayers; l++) {
      let data = await next(b.shape);
      if (b.key === 'self_attn.q_proj.weight') data = interleavedToHalves(data, c.nHeads, c.headDim, c.dim);
      if (b.key === 'self_attn.k_proj.weight') data = interleavedToHalves(data, c.nKvHeads, c.headDim, c.dim);
      found.set(`model.layers.${l}.${b.key}`, { shape: b.shape, data });
    }
  }
  if (c.tieEmbeddings) found.set('lm_head.weight', found.get('model.embed_tokens.weight')!); // shared, not copied
  return E.right({ config: c, tensors: new Map(hfOrder(c).map((k) => [k, found.get(k)!])) });
};

/**
 * Reads a llama2.c checkpoint tensor by tensor into Hugging Face-named float32 arrays.
 * @example
 * const { config, tensors } = orThrow(await readLlama2c('../shared/fixtures/stories260K/stories260K.bin')());
 * tensors.get('model.layers.0.self_attn.q_proj.weight') // { shape: [64, 64], data: Float32Array }
 */
export const readLlama2c =
  (path: string): TaskEither<CheckpointError, Llama2cCheckpoint> =>
  async () => {
    if (!hostIsLittleEndian) return E.left(checkpointError(path, 'big-endian hosts are not supported (llama2.c files are little-endian)'));
    return withFile(path, (fh) => readAll(fh, path));
  };
