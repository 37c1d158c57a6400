// The two file readers of the tokenizer: Hugging Face tokenizer.json (models/tokenizer/hf.ts) and SentencePiece's
// ModelProto (models/tokenizer/proto.ts). Small hand-built files pin each field, each normalizer variant and each
// refusal with hand-worked ids and messages; the Llama 2 fixture checks the two readers against each other.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { tokenizerFromJson, tokenizerFromModelProto } from '../models/tokenizer/index.js';
import { PieceKind, type TokenizerError } from '../models/tokenizer/bpe.js';
import { specFromTokenizerJson } from '../models/tokenizer/hf.js';
import { parseModelProto, specFromModelProto, type ModelProto } from '../models/tokenizer/proto.js';
import { right } from './helpers.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared/fixtures');
const LLAMA = path.join(FIXTURES, 'llama2-tokenizer-32k/tokenizer.model');
const haveLlama = existsSync(LLAMA);
if (!haveLlama) console.warn(`[tokenizer-hf.test] SKIPPING Llama 2 fixture tests: ${LLAMA} not found`);

/** A Left's kind and message; a Right fails the test. */
const refusal = <A>(e: E.Either<TokenizerError, A>) => {
  if (E.isRight(e)) throw new Error('expected a Left, got a Right');
  return { kind: e.left.kind, message: e.left.message };
};

// ---- tokenizer.json -------------------------------------------------------------------------------------------
// ids 0-2 specials, then pieces whose merges are listed by rank: '▁ a' first, so '▁ab' forms as ▁a + b.
const VOCAB = { '<unk>': 0, '<s>': 1, '</s>': 2, '▁': 3, a: 4, b: 5, ab: 6, '▁a': 7, '▁ab': 8, '▁▁': 9, ' ': 10 };
const MERGES = ['▁ a', 'a b', '▁a b', '▁ ▁'];
const SPECIALS = [{ id: 0, content: '<unk>', special: true }, { id: 1, content: '<s>', special: true }, { id: 2, content: '</s>', special: true }];
const PREPEND = { type: 'Prepend', prepend: '▁' }, REPLACE = { type: 'Replace', pattern: { String: ' ' }, content: '▁' };
const LEGACY = { type: 'Sequence', normalizers: [PREPEND, REPLACE] }; // Llama 2's tokenizer.json before tokenizers 0.19
const metaspace = (o: object = {}) => ({ type: 'Metaspace', replacement: '▁', ...o });
const json = (model: object = {}, top: object = {}) => ({
  version: '1.0', added_tokens: SPECIALS, normalizer: LEGACY, pre_tokenizer: null,
  model: { type: 'BPE', vocab: VOCAB, merges: MERGES, unk_token: '<unk>', ...model },
  ...top,
});
const hfIds = (j: unknown, text: string) => right(tokenizerFromJson(j, 'tok.json')).encode(text, { bos: false });
const hfRefusal = (j: unknown) => refusal(specFromTokenizerJson(j, 'tok.json'));
/** 256 byte pieces <0x00>…<0xFF> at ids 3…258 after the specials (as in Llama 2), then `rest`. */
const byteVocab = (rest: readonly string[]) => Object.fromEntries([
  '<unk>', '<s>', '</s>', ...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), ...rest,
].map((p, i) => [p, i]));

