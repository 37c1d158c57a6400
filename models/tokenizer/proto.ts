// A minimal protobuf wire-format reader, just enough for SentencePiece's ModelProto (pieces, trainer_spec,
// normalizer_spec), and the mapping of that proto to a TokenizerSpec. Bad bytes become a Left, never a throw.
import * as E from 'fp-ts/lib/Either.js';
import { bytePiece, PieceKind, tokenizerError, type TokenizerError, type TokenizerSpec } from './bpe.js';

/** The ModelProto fields camelid reads, with SentencePiece's defaults filled in. */
export interface ModelProto {
  readonly pieces: readonly { readonly piece: string; readonly score: number; readonly type: number }[];
  readonly modelType: number; // 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
  readonly byteFallback: boolean;
  readonly unkId: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkSurface: string;
  readonly treatWhitespaceAsSuffix: boolean;
  readonly normalizerName: string;
  readonly precompiledCharsmapBytes: number;
  readonly addDummyPrefix: boolean;
  readonly removeExtraWhitespaces: boolean;
  readonly escapeWhitespaces: boolean;
}

class WireError extends Error {} // internal only: parseModelProto turns it into a Left

interface Field {
  readonly no: number;
  readonly wire: number; // 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
  readonly int: number; // varint: low 32 bits as int32; fixed32: the float32 value
  readonly start: number; // length-delimited payload [start, end)
  readonly end: number;
}

/** name and expected wire type of each field we read; the others are skipped whatever their type. */
type Schema = Readonly<Record<number, readonly [string, number]>>;
const MODEL: Schema = { 1: ['pieces', 2], 2: ['trainer_spec', 2], 3: ['normalizer_spec', 2] };
const PIECE: Schema = { 1: ['piece', 2], 2: ['score', 5], 3: ['type', 0] };
const TRAINER: Schema = {
  3: ['model_type', 0], 24: ['treat_whitespace_as_suffix', 0], 35: ['byte_fallback', 0], 40: ['unk_id', 0],
  41: ['bos_id', 0], 42: ['eos_id', 0], 43: ['pad_id', 0], 44: ['unk_surface', 2],
};
const NORMALIZER: Schema = {
  1: ['name', 2], 2: ['precompiled_charsmap', 2], 3: ['add_dummy_prefix', 0], 4: ['remove_extra_whitespaces', 0],
  5: ['escape_whitespaces', 0],
};

interface Cursor { readonly buf: Uint8Array; readonly view: DataView; pos: number; int: number }

/** One varint at c.pos (at most 10 bytes). Returns it exactly below 2^53 (enough to bound lengths) and leaves its
 * low 32 bits, as an int32, in c.int: that is how protobuf stores a negative int32 such as pad_id -1. */
const varint = (c: Cursor, end: number, what: string): number => {
  let num = 0, int = 0;
  for (let i = 0, shift = 0; ; i++, shift += 7) {
    if (c.pos >= end) throw new WireError(`${what} truncated at byte ${c.pos}`);
    if (i === 10) throw new WireError(`${what} is a varint longer than 10 bytes at byte ${c.pos}`);
    const b = c.buf[c.pos++]!;
    num += (b & 0x7f) * 2 ** shift;
    if (shift < 32) int |= (b & 0x7f) << shift;
    if (b < 0x80) { c.int = int; return num; }
  }
};

const need = (c: Cursor, n: number, end: number, what: string): void => {
  if (n > end - c.pos) throw new WireError(`${what} truncated at byte ${c.pos} (needs ${n} bytes, ${end - c.pos} left)`);
};

