// Public tokenizer API: the Tokenizer (encode via bpe.ts, decode here) and loading a SentencePiece tokenizer.model or
// a Hugging Face tokenizer.json (or a directory holding one). File and format errors are Lefts, never throws.
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { makeEncoder, PieceKind, SPACE, tokenizerError, type TokenizerError, type TokenizerSpec } from './bpe.js';
import { specFromTokenizerJson } from './hf.js';
import { parseModelProto, specFromModelProto } from './proto.js';
import { specFromLlama2cTokenizer } from './llama2c.js';

export { PieceKind } from './bpe.js';
export type { TokenizerError, TokenizerSpec } from './bpe.js';
export type { ModelProto } from './proto.js';

/**
 * SentencePiece BPE tokenizer. `encode` adds BOS unless `{ bos: false }`, EOS only with `{ eos: true }`, and the
 * model's dummy prefix '▁' unless `{ dummyPrefix: false }` (text after a special token, as HF non-legacy encodes it);
 * `decode` drops control ids; `decoder()` decodes id by id, emitting text only once its UTF-8 is complete.
 * @example
 * const d = tok.decoder();
 * const text = ids.map((id) => d.push(id)).join('') + d.flush(); // === tok.decode(ids)
 */
export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly unkId: number;
  readonly pieces: readonly string[];
  encode(text: string, opts?: { bos?: boolean; eos?: boolean; dummyPrefix?: boolean }): number[];
  decode(ids: readonly number[]): string;
  decoder(): { push(id: number): string; flush(): string };
}

/** Decoding follows SentencePiece: control pieces vanish, unk shows `unkSurface`, runs of byte pieces are UTF-8,
 * '▁' is a space, and the first piece loses its leading '▁' (the dummy prefix). The streaming decoder holds back
 * an incomplete UTF-8 sequence until its last byte arrives. */
const makeDecoder = (spec: TokenizerSpec) => {
  const byteValue = spec.pieces.map((p, i) =>
    spec.kinds[i] === PieceKind.Byte && /^<0x[0-9A-Fa-f]{2}>$/.test(p) ? parseInt(p.slice(3, 5), 16) : -1);
  const stripFirst = spec.addDummyPrefix || spec.removeExtraWhitespaces;
  return (): { push(id: number): string; flush(): string } => {
    const utf8 = new TextDecoder('utf-8');
    const one = new Uint8Array(1);
    let started = false, pending = false;
    const flush = (): string => (pending ? ((pending = false), utf8.decode()) : '');
    const push = (id: number): string => {
      const k = spec.kinds[id];
      if (!Number.isInteger(id) || k === undefined) throw new RangeError(`decode: id ${id} is outside [0, ${spec.pieces.length})`);
      if (k === PieceKind.Control) return '';
      const first = !started;
      started = true;
      const b = byteValue[id]!;
      if (b >= 0) { one[0] = b; pending = true; return utf8.decode(one, { stream: true }); }
      const head = flush();
      if (id === spec.unkId || k === PieceKind.Unknown) return head + spec.unkSurface;
      let p = spec.pieces[id]!;
      if (first && stripFirst && p.startsWith(SPACE)) p = p.slice(1);
      return head + (spec.escapeWhitespaces ? p.replaceAll(SPACE, ' ') : p);
    };
    return { push, flush };
  };
};

/** Builds the public Tokenizer from a spec (see proto.ts and hf.ts for the two ways to get one). */
export const makeTokenizer = (spec: TokenizerSpec): Tokenizer => {
  const encodeInto = makeEncoder(spec);
  const decoder = makeDecoder(spec);
  return {
    vocabSize: spec.pieces.length, bosId: spec.bosId, eosId: spec.eosId, unkId: spec.unkId, pieces: spec.pieces,
    encode: (text, opts) => {
      if (typeof text !== 'string') throw new TypeError(`encode: text must be a string, got ${text === null ? 'null' : typeof text}`);
      const out: number[] = [];
      if ((opts?.bos ?? true) && spec.bosId >= 0) out.push(spec.bosId);
      encodeInto(text, out, opts?.dummyPrefix);
      if ((opts?.eos ?? false) && spec.eosId >= 0) out.push(spec.eosId);
      return out;
    },
    decode: (ids) => {
      const d = decoder();
      let s = '';
      for (const id of ids) s += d.push(id);
      return s + d.flush();
    },
    decoder,
  };
};