describe('tokenizer.json: a wrong-typed field is a format error naming the file and the field path', () => {
  const cases: [what: string, j: unknown, message: string][] = [
    ['not an object', null, '(root): expected a JSON object, got null'],
    ['an array', [], '(root): expected a JSON object, got []'],
    ['model a string', { model: 'BPE' }, 'model: expected a JSON object, got "BPE"'],
    ['vocab missing', { model: { merges: [] } }, 'model.vocab: expected an object of piece ids, got nothing (field missing)'],
    ['an id a string', json({ vocab: { ...VOCAB, a: '4' } }), "model.vocab['a']: expected number, got \"4\""],
    ['merges an object', json({ merges: {} }), 'model.merges: expected an array of merges, got {}'],
    ['a merge a number', json({ merges: ['a b', 3] }), "model.merges[1]: expected a 'left right' string or a [left, right] pair, got 3"],
    // (io-ts tuples keep the first two of three items: this was once read as the merge a b)
    ['a merge of three', json({ merges: [['a', 'b', 'c']] }), "model.merges[0]: expected a 'left right' string or a [left, right] pair, got [\"a\",\"b\",\"c\"]"],
    ['a merge of a number', json({ merges: [['a', 5]] }), "model.merges[0]: expected a 'left right' string or a [left, right] pair, got [\"a\",5]"],
    ['a merge of a number first', json({ merges: [[5, 'a']] }), "model.merges[0]: expected a 'left right' string or a [left, right] pair, got [5,\"a\"]"],
    ['type a number', json({ type: 1 }), 'model.type: expected string, got 1'],
    ['byte_fallback a string', json({ byte_fallback: 'yes' }), 'model.byte_fallback: expected boolean, got "yes"'],
    ['unk_token a number', json({ unk_token: 0 }), 'model.unk_token: expected string, got 0'],
    ['dropout a string', json({ dropout: '0.1' }), 'model.dropout: expected number, got "0.1"'],
    ['continuing_subword_prefix', json({ continuing_subword_prefix: 1 }), 'model.continuing_subword_prefix: expected string, got 1'],
    ['end_of_word_suffix', json({ end_of_word_suffix: false }), 'model.end_of_word_suffix: expected string, got false'],
    ['added_tokens an object', json({}, { added_tokens: {} }), 'added_tokens: expected an array of added tokens, got {}'],
    ['an added id a string', json({}, { added_tokens: [SPECIALS[0], { id: '1', content: '<s>' }] }), 'added_tokens[1].id: expected number, got "1"'],
    ['an added content missing', json({}, { added_tokens: [{ id: 0 }] }), 'added_tokens[0].content: expected string, got nothing (field missing)'],
    ['an added special a string', json({}, { added_tokens: [{ id: 0, content: '<unk>', special: 'yes' }] }), 'added_tokens[0].special: expected boolean, got "yes"'],
    ['a normalizer string', json({}, { normalizer: 'Prepend' }), 'normalizer: expected a JSON object, got "Prepend"'],
    ['a step without type', json({}, { normalizer: {} }), 'normalizer.type: expected string, got nothing (field missing)'],
    ['a nested step', json({}, { normalizer: { type: 'Sequence', normalizers: [PREPEND, { ...REPLACE, content: 2 }] } }), 'normalizer.normalizers[1].content: expected string, got 2'],
    ['a nested step not an object', json({}, { normalizer: { type: 'Sequence', normalizers: [PREPEND, 'Replace'] } }), 'normalizer.normalizers[1]: expected a JSON object, got "Replace"'],
    ['normalizers not a list', json({}, { normalizer: { type: 'Sequence', normalizers: PREPEND } }), 'normalizer.normalizers: expected Array<unknown>, got {"type":"Prepend","prepend":"▁"}'],
    ['prepend a number', json({}, { normalizer: { type: 'Prepend', prepend: 3 } }), 'normalizer.prepend: expected string, got 3'],
    ['replacement a number', json({}, { normalizer: null, pre_tokenizer: metaspace({ replacement: 1 }) }), 'pre_tokenizer.replacement: expected string, got 1'],
    ['prepend_scheme a bool', json({}, { normalizer: null, pre_tokenizer: metaspace({ prepend_scheme: true }) }), 'pre_tokenizer.prepend_scheme: expected string, got true'],
    ['add_prefix_space a string', json({}, { normalizer: null, pre_tokenizer: metaspace({ add_prefix_space: 'no' }) }), 'pre_tokenizer.add_prefix_space: expected boolean, got "no"'],
    ['split a number', json({}, { normalizer: null, pre_tokenizer: metaspace({ split: 0 }) }), 'pre_tokenizer.split: expected boolean, got 0'],
    ['pretokenizers not a list', json({}, { normalizer: null, pre_tokenizer: { type: 'Sequence', pretokenizers: 'Metaspace' } }), 'pre_tokenizer.pretokenizers: expected Array<unknown>, got "Metaspace"'],
    // a long value is cut to 80 characters, the cut marked
    ['a long value', json({ vocab: { a: 'x'.repeat(100) } }), `model.vocab['a']: expected number, got "${'x'.repeat(76)}...`],
    ['a value of 80 characters, whole', json({ vocab: { a: 'x'.repeat(78) } }), `model.vocab['a']: expected number, got "${'x'.repeat(78)}"`],
  ];
  it.each(cases)('%s', (_, j, message) => {
    expect(hfRefusal(j)).toEqual({ kind: 'format', message: `tok.json: ${message}` });
  });
});

describe('tokenizer.json: what it accepts', () => {
  it('null or absent optional fields, and keys it does not model (lenient, as Hugging Face files vary)', () => {
    const j = {
      model: { vocab: VOCAB, merges: MERGES, unk_token: '<unk>', byte_fallback: null, dropout: null, continuing_subword_prefix: null,
        end_of_word_suffix: null, fuse_unk: true, ignore_merges: false },
      added_tokens: null, normalizer: null, pre_tokenizer: null, decoder: { type: 'ByteFallback' }, truncation: null,
    };
    const tok = right(tokenizerFromJson(j, 'tok.json'));
    expect(tok.encode('ab a')).toEqual([1, 6, 10, 4]); // no normalizer: no '▁'; BOS is the vocab's '<s>'
    expect([tok.bosId, tok.eosId, tok.unkId]).toEqual([1, 2, 0]);
    // empty or zero settings ask for nothing either
    expect(hfIds(json({ dropout: 0, continuing_subword_prefix: '', end_of_word_suffix: '' }), 'ab')).toEqual([6 + 2]);
  });
  it('merges as "left right" strings or [left, right] pairs, ranked by position', () => {
    expect(hfIds(json(), 'ab')).toEqual([8]); // '▁ab': ▁a (rank 0), then ▁a b (rank 2)
    expect(hfIds(json({ merges: MERGES.map((m) => m.split(' ')) }), 'ab')).toEqual([8]);
    expect(hfIds(json({ merges: ['a b', '▁ a', '▁a b'] }), 'ab')).toEqual([3, 6]); // ab first: '▁'+'ab' is no merge
  });
  it('a pair listed twice keeps its first rank', () => {
    expect(hfIds(json({ merges: ['a b', '▁ a', '▁a b', 'a b'] }), 'ab')).toEqual([3, 6]);
  });
  it('ids from added_tokens fill the vocab; a repeated entry with the same id is fine (as Llama 2 files have)', () => {
    const { '<s>': _, ...noBos } = VOCAB;
    const tok = right(tokenizerFromJson(json({ vocab: noBos }), 'tok.json'));
    expect([tok.vocabSize, tok.bosId, tok.pieces[1]]).toEqual([11, 1, '<s>']);
  });
  it('a piece listed again under another id: BOS is the added token (HF token_to_id), merges use the first id (SentencePiece)', () => {
    const added = [SPECIALS[0], SPECIALS[2], { id: 11, content: '<s>', special: true }, { id: 12, content: 'a' }];
    expect(right(tokenizerFromJson(json({}, { added_tokens: added }), 'tok.json')).encode('ab')).toEqual([11, 8]);
  });
  it('special added tokens decode to nothing; other added tokens decode as their text', () => {
    const tok = right(tokenizerFromJson(json({}, { added_tokens: [...SPECIALS, { id: 11, content: '<x>', special: false }, { id: 12, content: '<y>' }] }), 'tok.json'));
    expect(tok.decode([1, 7, 11, 12, 2])).toBe('a<x><y>');
  });
  it('without <s> and </s> there is no BOS or EOS', () => {
    const tok = right(tokenizerFromJson({ model: { vocab: { '<unk>': 0, a: 1 }, merges: [], unk_token: '<unk>' } }, 'tok.json'));
    expect([tok.bosId, tok.eosId, ...tok.encode('a', { eos: true })]).toEqual([-1, -1, 1]);
  });
  it('the unk token can sit at any id; an unknown character encodes to it and decodes as " ⁇ "', () => {
    const tok = right(tokenizerFromJson({ model: { vocab: { '<s>': 0, '</s>': 1, '<unk>': 2, a: 3 }, merges: [], unk_token: '<unk>' } }, 'tok.json'));
    expect(tok.encode('az')).toEqual([0, 3, 2]);
    expect([tok.unkId, tok.decode([3, 2])]).toEqual([2, 'a \u2047 ']);
  });
  it('byte fallback: characters with no piece become their UTF-8 byte pieces, and decode back; no unk needed', () => {
    const j = { model: { vocab: byteVocab(['▁', 'a']), merges: [], byte_fallback: true }, added_tokens: SPECIALS, normalizer: LEGACY };
    const tok = right(tokenizerFromJson(j, 'tok.json'));
    const ids = tok.encode('a\né', { bos: false });
    expect(ids).toEqual([259, 260, 3 + 0x0a, 3 + 0xc3, 3 + 0xa9]); // ▁ a <0x0A> <0xC3> <0xA9>
    expect([tok.decode(ids), tok.unkId]).toEqual(['a\né', -1]);
  });
});

