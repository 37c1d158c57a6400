// llama2.c's tokenizer.bin (written by its tokenizer.py, read by run.c): int32 max_token_length, then per token a
// float32 score, an int32 byte length and the piece's UTF-8 bytes, to the end of the file (the count is the
// model's vocab_size, which the file does not store). Pieces were exported with '▁' turned into ' ' and BOS/EOS as
// '\n<s>\n' / '\n</s>\n'; this reads them back into a SentencePiece-style spec that encodes as run.c does.
import * as E from 'fp-ts/lib/Either.js';
import { PieceKind, SPACE, tokenizerError, type TokenizerError, type TokenizerSpec } from './bpe.js';

const BYTE_PIECE = /^<0x[0-9A-F]{2}>$/;
const SPECIAL = new Map([['\n<s>\n', '<s>'], ['\n</s>\n', '</s>']]); // a Map: 'toString' is a piece too

/**
 * A TokenizerSpec from llama2.c tokenizer.bin bytes. run.c adds the dummy prefix and keeps whitespace as it is.
 * @example specFromLlama2cTokenizer(readFileSync('tok512.bin'), 'tok512.bin') // Right({ pieces: ['<unk>', '<s>', ...] })
 */
export const specFromLlama2cTokenizer = (bytes: Uint8Array, source: string): E.Either<TokenizerError, TokenizerSpec> => {
  const bad = (what: string) => E.left(tokenizerError('format', source, `llama2.c tokenizer: ${what}`));
  if (bytes.length < 4) return bad(`file is ${bytes.length} bytes, too short for max_token_length (int32)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const maxLen = view.getInt32(0, true);
  if (maxLen <= 0) return bad(`max_token_length is ${maxLen}, expected a positive integer`);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const pieces: string[] = [], scores: number[] = [];
  const seen = new Map<string, number>(); // a piece twice would encode as either id: refused, as SentencePiece does
  for (let at = 4; at < bytes.length;) {
    const i = pieces.length;
    if (at + 8 > bytes.length) return bad(`token ${i} at byte ${at}: its score and length are cut off by the end of the file`);
    const score = view.getFloat32(at, true), len = view.getInt32(at + 4, true);
    if (!Number.isFinite(score)) return bad(`token ${i} at byte ${at}: score is ${score}`);
    if (len < 0 || len > maxLen) return bad(`token ${i} at byte ${at}: length ${len} is outside [0, max_token_length ${maxLen}]`);
    if (at + 8 + len > bytes.length) return bad(`token ${i} at byte ${at}: its ${len} bytes run past the end of the file`);
    let text: string;
    try { text = utf8.decode(bytes.subarray(at + 8, at + 8 + len)); }
    catch { return bad(`token ${i} at byte ${at}: piece is not valid UTF-8`); }
    const piece = SPECIAL.get(text) ?? text.replaceAll(' ', SPACE);
    const first = seen.get(piece);
    if (first !== undefined) return bad(`token ${i} at byte ${at}: piece '${piece}' repeats token ${first}`);
    seen.set(piece, i);
    pieces.push(piece);
    scores.push(score);
    at += 8 + len;
  }
  if (pieces.length === 0) return bad('no tokens after max_token_length');
  const unkId = pieces.indexOf('<unk>');
  if (unkId < 0) return bad("no '<unk>' piece");
  const kinds = Uint8Array.from(pieces, (p, i) =>
    i === unkId ? PieceKind.Unknown : p === '<s>' || p === '</s>' ? PieceKind.Control : BYTE_PIECE.test(p) ? PieceKind.Byte : PieceKind.Normal);
  const byteFallback = kinds.filter((k) => k === PieceKind.Byte).length === 256;
  return E.right({
    pieces, kinds, merge: { by: 'score', scores: Float64Array.from(scores) },
    bosId: pieces.indexOf('<s>'), eosId: pieces.indexOf('</s>'), unkId, byteFallback,
    addDummyPrefix: true, removeExtraWhitespaces: false, escapeWhitespaces: true, whitespaceSuffix: false, splitBeforeSpace: false,
    unkSurface: ' \u2047 ',
  });
};