/**
 * A tokenizer from SentencePiece ModelProto bytes (a `tokenizer.model`); only BPE with the identity normaliser.
 * @example
 * const tok = orThrow(tokenizerFromModelProto(readFileSync('tok512.model'), 'tok512.model'));
 * tok.encode('Once upon a time'); // [1, 403, 407, 261, 378]
 */
export const tokenizerFromModelProto = (bytes: Uint8Array, source = 'tokenizer.model'): E.Either<TokenizerError, Tokenizer> => {
  const m = parseModelProto(bytes, source);
  if (E.isLeft(m)) return m;
  const spec = specFromModelProto(m.right, source);
  return E.isLeft(spec) ? spec : E.right(makeTokenizer(spec.right));
};

/**
 * A tokenizer from a parsed Hugging Face tokenizer.json (BPE model; merges ranked by position).
 * @example
 * const tok = orThrow(tokenizerFromJson(JSON.parse(readFileSync('tokenizer.json', 'utf8')), 'tokenizer.json'));
 * tok.decode(tok.encode('Hello world')); // 'Hello world'
 */
export const tokenizerFromJson = (json: unknown, source = 'tokenizer.json'): E.Either<TokenizerError, Tokenizer> => {
  const spec = specFromTokenizerJson(json, source);
  return E.isLeft(spec) ? spec : E.right(makeTokenizer(spec.right));
};

/**
 * A tokenizer from llama2.c tokenizer.bin bytes (as its run.c reads them; the model format is read by loadLlama).
 * @example
 * const tok = orThrow(tokenizerFromLlama2c(readFileSync('tok512.bin'), 'tok512.bin'));
 * tok.encode('Once upon a time'); // [1, 403, 407, 261, 378]
 */
export const tokenizerFromLlama2c = (bytes: Uint8Array, source = 'tokenizer.bin'): E.Either<TokenizerError, Tokenizer> => {
  const spec = specFromLlama2cTokenizer(bytes, source);
  return E.isLeft(spec) ? spec : E.right(makeTokenizer(spec.right));
};

const ioError = (file: string, e: unknown): TokenizerError => {
  const code = (e as { code?: string }).code;
  const what = code === 'ENOENT' ? 'no such file or directory' : code === 'EACCES' ? 'permission denied' : String(e);
  return tokenizerError('io', file, what);
};

const exists = (p: string): Promise<boolean> => stat(p).then((s) => s.isFile(), () => false);

/** Reads one tokenizer file; by name, `.json` is Hugging Face, `.bin` llama2.c, anything else a SentencePiece ModelProto. */
const loadFile = async (file: string): Promise<E.Either<TokenizerError, Tokenizer>> => {
  let bytes: Uint8Array;
  try { bytes = await readFile(file); }
  catch (e) { return E.left(ioError(file, e)); }
  if (file.endsWith('.bin')) return tokenizerFromLlama2c(bytes, file);
  if (!file.endsWith('.json')) return tokenizerFromModelProto(bytes, file);
  let json: unknown;
  try { json = JSON.parse(new TextDecoder().decode(bytes)); }
  catch (e) { return E.left(tokenizerError('format', file, `not valid JSON (${(e as Error).message})`)); }
  return tokenizerFromJson(json, file);
};

/**
 * Loads `tokenizer.model`, `tokenizer.json`, a llama2.c `tokenizer.bin`, or a directory holding the first two (the
 * `.model` is preferred).
 * @example
 * const tok = orThrow(await loadTokenizer('../shared/fixtures/llama2-tokenizer-32k')());
 * tok.encode('Hello world'); // [1, 15043, 3186]
 */
export const loadTokenizer = (path: string): TaskEither<TokenizerError, Tokenizer> => async () => {
  let isDir: boolean;
  try { isDir = (await stat(path)).isDirectory(); }
  catch (e) { return E.left(ioError(path, e)); }
  if (!isDir) return loadFile(path);
  for (const name of ['tokenizer.model', 'tokenizer.json'])
    if (await exists(join(path, name))) return loadFile(join(path, name));
  return E.left(tokenizerError('io', path, `directory '${basename(path)}' holds neither tokenizer.model nor tokenizer.json`));
};