describe('tokenizer.json: normalizer and pre-tokenizer variants give the SentencePiece text they stand for', () => {
  // 'ab a' → '▁ab▁a' → ▁a b ▁a → ▁ab ▁a; without the dummy prefix 'ab▁a' → ab ▁a; unescaped 'ab a' → ab ' ' a.
  const cases: [what: string, top: object, ids: number[]][] = [
    ['Sequence[Prepend(▁), Replace(" ", ▁)] (legacy Llama 2)', {}, [8, 7]],
    ['Replace(" ", ▁) alone: no dummy prefix', { normalizer: REPLACE }, [6, 7]],
    ['no normalizer: spaces stay spaces', { normalizer: null }, [6, 10, 4]],
    ['Metaspace pre-tokenizer, prepend_scheme first, split false (Llama 2 since tokenizers 0.19)',
      { normalizer: null, pre_tokenizer: metaspace({ prepend_scheme: 'first', split: false }) }, [8, 7]],
    ['Metaspace prepend_scheme always', { normalizer: null, pre_tokenizer: metaspace({ prepend_scheme: 'always' }) }, [8, 7]],
    ['Metaspace prepend_scheme never', { normalizer: null, pre_tokenizer: metaspace({ prepend_scheme: 'never' }) }, [6, 7]],
    ['Metaspace add_prefix_space false (before prepend_scheme)', { normalizer: null, pre_tokenizer: metaspace({ add_prefix_space: false }) }, [6, 7]],
    ['Metaspace add_prefix_space true', { normalizer: null, pre_tokenizer: metaspace({ add_prefix_space: true }) }, [8, 7]],
    ['Metaspace with defaults only', { normalizer: null, pre_tokenizer: { type: 'Metaspace' } }, [8, 7]],
    ['pre-tokenizer Sequence of a Metaspace', { normalizer: null, pre_tokenizer: { type: 'Sequence', pretokenizers: [metaspace()] } }, [8, 7]],
    ['an empty normalizer Sequence', { normalizer: { type: 'Sequence', normalizers: [] } }, [6, 10, 4]],
  ];
  it.each(cases)('%s', (_, top, ids) => {
    expect(hfIds(json({}, top), 'ab a')).toEqual(ids);
  });
  it("Metaspace split (its default) encodes each '▁'-word alone: no merge joins two '▁'", () => {
    // 'a  b' → '▁a▁▁b'; split: ▁a | ▁ | ▁b (▁b is no piece: ▁, b); unsplit: ▁a ▁▁ b (the '▁ ▁' merge)
    const ms = (o: object) => hfIds(json({}, { normalizer: null, pre_tokenizer: metaspace(o) }), 'a  b');
    expect(ms({})).toEqual([7, 3, 3, 5]);
    expect(ms({ split: true })).toEqual([7, 3, 3, 5]);
    expect(ms({ split: false })).toEqual([7, 9, 5]);
  });

  const unsupported: [what: string, top: object, message: string][] = [
    ["Prepend('▁') without Replace", { normalizer: PREPEND }, "Prepend('▁') without Replace(' ', '▁')"],
    ['Prepend of another string', { normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '_' }, REPLACE] } },
      `normalizer.normalizers[0] {"type":"Prepend","prepend":"_"} is not supported`],
    ['Replace by a regex', { normalizer: { ...REPLACE, pattern: { Regex: ' ' } } }, 'normalizer {"type":"Replace","pattern":{"Regex":" "},"content":"▁"} is not supported'],
    ['Replace of another string', { normalizer: { ...REPLACE, pattern: { String: '\t' } } }, 'normalizer {"type":"Replace","pattern":{"String":"\\t"},"content":"▁"} is not supported'],
    ['Replace by another string', { normalizer: { ...REPLACE, content: '_' } }, 'normalizer {"type":"Replace","pattern":{"String":" "},"content":"_"} is not supported'],
    ['Metaspace with another replacement', { normalizer: null, pre_tokenizer: metaspace({ replacement: '_' }) }, 'pre_tokenizer {"type":"Metaspace","replacement":"_"} is not supported'],
    ['another normalizer in a Sequence', { normalizer: { type: 'Sequence', normalizers: [PREPEND, REPLACE, { type: 'NFKC' }] } }, 'normalizer.normalizers[2] {"type":"NFKC"} is not supported'],
    ['another pre-tokenizer in a Sequence', { normalizer: null, pre_tokenizer: { type: 'Sequence', pretokenizers: [metaspace(), { type: 'ByteLevel' }] } },
      'pre_tokenizer.pretokenizers[1] {"type":"ByteLevel"} is not supported'],
    ['a bad normalizer is named before the pre-tokenizer', { normalizer: { type: 'NFC' }, pre_tokenizer: { type: 'ByteLevel' } }, 'normalizer {"type":"NFC"} is not supported'],
    ['a bad pre-tokenizer after a good normalizer', { pre_tokenizer: { type: 'ByteLevel' } }, 'pre_tokenizer {"type":"ByteLevel"} is not supported'],
  ];
  it.each(unsupported)('refuses %s, naming where', (_, top, message) => {
    const r = hfRefusal(json({}, top));
    expect(r.kind).toBe('unsupported');
    expect(r.message.startsWith(`tok.json: ${message}`), r.message).toBe(true);
  });
  it("a Sequence's steps are read from its own list, never taken as none", () => {
    // a pre-tokenizer Sequence lists `pretokenizers`; `normalizers` there is not its list (and was once read as empty)
    expect(hfRefusal(json({}, { pre_tokenizer: { type: 'Sequence', normalizers: [{ type: 'ByteLevel' }] } })))
      .toEqual({ kind: 'format', message: 'tok.json: pre_tokenizer.pretokenizers: expected an array, got nothing (field missing)' });
    expect(hfRefusal(json({}, { normalizer: { type: 'Sequence', pretokenizers: [] } })))
      .toEqual({ kind: 'format', message: 'tok.json: normalizer.normalizers: expected an array, got nothing (field missing)' });
  });
});