/** Reads the fields of one message in [start, end); `where` prefixes error messages. */
const readFields = (c: Cursor, start: number, end: number, where: string, schema: Schema): Field[] => {
  const fields: Field[] = [];
  c.pos = start;
  while (c.pos < end) {
    const at = c.pos;
    const tag = varint(c, end, `${where}field tag`);
    const no = Math.floor(tag / 8), wire = tag % 8;
    const known = schema[no];
    const name = known ? `${where}field ${no} (${known[0]})` : `${where}field ${no}`;
    if (no === 0) throw new WireError(`${where}field number 0 at byte ${at}`);
    if (known && known[1] !== wire) throw new WireError(`${name} at byte ${at} has wire type ${wire}, expected ${known[1]}`);
    if (wire === 0) { varint(c, end, name); fields.push({ no, wire, int: c.int, start: 0, end: 0 }); }
    else if (wire === 1) { need(c, 8, end, name); c.pos += 8; }
    else if (wire === 5) { need(c, 4, end, name); fields.push({ no, wire, int: c.view.getFloat32(c.pos, true), start: 0, end: 0 }); c.pos += 4; }
    else if (wire === 2) {
      const n = varint(c, end, `${name} length`);
      need(c, n, end, name);
      fields.push({ no, wire, int: 0, start: c.pos, end: c.pos + n });
      c.pos += n;
    } else throw new WireError(`${name} at byte ${at} has unsupported wire type ${wire}`);
  }
  return fields;
};

const UTF8 = new TextDecoder('utf-8', { fatal: true });
const text = (buf: Uint8Array, f: Field, where: string): string => {
  let ascii = '';
  for (let i = f.start; i < f.end; i++) {
    const b = buf[i]!;
    if (b >= 0x80) { ascii = ''; break; }
    ascii += String.fromCharCode(b);
    if (i === f.end - 1) return ascii; // short pieces are mostly ASCII; TextDecoder calls cost more than this loop
  }
  try { return UTF8.decode(buf.subarray(f.start, f.end)); }
  catch { throw new WireError(`${where}invalid UTF-8 at bytes ${f.start}..${f.end}`); }
};

const decodeModelProto = (buf: Uint8Array): ModelProto => {
  const c: Cursor = { buf, view: new DataView(buf.buffer, buf.byteOffset, buf.byteLength), pos: 0, int: 0 };
  const top = readFields(c, 0, buf.length, 'protobuf ', MODEL);
  const pieces: { piece: string; score: number; type: number }[] = [];
  const m = {
    modelType: 1, byteFallback: false, unkId: 0, bosId: 1, eosId: 2, padId: -1, unkSurface: ' \u2047 ',
    treatWhitespaceAsSuffix: false, normalizerName: '', precompiledCharsmapBytes: 0,
    addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true,
  };
  for (const f of top) {
    if (f.no === 1) {
      const where = `protobuf field 1 (pieces) #${pieces.length}: `;
      const p = { piece: '', score: 0, type: PieceKind.Normal as number };
      for (const g of readFields(c, f.start, f.end, where, PIECE)) {
        if (g.no === 1) p.piece = text(buf, g, `${where}field 1 (piece) `);
        else if (g.no === 2) p.score = g.int;
        else if (g.no === 3) p.type = g.int;
      }
      pieces.push(p);
    } else if (f.no === 2) {
      for (const g of readFields(c, f.start, f.end, 'protobuf field 2 (trainer_spec): ', TRAINER)) {
        if (g.no === 3) m.modelType = g.int;
        else if (g.no === 24) m.treatWhitespaceAsSuffix = g.int !== 0;
        else if (g.no === 35) m.byteFallback = g.int !== 0;
        else if (g.no === 40) m.unkId = g.int;
        else if (g.no === 41) m.bosId = g.int;
        else if (g.no === 42) m.eosId = g.int;
        else if (g.no === 43) m.padId = g.int;
        else if (g.no === 44) m.unkSurface = text(buf, g, 'protobuf field 2 (trainer_spec): field 44 (unk_surface) ');
      }
    } else if (f.no === 3) {
      for (const g of readFields(c, f.start, f.end, 'protobuf field 3 (normalizer_spec): ', NORMALIZER)) {
        if (g.no === 1) m.normalizerName = text(buf, g, 'protobuf field 3 (normalizer_spec): field 1 (name) ');
        else if (g.no === 2) m.precompiledCharsmapBytes = g.end - g.start;
        else if (g.no === 3) m.addDummyPrefix = g.int !== 0;
        else if (g.no === 4) m.removeExtraWhitespaces = g.int !== 0;
        else if (g.no === 5) m.escapeWhitespaces = g.int !== 0;
      }
    }
  }
  return { pieces, ...m };
};

