// Reading safetensors checkpoints, one tensor at a time from an open file: a single file, or a sharded checkpoint
// with `model.safetensors.index.json`. Never loads a whole file; every header is validated before it is used.
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, normalize } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { bf16ToF32Array, f16ToF32Array } from './halfFloat.js';
import {
  checkpointError, hostIsLittleEndian, ioProblem, readExactly, readHeaderFrom,
  type CheckpointError, type DType, type RawArray, type SafetensorsHeader, type TensorEntry,
} from './header.js';

export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export interface ReadOptions {
  readonly as?: 'f32' | 'raw';
}

/** Tensors of a checkpoint (single file or sharded), read on demand. */
export interface Checkpoint {
  readonly path: string;
  readonly tensors: readonly TensorInfo[];
  /** `__metadata__` of the file; for a sharded checkpoint, the union over its shards. */
  readonly metadata: Readonly<Record<string, string>>;
  info(name: string): TensorInfo | undefined;
  /** Float32Array, upcast from F16/BF16/F64/integers; `{as: 'raw'}` gives the stored elements (halves as bits). */
  read(name: string, options?: { readonly as?: 'f32' }): TaskEither<CheckpointError, Float32Array>;
  read(name: string, options: { readonly as: 'raw' }): TaskEither<CheckpointError, RawArray>;
  read(name: string, options: ReadOptions): TaskEither<CheckpointError, Float32Array | RawArray>;
  close(): Promise<void>;
}

export interface SafetensorsFile extends Checkpoint {
  readonly header: SafetensorsHeader;
}

type ReadImpl = (name: string, options?: ReadOptions) => TaskEither<CheckpointError, Float32Array | RawArray>;

const rawArray = (dtype: DType, buf: ArrayBuffer): RawArray => {
  switch (dtype) {
    case 'F64': return new Float64Array(buf);
    case 'F32': return new Float32Array(buf);
    case 'F16': case 'BF16': case 'U16': return new Uint16Array(buf);
    case 'I64': return new BigInt64Array(buf);
    case 'U64': return new BigUint64Array(buf);
    case 'I32': return new Int32Array(buf);
    case 'U32': return new Uint32Array(buf);
    case 'I16': return new Int16Array(buf);
    case 'I8': return new Int8Array(buf);
    case 'U8': case 'BOOL': case 'F8_E4M3': case 'F8_E5M2': return new Uint8Array(buf);
  }
};

const toF32 = (dtype: DType, raw: RawArray): Float32Array | undefined => {
  if (dtype === 'F32') return raw as Float32Array;
  if (dtype === 'F16') return f16ToF32Array(raw as Uint16Array);
  if (dtype === 'BF16') return bf16ToF32Array(raw as Uint16Array);
  if (dtype === 'F8_E4M3' || dtype === 'F8_E5M2') return undefined;
  if (raw instanceof BigInt64Array || raw instanceof BigUint64Array) return Float32Array.from(raw, Number);
  return Float32Array.from(raw as ArrayLike<number>);
};

const readEntry = async (fh: FileHandle, h: SafetensorsHeader, t: TensorEntry, as: 'f32' | 'raw'): Promise<E.Either<CheckpointError, Float32Array | RawArray>> => {
  let bytes: Uint8Array;
  try {
    bytes = await readExactly(fh, h.dataStart + t.begin, t.end - t.begin);
  } catch (e) {
    return E.left(checkpointError(h.file, `cannot read data (${ioProblem(e)})`, t.name));
  }
  const raw = rawArray(t.dtype, bytes.buffer as ArrayBuffer);
  if (as === 'raw') return E.right(raw);
  const f32 = toF32(t.dtype, raw);
  return f32 === undefined
    ? E.left(checkpointError(h.file, `no float32 conversion for ${t.dtype}; read it with {as: 'raw'}`, t.name))
    : E.right(f32);
};

const bigEndianError = (file: string) => checkpointError(file, 'big-endian hosts are not supported (safetensors is little-endian)');

/**
 * Opens a safetensors file: validates its header, keeps the descriptor open, reads tensors on demand.
 * @example
 * const f = orThrow(await openSafetensors('model.safetensors')());
 * const wq = orThrow(await f.read('model.layers.0.self_attn.q_proj.weight')()); // Float32Array
 * await f.close();
 */
export const openSafetensors =
  (path: string): TaskEither<CheckpointError, SafetensorsFile> =>
  async () => {
    if (!hostIsLittleEndian) return E.left(bigEndianError(path));
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      return E.left(checkpointError(path, `cannot open (${ioProblem(e)})`));
    }
    const header = await readHeaderFrom(fh, path);
    if (E.isLeft(header)) {
      await fh.close();
      return header;
    }
    const h = header.right;
    const byName = new Map(h.tensors.map((t) => [t.name, t]));
    let closed = false;
    const read: ReadImpl = (name, options) => async () => {
      const t = byName.get(name);
      if (t === undefined) return E.left(checkpointError(path, 'no such tensor in this file', name));
      if (closed) return E.left(checkpointError(path, 'file is closed', name));
      return readEntry(fh, h, t, options?.as ?? 'f32');
    };
    return E.right({
      path,
      header: h,
      tensors: h.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })),
      metadata: h.metadata,
      info: (name) => {
        const t = byName.get(name);
        return t && { name: t.name, dtype: t.dtype, shape: t.shape };
      },
      read: read as Checkpoint['read'],
      close: async () => {
        if (!closed) {
          closed = true;
          await fh.close();
        }
      },
    });
  };