describe('tokenizer.json: refusals of the model', () => {
  const rename = (from: string, to: string) => Object.fromEntries(Object.entries(VOCAB).map(([p, id]) => [p === from ? to : p, id]));
  const cases: [what: string, j: unknown, kind: TokenizerError['kind'], message: string][] = [
    ['another model type', json({ type: 'WordPiece' }), 'unsupported', "model.type is 'WordPiece'; only 'BPE' is supported"],
    ['BPE dropout', json({ dropout: 0.1 }), 'unsupported', 'model.dropout is 0.1; only deterministic BPE is supported'],
    ['a continuing-subword prefix', json({ continuing_subword_prefix: '##' }), 'unsupported', 'model.continuing_subword_prefix / end_of_word_suffix are not supported'],
    ['an end-of-word suffix', json({ end_of_word_suffix: '</w>' }), 'unsupported', 'model.continuing_subword_prefix / end_of_word_suffix are not supported'],
    ['a negative id', json({ vocab: { ...VOCAB, z: -1 } }), 'format', "model.vocab['z']: id -1 is not a non-negative integer"],
    ['a fractional id', json({ vocab: { ...VOCAB, z: 11.5 } }), 'format', "model.vocab['z']: id 11.5 is not a non-negative integer"],
    ['an added token with a bad id', json({}, { added_tokens: [...SPECIALS, { id: -3, content: '<x>' }] }), 'format', 'added_tokens[3]: id -3 is not a non-negative integer'],
    ['two pieces with one id', json({ vocab: { ...VOCAB, z: 4 } }), 'format', "model.vocab['z']: id 4 is both 'a' and 'z'"],
    ['an added token on a taken id', json({}, { added_tokens: [...SPECIALS, { id: 4, content: '<x>' }] }), 'format', "added_tokens[3]: id 4 is both 'a' and '<x>'"],
    ['a gap in the ids', json({ vocab: { ...VOCAB, z: 12 } }), 'format', 'ids are not dense: no token has id 11 (of 12)'],
    ['an unk_token not in the vocab', json({ unk_token: '<UNK>' }), 'format', "model.unk_token '<UNK>' is not in model.vocab"],
    ['neither unk_token nor byte_fallback', json({ unk_token: null }), 'unsupported', 'no model.unk_token and no byte_fallback: unknown characters would have no id'],
    ['byte_fallback without all byte pieces', { model: { vocab: (({ '<0x0A>': _, ...v }) => ({ ...v, a: 13 }))(byteVocab([])), merges: [], byte_fallback: true } },
      'format', 'model.byte_fallback is true but model.vocab lacks <0x0A>'],
    ['a merge without a space', json({ merges: ['ab'] }), 'format', "model.merges[0] 'ab' is not 'left right'"],
    ['a merge starting with a space', json({ merges: ['▁ a', ' ab'] }), 'format', "model.merges[1] ' ab' is not 'left right'"],
    // the joined piece is in the vocab: each side is checked on its own
    ['a merge of an unknown left piece', json({ vocab: rename('a', 'c'), merges: ['a b'] }), 'format', "model.merges[0] ('a', 'b'): 'a' is not in model.vocab"],
    ['a merge of an unknown right piece', json({ vocab: rename('b', 'c'), merges: [['a', 'b']] }), 'format', "model.merges[0] ('a', 'b'): 'b' is not in model.vocab"],
    ['a merge whose result is no piece', json({ merges: ['b a'] }), 'format', "model.merges[0] ('b', 'a'): 'ba' is not in model.vocab"],
  ];
  it.each(cases)('%s', (_, j, kind, message) => {
    expect(hfRefusal(j)).toEqual({ kind, message: `tok.json: ${message}` });
  });
});

