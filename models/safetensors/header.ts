// Safetensors header: dtypes, the checkpoint error type, and validation of the 8-byte length + JSON header. Every
// offset, shape and size is checked against the file before any tensor byte is trusted; no tensor data is read here.
import { open, type FileHandle } from 'node:fs/promises';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';

/** Element types of the safetensors format, with their sizes in bytes. */
export const dtypeSize = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
} as const;
export type DType = keyof typeof dtypeSize;
export const isDType = (s: unknown): s is DType => typeof s === 'string' && Object.hasOwn(dtypeSize, s);

/** Typed array holding a tensor's elements as stored: halves (F16, BF16) as their 16-bit patterns. */
export type RawArray =
  | Float64Array | Float32Array | Uint16Array | BigInt64Array | BigUint64Array
  | Int32Array | Uint32Array | Int16Array | Int8Array | Uint8Array;

export interface CheckpointError {
  readonly _tag: 'CheckpointError';
  readonly file: string;
  readonly tensor?: string;
  readonly message: string; // names the file, the tensor if any, and the problem
}

export const checkpointError = (file: string, problem: string, tensor?: string): CheckpointError =>
  tensor === undefined
    ? { _tag: 'CheckpointError', file, message: `${file}: ${problem}` }
    : { _tag: 'CheckpointError', file, tensor, message: `${file}: tensor "${tensor}": ${problem}` };

const IO_CODES = new Map([
  ['ENOENT', 'no such file or directory'], ['EACCES', 'permission denied'], ['EPERM', 'operation not permitted'],
  ['EISDIR', 'is a directory'], ['ENOTDIR', 'not a directory'], ['EMFILE', 'too many open files'], ['ELOOP', 'too many symbolic links'],
]);

/** A file system error in words, once: Node's messages repeat the code and the path ("ENOENT: …, open '/x'"), and
 * callers name the file themselves. Any other error's message is kept whole. */
export const ioProblem = (e: unknown): string => {
  if (!(e instanceof Error)) return String(e);
  const code = (e as NodeJS.ErrnoException).code;
  if (code === undefined) return e.message;
  const known = IO_CODES.get(code);
  return known ?? e.message.replace(/^[A-Z][A-Z0-9_]*: /, '').replace(/, [a-z_]+ '[^']*'( -> '[^']*')?$/, '');
};

/** Safetensors stores little-endian bytes; typed arrays use the host's order. */
export const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export interface TensorEntry {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly begin: number; // byte offsets relative to the start of the data section
  readonly end: number;
}

export interface SafetensorsHeader {
  readonly file: string;
  readonly fileSize: number;
  readonly dataStart: number; // 8 + header length
  readonly tensors: readonly TensorEntry[]; // in data-offset order
  readonly metadata: Readonly<Record<string, string>>;
}

/** The reference implementation's limit; anything larger is a corrupt or hostile length prefix. */
export const maxHeaderBytes = 100_000_000;

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === 'object' && u !== null && !Array.isArray(u);
const isCount = (u: unknown): u is number => typeof u === 'number' && Number.isSafeInteger(u) && u >= 0;
const show = (u: unknown): string => {
  const s = JSON.stringify(u) ?? String(u);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

/** Validates the 8-byte length prefix against the file size; returns the header's byte length. */
export const checkHeaderLength = (file: string, prefix: Uint8Array, fileSize: number): E.Either<CheckpointError, number> => {
  if (fileSize < 8 || prefix.length < 8)
    return E.left(checkpointError(file, `file is ${fileSize} bytes, too short for the 8-byte header length`));
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(fileSize - 8))
    return E.left(checkpointError(file, `header length ${n} is larger than the ${fileSize - 8} bytes after the length prefix`));
  if (n > BigInt(maxHeaderBytes))
    return E.left(checkpointError(file, `header length ${n} exceeds the ${maxHeaderBytes}-byte limit`));
  if (n < 2n) return E.left(checkpointError(file, `header length ${n} is too small for a JSON object`));
  return E.right(Number(n));
};