export const indexFileName = 'model.safetensors.index.json';
export const singleFileName = 'model.safetensors';

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === 'object' && u !== null && !Array.isArray(u);

// Parses the index: name → shard file, shard files relative to the index and inside its folder.
const parseIndex = (file: string, text: string): E.Either<CheckpointError, Map<string, string>> => {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return E.left(checkpointError(file, `invalid JSON (${e instanceof Error ? e.message : String(e)})`));
  }
  if (!isRecord(json) || !isRecord(json['weight_map'])) return E.left(checkpointError(file, 'expected an object with a "weight_map" object'));
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(json['weight_map'])) {
    if (typeof shard !== 'string' || shard === '' || isAbsolute(shard) || normalize(shard).split(/[\\/]/).includes('..'))
      return E.left(checkpointError(file, `weight_map entry must be a shard file name inside the checkpoint folder, got ${JSON.stringify(shard)}`, name));
    map.set(name, shard);
  }
  return E.right(map);
};

const closeAll = (files: Iterable<Checkpoint>) => Promise.all([...files].map((f) => f.close()));

const openSharded = async (indexPath: string): Promise<E.Either<CheckpointError, Checkpoint>> => {
  let text: string;
  try {
    text = await readFile(indexPath, 'utf8');
  } catch (e) {
    return E.left(checkpointError(indexPath, `cannot read index (${ioProblem(e)})`));
  }
  const index = parseIndex(indexPath, text);
  if (E.isLeft(index)) return index;
  const weightMap = index.right;
  const shards = new Map<string, SafetensorsFile>();
  const fail = async (err: CheckpointError) => {
    await closeAll(shards.values());
    return E.left(err);
  };
  for (const [name, shard] of weightMap) {
    if (shards.has(shard)) continue;
    const shardPath = join(dirname(indexPath), shard);
    const exists = await stat(shardPath).then((s) => s.isFile(), () => false);
    if (!exists) return fail(checkpointError(indexPath, `shard "${shard}" named in weight_map does not exist`, name));
    const opened = await openSafetensors(shardPath)();
    if (E.isLeft(opened)) return fail(opened.left);
    shards.set(shard, opened.right);
  }
  const owner = new Map<string, SafetensorsFile>();
  const tensors: TensorInfo[] = [];
  const metadata: Record<string, string> = {};
  for (const [shard, f] of shards) {
    Object.assign(metadata, f.metadata);
    for (const t of f.tensors) {
      const listed = weightMap.get(t.name);
      if (listed === undefined) return fail(checkpointError(indexPath, `present in shard "${shard}" but missing from weight_map`, t.name));
      if (listed !== shard) {
        // The index maps the tensor to `listed`; the data sits in `shard` (and, if `listed` also holds it, there too).
        const also = shards.get(listed)?.info(t.name) ? ` and also in "${listed}"` : '';
        return fail(checkpointError(indexPath, `weight_map places it in shard "${listed}", but its data is in shard "${shard}"${also}`, t.name));
      }
      owner.set(t.name, f);
      tensors.push(t);
    }
  }
  for (const [name, shard] of weightMap)
    if (!owner.has(name)) return fail(checkpointError(indexPath, `weight_map places it in shard "${shard}", which does not contain it`, name));
  const read: ReadImpl = (name, options) => {
    const f = owner.get(name);
    return f === undefined
      ? async () => E.left(checkpointError(indexPath, 'no such tensor in this checkpoint', name))
      : f.read(name, options ?? {});
  };
  return E.right({
    path: indexPath,
    tensors,
    metadata,
    info: (name) => owner.get(name)?.info(name),
    read: read as Checkpoint['read'],
    close: async () => {
      await closeAll(shards.values());
    },
  });
};

/**
 * Opens a checkpoint: a folder holding `model.safetensors.index.json` (sharded) or `model.safetensors`, or either file.
 * @example
 * const ckpt = orThrow(await openCheckpoint('../shared/fixtures/stories260K/hf')());
 * for (const t of ckpt.tensors) console.log(t.name, t.shape);
 */
export const openCheckpoint =
  (dirOrFile: string): TaskEither<CheckpointError, Checkpoint> =>
  async () => {
    let isDir: boolean;
    try {
      isDir = (await stat(dirOrFile)).isDirectory();
    } catch (e) {
      return E.left(checkpointError(dirOrFile, `cannot open (${ioProblem(e)})`));
    }
    if (!isDir) return basename(dirOrFile).endsWith('.index.json') ? openSharded(dirOrFile) : openSafetensors(dirOrFile)();
    const indexPath = join(dirOrFile, indexFileName);
    if (await stat(indexPath).then(() => true, () => false)) return openSharded(indexPath);
    const single = join(dirOrFile, singleFileName);
    if (await stat(single).then(() => true, () => false)) return openSafetensors(single)();
    return E.left(checkpointError(dirOrFile, `neither ${indexFileName} nor ${singleFileName} found in this folder`));
  };