// ---- SentencePiece ModelProto ---------------------------------------------------------------------------------
// A protobuf writer for hand-built files: tag = field number · 8 + wire type (0 varint, 1 fixed64, 2 bytes, 5 fixed32).
const varint = (n: number | bigint): number[] => {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(n)); // a negative int32 is written as ten bytes, like protobuf does
  do { const b = Number(v & 0x7fn); v >>= 7n; out.push(v ? b | 0x80 : b); } while (v);
  return out;
};
const tag = (no: number, wire: number) => varint(no * 8 + wire);
const bytes = (no: number, body: readonly number[]) => [...tag(no, 2), ...varint(body.length), ...body];
const str = (no: number, s: string) => bytes(no, [...new TextEncoder().encode(s)]);
const int = (no: number, v: number) => [...tag(no, 0), ...varint(v)];
const f32 = (no: number, x: number) => [...tag(no, 5), ...new Uint8Array(Float32Array.of(x).buffer)];
const f64 = (no: number) => [...tag(no, 1), 1, 2, 3, 4, 5, 6, 7, 8];
type Piece = readonly [piece: string, score: number, type?: number];
const piece = ([p, s, t = 1]: Piece) => bytes(1, [...str(1, p), ...f32(2, s), ...int(3, t)]);
const SPECIAL: Piece[] = [['<unk>', 0, 2], ['<s>', 0, 3], ['</s>', 0, 3]];
const CHARS: Piece[] = [['▁', -1], ['a', -2], ['b', -3], [' ', -4]]; // ids 3-6; no longer pieces, so no merges
/** A BPE ModelProto: pieces, then trainer_spec (model_type BPE plus `trainer`) and normalizer_spec (`normalizer`). */
const proto = (pieces: readonly Piece[], trainer: number[] = [], normalizer: number[] = []) => Uint8Array.from([
  ...pieces.flatMap(piece), ...bytes(2, [...int(3, 2), ...trainer]), ...bytes(3, [...str(1, 'identity'), ...normalizer]),
]);
const parsed = (b: readonly number[] | Uint8Array) => right(parseModelProto(Uint8Array.from(b), 't.model'));
const parseRefusal = (b: readonly number[]) => refusal(parseModelProto(Uint8Array.from(b), 't.model'));
const spRefusal = (b: Uint8Array) => refusal(tokenizerFromModelProto(b, 't.model'));
const spIds = (b: Uint8Array, text: string) => right(tokenizerFromModelProto(b, 't.model')).encode(text, { bos: false });

describe('ModelProto: the fields camelid reads', () => {
  it("a field left out has SentencePiece's default (sentencepiece_model.proto)", () => {
    expect(parsed([...bytes(1, []), ...bytes(2, []), ...bytes(3, [])])).toEqual<ModelProto>({
      pieces: [{ piece: '', score: 0, type: 1 }], modelType: 1, byteFallback: false, unkId: 0, bosId: 1, eosId: 2, padId: -1,
      unkSurface: ' \u2047 ', treatWhitespaceAsSuffix: false, normalizerName: '', precompiledCharsmapBytes: 0,
      addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true,
    });
  });
  it('every field it reads, each set away from its default', () => {
    const b = [
      ...piece(['<unk>', 0, 2]), ...piece(['ab', 1.5, 4]),
      ...bytes(2, [...int(3, 3), ...int(24, 1), ...int(35, 1), ...int(40, 1), ...int(41, -1), ...int(42, 0), ...int(43, 7), ...str(44, '<?>')]),
      ...bytes(3, [...str(1, 'nmt_nfkc'), ...bytes(2, [9, 9, 9]), ...int(3, 0), ...int(4, 0), ...int(5, 0)]),
    ];
    expect(parsed(b)).toEqual<ModelProto>({
      pieces: [{ piece: '<unk>', score: 0, type: 2 }, { piece: 'ab', score: 1.5, type: 4 }], modelType: 3, byteFallback: true,
      unkId: 1, bosId: -1, eosId: 0, padId: 7, unkSurface: '<?>', treatWhitespaceAsSuffix: true, normalizerName: 'nmt_nfkc',
      precompiledCharsmapBytes: 3, addDummyPrefix: false, removeExtraWhitespaces: false, escapeWhitespaces: false,
    });
  });
  it('a negative int32 (a ten-byte varint) reads back exactly', () => {
    for (const v of [-1, -2, -9, -1000, -(2 ** 31)]) expect(parsed(bytes(2, int(43, v))).padId, String(v)).toBe(v);
  });
  it('booleans set to their defaults explicitly read the same', () => {
    const m = parsed([...bytes(2, [...int(24, 0), ...int(35, 0)]), ...bytes(3, [...int(3, 1), ...int(4, 1), ...int(5, 1)])]);
    expect([m.treatWhitespaceAsSuffix, m.byteFallback, m.addDummyPrefix, m.removeExtraWhitespaces, m.escapeWhitespaces])
      .toEqual([false, false, true, true, true]);
  });
  it('unknown fields of every wire type are skipped at every level, denormalizer_spec (field 5) too', () => {
    const junk = [...int(99, 5), ...f64(98), ...str(97, 'x'), ...f32(96, 2)];
    const plain = proto([...SPECIAL, ['a', -1]], int(40, 0), int(3, 1));
    const noisy = Uint8Array.from([
      ...junk, ...SPECIAL.flatMap(piece), ...bytes(1, [...str(1, 'a'), ...f32(2, -1), ...int(3, 1), ...junk]),
      ...bytes(2, [...junk, ...int(3, 2), ...int(40, 0)]), ...bytes(3, [...str(1, 'identity'), ...junk, ...int(3, 1)]),
      ...bytes(5, [...str(1, 'identity'), ...int(3, 0), ...int(5, 0)]), ...junk,
    ]);
    expect(parsed(noisy)).toEqual(parsed(plain));
  });
});

