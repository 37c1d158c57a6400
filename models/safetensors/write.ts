// Writing safetensors: one file (header, then data tensor by tensor) or a sharded checkpoint with its index. Tensor
// data may be given lazily (a thunk), so a caller can convert and write one tensor at a time.
import { mkdir, open, rename, rm, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { f32ToBf16Array, f32ToF16Array } from './halfFloat.js';
import { checkpointError, dtypeSize, hostIsLittleEndian, ioProblem, type CheckpointError } from './header.js';
import { indexFileName, singleFileName } from './read.js';

export type WritableDType = 'F32' | 'F16' | 'BF16' | 'U8';
/** F32 takes a Float32Array; F16/BF16 take raw 16-bit patterns (written as is) or a Float32Array (rounded to nearest even);
 * U8 a Uint8Array (bitsandbytes' packed 4-bit weights). */
export type TensorData = Float32Array | Uint16Array | Uint8Array;

export interface TensorToWrite {
  readonly name: string;
  readonly dtype: WritableDType;
  readonly shape: readonly number[];
  readonly data: TensorData | (() => TensorData | Promise<TensorData>);
}

interface Planned {
  readonly t: TensorToWrite;
  readonly bytes: number;
}

class WriteFailure extends Error {
  constructor(readonly error: CheckpointError) {
    super(error.message);
  }
}

// Takes one pass over the tensors, keeping only descriptors (data stays where the caller holds it or unmade).
const plan = (file: string, tensors: Iterable<TensorToWrite>): E.Either<CheckpointError, Planned[]> => {
  const seen = new Set<string>();
  const out: Planned[] = [];
  for (const t of tensors) {
    if (t.name === '__metadata__' || seen.has(t.name))
      return E.left(checkpointError(file, t.name === '__metadata__' ? 'reserved tensor name' : 'duplicate tensor name', t.name));
    seen.add(t.name);
    if (!(t.dtype === 'F32' || t.dtype === 'F16' || t.dtype === 'BF16' || t.dtype === 'U8'))
      return E.left(checkpointError(file, `cannot write dtype ${String(t.dtype)} (F32, F16, BF16 or U8)`, t.name));
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      return E.left(checkpointError(file, `shape must hold non-negative integers, got ${JSON.stringify(t.shape)}`, t.name));
    out.push({ t, bytes: t.shape.reduce((a, d) => a * d, 1) * dtypeSize[t.dtype] });
  }
  return E.right(out);
};

// Header JSON built by hand so that entries keep their order (JSON.stringify would hoist integer-like names), padded
// with spaces so that the data section starts 8-byte aligned.
const headerBytes = (planned: readonly Planned[], metadata: Readonly<Record<string, string>> | undefined): Uint8Array => {
  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const { t, bytes } of planned) {
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] })}`);
    offset += bytes;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  padded.set(json);
  const out = new Uint8Array(8 + padded.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded.length), true);
  out.set(padded, 8);
  return out;
};

const writeAll = async (fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> => {
  const chunk = 1 << 30;
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(chunk, bytes.length - done), position + done);
    done += bytesWritten;
  }
};

const encode = async (file: string, { t, bytes }: Planned): Promise<Uint8Array> => {
  let data: TensorData;
  try {
    data = typeof t.data === 'function' ? await t.data() : t.data;
  } catch (e) {
    // The caller's own failure (a device read-back, a conversion): say which tensor it was making.
    throw new WriteFailure(checkpointError(file, `cannot make its data (${ioProblem(e)})`, t.name));
  }
  const numel = bytes / dtypeSize[t.dtype];
  if (data.length !== numel)
    throw new WriteFailure(checkpointError(file, `data has ${data.length} elements but shape ${JSON.stringify(t.shape)} needs ${numel}`, t.name));
  let stored: TensorData = data;
  if (t.dtype === 'F32' && !(data instanceof Float32Array))
    throw new WriteFailure(checkpointError(file, 'F32 data must be a Float32Array', t.name));
  if ((t.dtype === 'U8') !== (data instanceof Uint8Array))
    throw new WriteFailure(checkpointError(file, 'U8 data must be a Uint8Array (and only U8 data)', t.name));
  if (t.dtype !== 'F32' && data instanceof Float32Array) stored = t.dtype === 'BF16' ? f32ToBf16Array(data) : f32ToF16Array(data);
  return new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
};

const partial = (path: string): string => `${path}.partial`;

// Writes the file complete under its temporary name, or removes what it wrote. Putting it in place is a separate
// step (putInPlace), so that a sharded write can wait until every one of its files is complete.
const writeTemp = async (path: string, planned: readonly Planned[], metadata: Readonly<Record<string, string>> | undefined): Promise<E.Either<CheckpointError, void>> => {
  if (!hostIsLittleEndian) return E.left(checkpointError(path, 'big-endian hosts are not supported (safetensors is little-endian)'));
  const tmp = partial(path);
  let fh: FileHandle | undefined;
  try {
    fh = await open(tmp, 'w');
    const header = headerBytes(planned, metadata);
    await writeAll(fh, header, 0);
    let position = header.length;
    for (const p of planned) {
      await writeAll(fh, await encode(path, p), position);
      position += p.bytes;
    }
    await fh.close();
    fh = undefined;
    return E.right(undefined);
  } catch (e) {
    await fh?.close().catch(() => undefined);
    await rm(tmp, { force: true }).catch(() => undefined);
    return E.left(e instanceof WriteFailure ? e.error : checkpointError(path, `cannot write (${ioProblem(e)})`));
  }
};

const discard = async (paths: readonly string[]): Promise<void> => {
  await Promise.all(paths.map((p) => rm(partial(p), { force: true }).catch(() => undefined)));
};

// Renames the complete temporary files onto their paths, in order; on a failure removes the temporaries still left.
const putInPlace = async (paths: readonly string[]): Promise<E.Either<CheckpointError, void>> => {
  for (const path of paths) {
    try {
      await rename(partial(path), path);
    } catch (e) {
      await discard(paths);
      return E.left(checkpointError(path, `cannot write (${ioProblem(e)})`));
    }
  }
  return E.right(undefined);
};

// A temporary name, then a rename: a failed write never leaves a plausible-looking file.
const writePlanned = async (path: string, planned: readonly Planned[], metadata: Readonly<Record<string, string>> | undefined): Promise<E.Either<CheckpointError, void>> => {
  const written = await writeTemp(path, planned, metadata);
  return E.isLeft(written) ? written : putInPlace([path]);
};

/**
 * Writes a safetensors file. `metadata` defaults to `{format: 'pt'}`, which PyTorch loaders expect.
 * @example
 * await writeSafetensors('m.safetensors', [{ name: 'w', dtype: 'BF16', shape: [2], data: new Float32Array([1, 2]) }])();
 */
export const writeSafetensors =
  (path: string, tensors: Iterable<TensorToWrite>, metadata: Readonly<Record<string, string>> = { format: 'pt' }): TaskEither<CheckpointError, void> =>
  async () => {
    const planned = plan(path, tensors);
    return E.isLeft(planned) ? planned : writePlanned(path, planned.right, metadata);
  };

export interface ShardedWrite {
  readonly files: readonly string[]; // shard paths, then the index path if one was written
}

/**
 * Writes a checkpoint split into shards of at most `maxShardBytes` of tensor data each (a larger tensor gets a shard
 * of its own), named `model-0000i-of-0000n.safetensors`, with `model.safetensors.index.json`. As with Hugging Face
 * `save_pretrained`, a checkpoint that fits in one shard is written as a single `model.safetensors` with no index.
 * @example
 * await writeShardedCheckpoint('out', tensors, 5 * 2 ** 30)();
 */
export const writeShardedCheckpoint =
  (dir: string, tensors: Iterable<TensorToWrite>, maxShardBytes: number, metadata: Readonly<Record<string, string>> = { format: 'pt' }): TaskEither<CheckpointError, ShardedWrite> =>
  async () => {
    if (!(maxShardBytes > 0)) return E.left(checkpointError(dir, `maxShardBytes must be positive, got ${maxShardBytes}`));
    const planned = plan(dir, tensors);
    if (E.isLeft(planned)) return planned;
    const shards: Planned[][] = [];
    let current: Planned[] = [];
    let size = 0;
    for (const p of planned.right) {
      if (current.length > 0 && size + p.bytes > maxShardBytes) {
        shards.push(current);
        current = [];
        size = 0;
      }
      current.push(p);
      size += p.bytes;
    }
    if (current.length > 0 || shards.length === 0) shards.push(current);
    try {
      await mkdir(dir, { recursive: true });
    } catch (e) {
      return E.left(checkpointError(dir, `cannot create folder (${ioProblem(e)})`));
    }
    if (shards.length === 1) {
      const path = join(dir, singleFileName);
      const written = await writePlanned(path, shards[0]!, metadata);
      // A stale index would otherwise win over the new file when the folder is opened.
      if (E.isRight(written)) await rm(join(dir, indexFileName), { force: true }).catch(() => undefined);
      return E.isLeft(written) ? written : E.right({ files: [path] });
    }
    const width = Math.max(5, String(shards.length).length);
    const name = (i: number) => `model-${String(i + 1).padStart(width, '0')}-of-${String(shards.length).padStart(width, '0')}.safetensors`;
    // Every shard, then the index, is written under a temporary name, and nothing is put in place before all are
    // complete: a failed write (a data thunk that throws, a full disk) leaves an older checkpoint here as it was,
    // not new shards under its index where the shard names are the same.
    const files: string[] = [];
    const weightMap: Record<string, string> = Object.create(null);
    for (const [i, shard] of shards.entries()) {
      const path = join(dir, name(i));
      const written = await writeTemp(path, shard, metadata);
      if (E.isLeft(written)) {
        await discard(files);
        return written;
      }
      files.push(path);
      for (const p of shard) weightMap[p.t.name] = name(i);
    }
    const totalSize = planned.right.reduce((a, p) => a + p.bytes, 0);
    const indexPath = join(dir, indexFileName);
    try {
      await writeFile(partial(indexPath), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + '\n');
      // The old index goes before any shard is replaced: were the renames cut short, no index would name a mix.
      await unlink(indexPath).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
      });
    } catch (e) {
      await discard([...files, indexPath]);
      return E.left(checkpointError(indexPath, `cannot write index (${ioProblem(e)})`));
    }
    const placed = await putInPlace([...files, indexPath]);
    if (E.isLeft(placed)) return placed;
    return E.right({ files: [...files, indexPath] });
  };