/** Parses SentencePiece ModelProto bytes; `source` names the file in errors. */
export const parseModelProto = (bytes: Uint8Array, source: string): E.Either<TokenizerError, ModelProto> => {
  try { return E.right(decodeModelProto(bytes)); }
  catch (e) {
    if (e instanceof WireError) return E.left(tokenizerError('format', source, e.message));
    throw e;
  }
};

/** The names of the model types camelid refuses (BPE, 2, is the one it reads). */
const REFUSED_TYPES: Readonly<Record<number, string>> = { 1: 'UNIGRAM', 3: 'WORD', 4: 'CHAR' };

/** Checks that the proto describes a tokenizer this BPE can reproduce exactly, and builds its spec. */
export const specFromModelProto = (m: ModelProto, source: string): E.Either<TokenizerError, TokenizerSpec> => {
  const bad = (kind: TokenizerError['kind'], what: string) => E.left(tokenizerError(kind, source, what));
  const n = m.pieces.length;
  if (n === 0) return bad('format', 'no pieces (protobuf field 1); not a SentencePiece model?');
  if (m.modelType !== 2)
    return bad('unsupported', `trainer_spec.model_type is ${REFUSED_TYPES[m.modelType] ?? m.modelType}; only BPE (2) is supported`);
  if (m.precompiledCharsmapBytes > 0)
    return bad('unsupported', `normalizer_spec '${m.normalizerName}' has a precompiled charsmap; only 'identity' is supported`);
  const seen = new Map<string, number>();
  for (const [i, p] of m.pieces.entries()) {
    if (p.type < 1 || p.type > 6) return bad('format', `pieces[${i}] '${p.piece}' has unknown type ${p.type}`);
    if (seen.has(p.piece)) return bad('format', `pieces[${i}] '${p.piece}' repeats pieces[${seen.get(p.piece)}]`);
    seen.set(p.piece, i);
  }
  for (const [name, id] of [['unk_id', m.unkId], ['bos_id', m.bosId], ['eos_id', m.eosId]] as const)
    if (id < -1 || id >= n || (name === 'unk_id' && id < 0)) return bad('format', `trainer_spec.${name} ${id} is outside [0, ${n})`);
  if (m.pieces[m.unkId]!.type !== PieceKind.Unknown)
    return bad('format', `trainer_spec.unk_id ${m.unkId} points at '${m.pieces[m.unkId]!.piece}', which is not of type UNKNOWN`);
  if (m.byteFallback)
    for (let b = 0; b < 256; b++) {
      const p = bytePiece(b);
      const id = seen.get(p);
      if (id === undefined) return bad('format', `byte_fallback is set but byte piece ${p} is missing`);
      if (m.pieces[id]!.type !== PieceKind.Byte) return bad('format', `byte_fallback is set but pieces[${id}] ${p} is not of type BYTE`);
    }
  return E.right({
    pieces: m.pieces.map((p) => p.piece),
    kinds: Uint8Array.from(m.pieces, (p) => p.type),
    merge: { by: 'score', scores: Float64Array.from(m.pieces, (p) => p.score) },
    bosId: m.bosId, eosId: m.eosId, unkId: m.unkId, byteFallback: m.byteFallback,
    addDummyPrefix: m.addDummyPrefix, removeExtraWhitespaces: m.removeExtraWhitespaces,
    escapeWhitespaces: m.escapeWhitespaces, whitespaceSuffix: m.treatWhitespaceAsSuffix, splitBeforeSpace: false,
    unkSurface: m.unkSurface,
  });
};