describe('ModelProto: malformed bytes are a format error naming the field and the byte', () => {
  const cases: [what: string, b: number[], message: string][] = [
    ['field number 0', [...tag(0, 2), 0], 'protobuf field number 0 at byte 0'],
    ['wire type 3 (group start)', [...tag(9, 3), 0], 'protobuf field 9 at byte 0 has unsupported wire type 3'],
    ['wire type 4 (group end)', [...int(8, 1), ...tag(9, 4)], 'protobuf field 9 at byte 2 has unsupported wire type 4'],
    ['wire type 6', [...tag(9, 6), 0], 'protobuf field 9 at byte 0 has unsupported wire type 6'],
    ['wire type 7', [...tag(9, 7), 0], 'protobuf field 9 at byte 0 has unsupported wire type 7'],
    ['a tag cut off', [0x80], 'protobuf field tag truncated at byte 1'],
    ['a varint cut off', [...tag(10, 0), 0x80], 'protobuf field 10 truncated at byte 2'],
    ['a varint of 11 bytes', [...tag(10, 0), ...Array<number>(10).fill(0x80), 1], 'protobuf field 10 is a varint longer than 10 bytes at byte 11'],
    ['a length cut off', tag(10, 2), 'protobuf field 10 length truncated at byte 1'],
    ['a payload cut off', [...tag(10, 2), 5, 1, 2], 'protobuf field 10 truncated at byte 2 (needs 5 bytes, 2 left)'],
    ['a fixed32 cut off', [...tag(10, 5), 1, 2], 'protobuf field 10 truncated at byte 1 (needs 4 bytes, 2 left)'],
    ['a fixed64 cut off', [...tag(10, 1), 1, 2, 3], 'protobuf field 10 truncated at byte 1 (needs 8 bytes, 3 left)'],
    // a message ends where its length says, even when more bytes follow: model_type's varint is cut at byte 4
    ['a varint cut off by its message end', [...bytes(2, [...tag(3, 0), 0x82]), ...int(8, 1)], 'protobuf field 2 (trainer_spec): field 3 (model_type) truncated at byte 4'],
    ['a piece that is not UTF-8', [...piece(['<unk>', 0, 2]), ...bytes(1, bytes(1, [0x61, 0x80]))], 'protobuf field 1 (pieces) #1: field 1 (piece) invalid UTF-8 at bytes 20..22'],
    ['an unk_surface that is not UTF-8', bytes(2, bytes(44, [0xc3])), 'protobuf field 2 (trainer_spec): field 44 (unk_surface) invalid UTF-8 at bytes 5..6'],
    ['a normalizer name that is not UTF-8', bytes(3, bytes(1, [0xff, 0x61])), 'protobuf field 3 (normalizer_spec): field 1 (name) invalid UTF-8 at bytes 4..6'],
  ];
  it.each(cases)('%s', (_, b, message) => {
    expect(parseRefusal(b)).toEqual({ kind: 'format', message: `t.model: ${message}` });
  });

  // Each field camelid reads, given with the wrong wire type as the first field of its message.
  const fields: [message: number | null, no: number, name: string, wire: number][] = [
    [null, 1, 'pieces', 2], [null, 2, 'trainer_spec', 2], [null, 3, 'normalizer_spec', 2],
    [1, 1, 'piece', 2], [1, 2, 'score', 5], [1, 3, 'type', 0],
    [2, 3, 'model_type', 0], [2, 24, 'treat_whitespace_as_suffix', 0], [2, 35, 'byte_fallback', 0], [2, 40, 'unk_id', 0],
    [2, 41, 'bos_id', 0], [2, 42, 'eos_id', 0], [2, 43, 'pad_id', 0], [2, 44, 'unk_surface', 2],
    [3, 1, 'name', 2], [3, 2, 'precompiled_charsmap', 2], [3, 3, 'add_dummy_prefix', 0], [3, 4, 'remove_extra_whitespaces', 0],
    [3, 5, 'escape_whitespaces', 0],
  ];
  const OUTER: Record<number, string> = { 1: 'protobuf field 1 (pieces) #0: ', 2: 'protobuf field 2 (trainer_spec): ', 3: 'protobuf field 3 (normalizer_spec): ' };
  it.each(fields)('a wrong wire type: message %s, field %i (%s)', (msg, no, name, wire) => {
    const wrong = wire === 2 ? int(no, 1) : str(no, ''); // a varint where bytes belong, bytes elsewhere
    const b = msg === null ? wrong : bytes(msg, wrong);
    const at = msg === null ? 0 : 2; // inside a message: after its one-byte tag and length
    const prefix = msg === null ? 'protobuf ' : OUTER[msg]!;
    expect(parseRefusal(b)).toEqual({ kind: 'format', message: `t.model: ${prefix}field ${no} (${name}) at byte ${at} has wire type ${wire === 2 ? 0 : 2}, expected ${wire}` });
  });
  it('a valid field is read whatever bytes follow its message', () => {
    expect(parsed([...bytes(2, int(41, 4)), ...int(8, 1)]).bosId).toBe(4);
  });
});