const parseEntry = (file: string, name: string, v: unknown, dataBytes: number): E.Either<CheckpointError, TensorEntry> => {
  const bad = (problem: string) => E.left(checkpointError(file, problem, name));
  if (!isRecord(v)) return bad(`expected an object {dtype, shape, data_offsets}, got ${show(v)}`);
  const { dtype, shape, data_offsets: offsets } = v;
  if (!isDType(dtype)) return bad(`unknown dtype ${show(dtype)} (expected one of ${Object.keys(dtypeSize).join(', ')})`);
  if (!Array.isArray(shape) || !shape.every(isCount)) return bad(`shape must be an array of non-negative integers, got ${show(shape)}`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount))
    return bad(`data_offsets must be [begin, end] with non-negative integers, got ${show(offsets)}`);
  const [begin, end] = offsets as [number, number];
  if (end < begin) return bad(`data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataBytes) return bad(`data_offsets [${begin}, ${end}] run past the end of the data section (${dataBytes} bytes)`);
  // BigInt: a hostile shape can overflow doubles long before it is compared with the span.
  const need = (shape as number[]).reduce((acc, d) => acc * BigInt(d), BigInt(dtypeSize[dtype]));
  if (need !== BigInt(end - begin))
    return bad(`data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${show(shape)} of ${dtype} needs ${need}`);
  return E.right({ name, dtype, shape: shape as number[], begin, end });
};

/**
 * The first key that repeats within one JSON object of `text` (already known to be valid JSON), with the path of
 * that object; JSON.parse would silently keep the last value.
 */
const repeatedKey = (text: string): { key: string; at: string } | null => {
  // One frame per open object or array: the keys seen (objects), the key now being read, its path.
  const stack: { keys: Set<string> | null; path: string; expectKey: boolean; last: string }[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    const top = stack[stack.length - 1];
    if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return { key, at: top.path };
        top.keys.add(key);
        top.last = key;
        top.expectKey = false;
      }
      i = j;
    } else if (ch === '{' || ch === '[') {
      const path = top ? (top.keys ? (top.path ? `${top.path}.${top.last}` : top.last) : `${top.path}[]`) : '';
      stack.push({ keys: ch === '{' ? new Set() : null, path, expectKey: true, last: '' });
    } else if (ch === '}' || ch === ']') stack.pop();
    else if (ch === ',' && top?.keys) top.expectKey = true;
  }
  return null;
};

/**
 * Parses and validates header JSON bytes (without the length prefix) of a file of `fileSize` bytes.
 * @example
 * parseSafetensorsHeader('m.safetensors', bytes, 8 + bytes.length + 16) // Right({ tensors: [...], metadata })
 */
export const parseSafetensorsHeader = (file: string, bytes: Uint8Array, fileSize: number): E.Either<CheckpointError, SafetensorsHeader> => {
  const dataStart = 8 + bytes.length;
  const dataBytes = fileSize - dataStart;
  if (dataBytes < 0) return E.left(checkpointError(file, `header of ${bytes.length} bytes does not fit in a ${fileSize}-byte file`));
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    return E.left(checkpointError(file, `header is not valid UTF-8 JSON (${e instanceof Error ? e.message : String(e)})`));
  }
  if (!isRecord(json)) return E.left(checkpointError(file, `header must be a JSON object, got ${show(json)}`));
  const repeated = repeatedKey(new TextDecoder().decode(bytes));
  if (repeated) return E.left(checkpointError(file, `header repeats the key ${JSON.stringify(repeated.key)}${repeated.at ? ` in "${repeated.at}"` : ''}`));
  let metadata: Record<string, string> = {};
  const tensors: TensorEntry[] = [];
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isRecord(v) || !Object.values(v).every((x) => typeof x === 'string'))
        return E.left(checkpointError(file, `__metadata__ must map strings to strings, got ${show(v)}`));
      metadata = v as Record<string, string>;
      continue;
    }
    const entry = parseEntry(file, name, v, dataBytes);
    if (E.isLeft(entry)) return entry;
    tensors.push(entry.right);
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  // As the format (and its reference implementation) requires: the tensors tile the data section exactly, in
  // order, with no overlap, no hole and nothing after the last one.
  let end = 0;
  for (const [i, cur] of tensors.entries()) {
    const prev = tensors[i - 1];
    if (prev && cur.begin < prev.end)
      return E.left(checkpointError(file,
        `data_offsets [${cur.begin}, ${cur.end}] overlap tensor "${prev.name}" at [${prev.begin}, ${prev.end}]`, cur.name));
    if (cur.begin > end)
      return E.left(checkpointError(file, prev
        ? `data_offsets [${cur.begin}, ${cur.end}] leave a hole of ${cur.begin - end} bytes after tensor "${prev.name}" (ends at ${end})`
        : `data_offsets [${cur.begin}, ${cur.end}] leave a hole of ${cur.begin} bytes at the start of the data section`, cur.name));
    end = cur.end;
  }
  if (end < dataBytes)
    return E.left(checkpointError(file, `${dataBytes - end} trailing bytes after the last tensor's data (the data section is ${dataBytes} bytes, the tensors cover ${end})`));
  return E.right({ file, fileSize, dataStart, tensors, metadata });
};

/** Reads exactly `length` bytes at `position` into a fresh buffer; a short file is an error, not a partial result. */
export const readExactly = async (fh: FileHandle, position: number, length: number): Promise<Uint8Array> => {
  const out = new Uint8Array(length);
  const chunk = 1 << 30; // a single read(2) is capped near 2 GiB
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, done, Math.min(chunk, length - done), position + done);
    if (bytesRead === 0) throw new Error(`unexpected end of file at byte ${position + done} (wanted ${length} bytes from ${position})`);
    done += bytesRead;
  }
  return out;
};

/** Validates the header of an open file; the caller owns the handle. */
export const readHeaderFrom = async (fh: FileHandle, file: string): Promise<E.Either<CheckpointError, SafetensorsHeader>> => {
  try {
    const fileSize = (await fh.stat()).size;
    const prefix = await readExactly(fh, 0, Math.min(8, fileSize));
    const n = checkHeaderLength(file, prefix, fileSize);
    if (E.isLeft(n)) return n;
    return parseSafetensorsHeader(file, await readExactly(fh, 8, n.right), fileSize);
  } catch (e) {
    return E.left(checkpointError(file, `cannot read header (${ioProblem(e)})`));
  }
};

/**
 * Reads and validates only the header of a safetensors file.
 * @example
 * const h = await readSafetensorsHeader('model.safetensors')(); // Right({ tensors: [{ name, dtype, shape, ... }] })
 */
export const readSafetensorsHeader = (path: string): TaskEither<CheckpointError, SafetensorsHeader> => () => withFile(path, (fh) => readHeaderFrom(fh, path));

/** Open `path`, run `f` on it, close it; failing to open or to read is a Left naming the file. */
export const withFile = async <A>(path: string, f: (fh: FileHandle) => Promise<E.Either<CheckpointError, A>>): Promise<E.Either<CheckpointError, A>> => {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    return E.left(checkpointError(path, `cannot open (${ioProblem(e)})`));
  }
  try {
    return await f(fh);
  } catch (e) {
    return E.left(checkpointError(path, `cannot read (${ioProblem(e)})`));
  } finally {
    await fh.close();
  }
};