describe('ModelProto: what the tokenizer can reproduce', () => {
  it('encodes with each normalizer flag as SentencePiece does', () => {
    const ids = (normalizer: number[], trainer: number[], text: string) => spIds(proto([...SPECIAL, ...CHARS], trainer, normalizer), text);
    expect(ids([], [], ' a  b ')).toEqual([3, 4, 3, 5]); // defaults: extra spaces removed, dummy '▁', ' ' → '▁'
    expect(ids(int(4, 0), [], ' a  b ')).toEqual([3, 3, 4, 3, 3, 5, 3]);
    expect(ids([...int(4, 0), ...int(3, 0)], [], 'a b')).toEqual([4, 3, 5]);
    expect(ids([...int(4, 0), ...int(5, 0)], [], 'a b')).toEqual([6, 4, 6, 5]); // dummy prefix is a plain space
    expect(ids(int(4, 0), int(24, 1), 'a b')).toEqual([4, 3, 5, 3]); // the dummy '▁' at the end
  });
  it('reads special ids and the unk surface into the tokenizer', () => {
    const b = proto([['a', -1], ['b', -1], ['<unk>', 0, 2], ['<s>', 0, 3], ['</s>', 0, 3]], [...int(40, 2), ...int(41, 3), ...int(42, 4), ...str(44, '?')], int(3, 0));
    const tok = right(tokenizerFromModelProto(b, 't.model'));
    expect(tok.encode('az', { eos: true })).toEqual([3, 0, 2, 4]);
    expect(tok.decode([0, 2, 1])).toBe('a?b');
  });
  it('bos_id and eos_id -1 mean none; the last id is a valid one', () => {
    const tok = right(tokenizerFromModelProto(proto([...SPECIAL, ...CHARS], [...int(41, -1), ...int(42, 6)]), 't.model'));
    expect([tok.bosId, tok.eosId]).toEqual([-1, 6]);
    expect(tok.encode('a', { eos: true })).toEqual([3, 4, 6]);
  });
  it('accepts every piece type SentencePiece defines (1-6) and an empty precompiled charsmap', () => {
    const b = proto([...SPECIAL, ['a', -1, 1], ['<u>', 0, 4], ['ab', -1, 5], ['<0x41>', 0, 6]], [], bytes(2, []));
    expect(right(tokenizerFromModelProto(b, 't.model')).vocabSize).toBe(7);
  });
  it('byte fallback with all 256 byte pieces', () => {
    const b = proto([['<unk>', 0, 2], ...byteNames().map((p): Piece => [p, 0, 6]), ['▁', -1]], [...int(35, 1), ...int(41, -1), ...int(42, -1)]);
    expect(spIds(b, '\n')).toEqual([257, 1 + 0x0a]);
  });

  const bytePieces = (drop: string, wrongType?: string): Piece[] =>
    byteNames().filter((p) => p !== drop).map((p) => [p, 0, p === wrongType ? 1 : 6]);
  const cases: [what: string, b: Uint8Array, kind: TokenizerError['kind'], message: string][] = [
    ['no pieces', Uint8Array.from(bytes(2, int(3, 2))), 'format', 'no pieces (protobuf field 1); not a SentencePiece model?'],
    ['model_type absent (UNIGRAM)', Uint8Array.from(piece(SPECIAL[0]!)), 'unsupported', 'trainer_spec.model_type is UNIGRAM; only BPE (2) is supported'],
    ['model_type WORD', Uint8Array.from([...piece(SPECIAL[0]!), ...bytes(2, int(3, 3))]), 'unsupported', 'trainer_spec.model_type is WORD; only BPE (2) is supported'],
    ['model_type CHAR', Uint8Array.from([...piece(SPECIAL[0]!), ...bytes(2, int(3, 4))]), 'unsupported', 'trainer_spec.model_type is CHAR; only BPE (2) is supported'],
    ['model_type 0', Uint8Array.from([...piece(SPECIAL[0]!), ...bytes(2, int(3, 0))]), 'unsupported', 'trainer_spec.model_type is 0; only BPE (2) is supported'],
    ['a precompiled charsmap', proto(SPECIAL, [], [...str(1, 'nmt_nfkc'), ...bytes(2, [1])]), 'unsupported',
      "normalizer_spec 'nmt_nfkc' has a precompiled charsmap; only 'identity' is supported"],
    ['a piece of type 0', proto([...SPECIAL, ['a', 0, 0]]), 'format', "pieces[3] 'a' has unknown type 0"],
    ['a piece of type 7', proto([...SPECIAL, ['a', 0, 7]]), 'format', "pieces[3] 'a' has unknown type 7"],
    ['a piece twice', proto([...SPECIAL, ['a', 0], ['b', 0], ['a', -1]]), 'format', "pieces[5] 'a' repeats pieces[3]"],
    ['unk_id -1', proto(SPECIAL, int(40, -1)), 'format', 'trainer_spec.unk_id -1 is outside [0, 3)'],
    ['unk_id past the end', proto(SPECIAL, int(40, 3)), 'format', 'trainer_spec.unk_id 3 is outside [0, 3)'],
    ['bos_id -2', proto(SPECIAL, int(41, -2)), 'format', 'trainer_spec.bos_id -2 is outside [0, 3)'],
    ['eos_id past the end', proto(SPECIAL, int(42, 3)), 'format', 'trainer_spec.eos_id 3 is outside [0, 3)'],
    ['unk_id on a control piece', proto(SPECIAL, int(40, 1)), 'format', "trainer_spec.unk_id 1 points at '<s>', which is not of type UNKNOWN"],
    // byte pieces right after <unk>, no BOS or EOS: a missing one must not be confused with the piece at id 1
    ['a byte piece missing', proto([['<unk>', 0, 2], ...bytePieces('<0x4A>')], [...int(35, 1), ...int(41, -1), ...int(42, -1)]),
      'format', 'byte_fallback is set but byte piece <0x4A> is missing'],
    ['a byte piece not of type BYTE', proto([['<unk>', 0, 2], ...bytePieces('', '<0x4A>')], [...int(35, 1), ...int(41, -1), ...int(42, -1)]),
      'format', 'byte_fallback is set but pieces[75] <0x4A> is not of type BYTE'],
  ];
  it.each(cases)('refuses %s', (_, b, kind, message) => {
    expect(spRefusal(b)).toEqual({ kind, message: `t.model: ${message}` });
  });
});

/** <0x00> … <0xFF>, as SentencePiece names byte pieces. */
function byteNames(): string[] {
  return Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
}

// ---- the Llama 2 tokenizer: known facts, and the two readers against each other -------------------------------
describe.skipIf(!haveLlama)('Llama 2 tokenizer.model', () => {
  it('reads as the Llama 2 tokenizer is known to be', () => {
    const m = right(parseModelProto(readFileSync(LLAMA), LLAMA));
    expect({ ...m, pieces: m.pieces.length }).toEqual({
      pieces: 32000, modelType: 2, byteFallback: true, unkId: 0, bosId: 1, eosId: 2, padId: -1, unkSurface: ' \u2047 ',
      treatWhitespaceAsSuffix: false, normalizerName: 'identity', precompiledCharsmapBytes: 0,
      addDummyPrefix: true, removeExtraWhitespaces: false, escapeWhitespaces: true,
    });
    expect([0, 1, 2, 12, 13, 259, 29871].map((id) => [m.pieces[id]!.piece, m.pieces[id]!.type]))
      .toEqual([['<unk>', 2], ['<s>', 3], ['</s>', 3], ['<0x09>', 6], ['<0x0A>', 6], ['▁▁', 1], ['▁', 1]]);
  });
  it('as a tokenizer.json of today (Metaspace, prepend_scheme first, split false) it is the same tokenizer', () => {
    const m = right(parseModelProto(readFileSync(LLAMA), LLAMA));
    const sp = right(specFromModelProto(m, LLAMA));
    // merges ranked by the score of the piece they make, as SentencePiece would choose them
    const vocab = Object.fromEntries(m.pieces.map((p, i) => [p.piece, i]));
    const merges: { pair: [string, string]; score: number; id: number }[] = [];
    m.pieces.forEach((p, id) => {
      if (p.type !== 1) return;
      const cps = [...p.piece];
      for (let k = 1; k < cps.length; k++) {
        const a = cps.slice(0, k).join(''), b = cps.slice(k).join('');
        if (a in vocab && b in vocab) merges.push({ pair: [a, b], score: p.score, id });
      }
    });
    merges.sort((x, y) => y.score - x.score || x.id - y.id || vocab[x.pair[0]]! - vocab[y.pair[0]]!);
    const j = {
      added_tokens: [0, 1, 2].map((id) => ({ id, content: m.pieces[id]!.piece, special: true })),
      normalizer: null, pre_tokenizer: metaspace({ prepend_scheme: 'first', split: false }),
      model: { type: 'BPE', unk_token: '<unk>', byte_fallback: true, vocab, merges: merges.map((x) => x.pair) },
    };
    const hf = right(specFromTokenizerJson(j, 'llama.json'));
    const { merge: _a, ...hfRest } = hf, { merge: _b, ...spRest } = sp;
    expect(hfRest).toEqual(spRest); // pieces, kinds (unk, controls, bytes), special ids, every normalizer flag
    expect(hf.kinds[0]).toBe(PieceKind.Unknown);
    // SentencePiece's own ids (fixture tokenization.json): two spaces, tab, newline, byte fallback, a trailing space.
    // camelid encodes a tokenizer.json as SentencePiece does: the dummy '▁' comes before a leading space too, where
    // Hugging Face's Metaspace adds none (its pre_tokenize skips the prefix when the text starts with '▁').
    const tok = right(tokenizerFromJson(j, 'llama.json'));
    expect(tok.encode('  two leading spaces')).toEqual([1, 259, 1023, 8236, 8162]);
    expect(tok.encode('tab\there and\nnewline')).toEqual([1, 4434, 12, 4150, 322, 13, 1482, 1220]);
    expect(tok.encode('café naïve 日本語 🙂')).toEqual([1, 274, 28059, 1055, 30085, 345, 29871, 30325, 30346, 30968, 29871, 243, 162, 156, 133]);
    expect(tok.encode('trailing space ')).toEqual([1, 25053, 2913, 29871]);
  });
});
