// Tokenizer: ids against SentencePiece's own output on the shared fixtures, round trips, streaming decode, the
// tokenizer.json path, and errors. A hand-built ModelProto covers merge-order corner cases without fixtures.
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadTokenizer, tokenizerFromJson, tokenizerFromLlama2c, tokenizerFromModelProto, type Tokenizer } from '../models/tokenizer/index.js';
import { parseModelProto } from '../models/tokenizer/proto.js';
import { leftMessage, right } from './helpers.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared/fixtures');
const haveFixtures = existsSync(FIXTURES);
if (!haveFixtures) console.warn(`[tokenizer.test] SKIPPING fixture tests: ${FIXTURES} not found`);
const FC = { seed: 20240601, numRuns: 200 };

// ---- a protobuf writer, just for building small ModelProtos by hand -------------------------------------------
const varint = (n: number): number[] => {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(n));
  do { const b = Number(v & 0x7fn); v >>= 7n; out.push(v ? b | 0x80 : b); } while (v);
  return out;
};
const len = (no: number, body: number[]) => [...varint(no * 8 + 2), ...varint(body.length), ...body];
const str = (no: number, s: string) => len(no, [...new TextEncoder().encode(s)]);
const int = (no: number, v: number) => [...varint(no * 8), ...varint(v)];
const f32 = (no: number, x: number) => [...varint(no * 8 + 5), ...new Uint8Array(Float32Array.of(x).buffer)];
type Piece = readonly [piece: string, score: number, type?: number];
const modelProto = (pieces: readonly Piece[], opts: { byteFallback?: boolean; removeExtra?: boolean } = {}) =>
  Uint8Array.from([
    ...pieces.flatMap(([p, s, t = 1]) => len(1, [...str(1, p), ...f32(2, s), ...int(3, t)])),
    ...len(2, [...int(3, 2), ...int(35, opts.byteFallback ? 1 : 0), ...int(43, -1)]),
    ...len(3, [...str(1, 'identity'), ...int(3, 1), ...int(4, opts.removeExtra ? 1 : 0)]),
  ]);
const SPECIAL: Piece[] = [['<unk>', 0, 2], ['<s>', 0, 3], ['</s>', 0, 3]];
const tiny = (pieces: readonly Piece[], opts = {}) => right(tokenizerFromModelProto(modelProto([...SPECIAL, ...pieces], opts), 'tiny.model'));
const pieceStrings = (tok: Tokenizer, ids: readonly number[]) => ids.map((id) => tok.pieces[id]);

describe('BPE merge order (hand-built model)', () => {
  it('merges equal-score pairs leftmost first', () => {
    const tok = tiny([['▁', -1], ['a', -2], ['aa', 0]]);
    expect(pieceStrings(tok, tok.encode('aaa', { bos: false }))).toEqual(['▁', 'aa', 'a']);
  });
  it('merges the highest-scoring pair first, whatever its position', () => {
    const tok = tiny([['▁', -9], ['a', -9], ['b', -9], ['c', -9], ['ab', -2], ['bc', -1]]);
    expect(pieceStrings(tok, tok.encode('abc', { bos: false }))).toEqual(['▁', 'a', 'bc']);
  });
  it('splits an UNUSED piece back into the pair that formed it', () => {
    const tok = tiny([['▁', -9], ['a', -9], ['b', -9], ['c', -9], ['ab', -1], ['abc', -2, 5]]);
    expect(pieceStrings(tok, tok.encode('abc', { bos: false }))).toEqual(['▁', 'ab', 'c']);
  });
  it('keeps USER_DEFINED pieces whole', () => {
    const tok = tiny([['▁', -9], ['a', -9], ['<x>', 0, 4], ['▁a', -1], ['<', -9], ['x', -9], ['>', -9], ['a<', -0.5]]);
    expect(pieceStrings(tok, tok.encode('a<x>a', { bos: false }))).toEqual(['▁a', '<x>', 'a']);
  });
  it('maps unknown characters to one unk each without byte fallback, and decodes unk as " ⁇ "', () => {
    const tok = tiny([['▁', -1], ['a', -2]]);
    expect(tok.encode('azz', { bos: false })).toEqual([3, 4, 0, 0]);
    expect(tok.decode([1, 3, 4, 0, 2])).toBe('a \u2047 ');
  });
  it('removes extra whitespace when the normalizer asks for it', () => {
    const tok = tiny([['▁', -1], ['a', -2], ['b', -3]], { removeExtra: true });
    expect(pieceStrings(tok, tok.encode('  a   b  ', { bos: false }))).toEqual(['▁', 'a', '▁', 'b']);
    expect(tok.encode('   ')).toEqual([1]);
  });
  it('adds BOS by default and EOS on request', () => {
    const tok = tiny([['▁', -1], ['a', -2]]);
    expect(tok.encode('a')).toEqual([1, 3, 4]);
    expect(tok.encode('a', { bos: false, eos: true })).toEqual([3, 4, 2]);
    expect(tok.encode('')).toEqual([1]);
  });
});

describe('errors are Lefts naming the file', () => {
  const good = modelProto([...SPECIAL, ['▁', -1], ['a', -2]]);
  it('truncated ModelProto bytes', () => {
    const msg = leftMessage(tokenizerFromModelProto(good.subarray(0, 20), 'tok.model'));
    expect(msg).toMatch(/^tok\.model: protobuf field 1 \(pieces\) truncated at byte \d+/);
  });
  it('garbage bytes', () => {
    expect(leftMessage(tokenizerFromModelProto(new TextEncoder().encode('hello world'), 'junk.model'))).toMatch(/^junk\.model: /);
  });
  it('never throws on random bytes or any truncation', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (b) => { tokenizerFromModelProto(b, 'r.model'); }), FC);
    for (let n = 0; n < good.length; n++) expect(() => tokenizerFromModelProto(good.subarray(0, n), 't.model')).not.toThrow();
  });
  it('a non-BPE model', () => {
    const uni = Uint8Array.from([...len(1, str(1, '<unk>')), ...len(2, int(3, 1))]);
    expect(leftMessage(tokenizerFromModelProto(uni, 'uni.model'))).toMatch(/^uni\.model: .*UNIGRAM.*only BPE/);
  });
  it('tokenizer.json without model.vocab', () => {
    const msg = leftMessage(tokenizerFromJson({ model: { type: 'BPE', merges: [] } }, 'tok.json'));
    expect(msg).toMatch(/^tok\.json: model\.vocab: expected/);
  });
  it('tokenizer.json with a merge of unknown pieces', () => {
    const json = { model: { type: 'BPE', vocab: { '<unk>': 0, a: 1 }, merges: ['a b'], unk_token: '<unk>' } };
    expect(leftMessage(tokenizerFromJson(json, 'tok.json'))).toMatch(/^tok\.json: model\.merges\[0\].*'b' is not in model\.vocab/);
  });
  it('llama2.c tokenizer.bin: short, truncated, bad lengths, bad UTF-8, no <unk>', () => {
    const rec = (score: number, piece: Uint8Array | string, n?: number) => {
      const b = typeof piece === 'string' ? new TextEncoder().encode(piece) : piece;
      const head = new DataView(new ArrayBuffer(8));
      head.setFloat32(0, score, true);
      head.setInt32(4, n ?? b.length, true);
      return [...new Uint8Array(head.buffer), ...b];
    };
    const file = (maxLen: number, ...recs: number[][]) => Uint8Array.from([...new Uint8Array(Int32Array.of(maxLen).buffer), ...recs.flat()]);
    const msg = (bytes: Uint8Array) => leftMessage(tokenizerFromLlama2c(bytes, 't.bin'));
    expect(msg(Uint8Array.of(1, 0))).toBe('t.bin: llama2.c tokenizer: file is 2 bytes, too short for max_token_length (int32)');
    expect(msg(file(0, rec(0, '<unk>')))).toBe('t.bin: llama2.c tokenizer: max_token_length is 0, expected a positive integer');
    expect(msg(file(8))).toBe('t.bin: llama2.c tokenizer: no tokens after max_token_length');
    expect(msg(file(8, rec(0, '<unk>'), [0, 0, 0]))).toBe('t.bin: llama2.c tokenizer: token 1 at byte 17: its score and length are cut off by the end of the file');
    expect(msg(file(8, rec(0, '<unk>'), rec(0, 'ab', 9)))).toBe('t.bin: llama2.c tokenizer: token 1 at byte 17: length 9 is outside [0, max_token_length 8]');
    expect(msg(file(8, rec(0, '<unk>'), rec(0, 'ab', 5)))).toBe('t.bin: llama2.c tokenizer: token 1 at byte 17: its 5 bytes run past the end of the file');
    expect(msg(file(8, rec(0, '<unk>'), rec(0, Uint8Array.of(0xff))))).toBe('t.bin: llama2.c tokenizer: token 1 at byte 17: piece is not valid UTF-8');
    expect(msg(file(8, rec(Number.NaN, '<unk>')))).toBe('t.bin: llama2.c tokenizer: token 0 at byte 4: score is NaN');
    expect(msg(file(8, rec(0, 'a')))).toBe("t.bin: llama2.c tokenizer: no '<unk>' piece");
    const ok = right(tokenizerFromLlama2c(file(8, rec(0, '<unk>'), rec(0, '\n<s>\n'), rec(0, '\n</s>\n'), rec(0, 'a'), rec(0, 'b'), rec(-1, ' a'), rec(-2, ' ab')), 't.bin'));
    expect(ok.pieces).toEqual(['<unk>', '<s>', '</s>', 'a', 'b', '▁a', '▁ab']);
    expect(ok.encode('ab a')).toEqual([1, 6, 5]);
  });

  it('encode refuses anything but a string, by name', () => {
    const tok = tiny([['a', 0]]);
    expect(() => tok.encode(null as never)).toThrow(new TypeError('encode: text must be a string, got null'));
    expect(() => tok.encode(42 as never)).toThrow(new TypeError('encode: text must be a string, got number'));
    expect(() => tok.encode(undefined as never)).toThrow(new TypeError('encode: text must be a string, got undefined'));
  });

  it('a nonexistent path, an empty directory, bad JSON', async () => {
    const missing = path.join(tmpdir(), 'camelid-no-such-tokenizer.model');
    expect(leftMessage(await loadTokenizer(missing)())).toBe(`${missing}: no such file or directory`);
    const dir = mkdtempSync(path.join(tmpdir(), 'camelid-tok-'));
    expect(leftMessage(await loadTokenizer(dir)())).toMatch(/neither tokenizer\.model nor tokenizer\.json/);
    writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
    expect(leftMessage(await loadTokenizer(dir)())).toMatch(/tokenizer\.json: not valid JSON/);
  });
});

// ---- fixtures ----------------------------------------------------------------------------------------------------
interface Case { text: string; sentencepiece_bos: number[]; sentencepiece_pieces?: string[] }
const FIX = [
  { name: 'stories260K tok512', model: 'stories260K/tok512.model', cases: 'stories260K/tokenization.json', removeExtra: true },
  { name: 'llama2 32k', model: 'llama2-tokenizer-32k/tokenizer.model', cases: 'llama2-tokenizer-32k/tokenization.json', removeExtra: false },
] as const;
const load = (file: string) => readFileSync(path.join(FIXTURES, file));
/** What SentencePiece's decode(encode(x)) gives: x itself, or x with extra spaces removed. */
const roundTripOf = (x: string, removeExtra: boolean) => (removeExtra ? x.replace(/ +/g, ' ').replace(/^ | $/g, '') : x);
const streamDecode = (tok: Tokenizer, ids: readonly number[]) => {
  const d = tok.decoder();
  const chunks = ids.map((id) => d.push(id));
  return { chunks, text: chunks.join('') + d.flush() };
};
const plainText = fc
  .oneof(
    fc.string({ unit: 'binary', maxLength: 30 }),
    fc.string({ unit: 'grapheme', maxLength: 30 }),
    fc.array(fc.constantFrom('a', 'the', ' ', '  ', '\t', '\n', 'é', 'ï', '日本語', '🙂', '👩‍👩‍👧', '中', 'Ω', '\u0000', '€'), { maxLength: 20 }).map((a) => a.join('')),
  )
  .filter((s) => !/[\uD800-\uDFFF\u2581]/u.test(s)); // lone surrogates become U+FFFD; '▁' decodes as ' '

describe.skipIf(!haveFixtures)('SentencePiece fixtures', () => {
  for (const f of FIX) {
    describe(f.name, () => {
      let tok: Tokenizer, cases: Case[];
      beforeAll(() => { // not at collection time: the suite may be skipped
        tok = right(tokenizerFromModelProto(load(f.model), f.model));
        cases = (JSON.parse(load(f.cases).toString('utf8')) as { cases: Case[] }).cases;
      });

      it('encodes every fixture case to SentencePiece ids (and pieces)', () => {
        for (const c of cases) {
          const ids = tok.encode(c.text);
          expect(ids, c.text).toEqual(c.sentencepiece_bos);
          if (c.sentencepiece_pieces) expect(pieceStrings(tok, ids.slice(1)), c.text).toEqual(c.sentencepiece_pieces);
        }
      });
      it('decodes fixture ids back to the text, streaming or not', () => {
        for (const c of cases) {
          expect(tok.decode(c.sentencepiece_bos)).toBe(roundTripOf(c.text, f.removeExtra));
          expect(streamDecode(tok, c.sentencepiece_bos).text).toBe(tok.decode(c.sentencepiece_bos));
        }
      });
      it('round-trips random text (non-ASCII, emoji, CJK via byte fallback); streaming decode agrees', () => {
        fc.assert(fc.property(plainText, (x) => {
          const ids = tok.encode(x);
          const text = tok.decode(ids);
          expect(text).toBe(roundTripOf(x, f.removeExtra));
          const s = streamDecode(tok, ids);
          expect(s.text).toBe(text);
          expect(s.chunks.join('')).not.toContain('\uFFFD'); // a split UTF-8 sequence is held back, never garbled
        }), FC);
      });
      it('streams byte-fallback characters only once complete', () => {
        const ids = tok.encode('🙂', { bos: false });
        const { chunks, text } = streamDecode(tok, ids);
        expect(text).toBe('🙂');
        expect(chunks.slice(-4)).toEqual(['', '', '', '🙂']); // <0xF0> <0x9F> <0x99> <0x82>
      });
      it('tokenizer.json built from the same pieces (merges ranked by score) encodes identically', () => {
        const m = right(parseModelProto(load(f.model), f.model));
        const vocab = Object.fromEntries(m.pieces.map((p, i) => [p.piece, i]));
        const merges: { a: string; b: string; score: number; id: number }[] = [];
        m.pieces.forEach((p, id) => {
          if (p.type !== 1) return;
          const cps = [...p.piece];
          for (let k = 1; k < cps.length; k++) {
            const a = cps.slice(0, k).join(''), b = cps.slice(k).join('');
            if (a in vocab && b in vocab) merges.push({ a, b, score: p.score, id });
          }
        });
        merges.sort((x, y) => y.score - x.score || x.id - y.id || vocab[x.a]! - vocab[y.a]!);
        const json = {
          version: '1.0',
          added_tokens: [0, 1, 2].map((id) => ({ id, content: m.pieces[id]!.piece, special: true, normalized: false })),
          normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
          pre_tokenizer: null,
          model: { type: 'BPE', dropout: null, unk_token: '<unk>', fuse_unk: true, byte_fallback: true, vocab,
            merges: merges.map((x, i) => (i % 2 ? `${x.a} ${x.b}` : [x.a, x.b])) },
        };
        const hf = right(tokenizerFromJson(json, 'built.json'));
        expect([hf.vocabSize, hf.bosId, hf.eosId, hf.unkId]).toEqual([tok.vocabSize, tok.bosId, tok.eosId, tok.unkId]);
        const texts = cases.map((c) => c.text).filter((x) => !f.removeExtra || roundTripOf(x, true) === x);
        for (const x of texts) expect(hf.encode(x), x).toEqual(tok.encode(x));
        const noExtraSpace = plainText.filter((x) => !f.removeExtra || roundTripOf(x, true) === x);
        fc.assert(fc.property(noExtraSpace, (x) => { expect(hf.encode(x)).toEqual(tok.encode(x)); }), FC);
      });
    });
  }

  it('llama2.c tokenizer.bin: the same pieces, ids and encodings as the .model it was exported from', async () => {
    for (const [bin, model, removeExtra] of [
      ['llama2-tokenizer-32k/tokenizer.bin', 'llama2-tokenizer-32k/tokenizer.model', false],
      ['stories260K/tok512.bin', 'stories260K/tok512.model', true],
    ] as const) {
      const fromBin = right(await loadTokenizer(path.join(FIXTURES, bin))());
      const ref = right(tokenizerFromModelProto(load(model), model));
      expect([fromBin.vocabSize, fromBin.bosId, fromBin.eosId, fromBin.unkId], bin).toEqual([ref.vocabSize, ref.bosId, ref.eosId, ref.unkId]);
      expect(fromBin.pieces, bin).toEqual(ref.pieces);
      // run.c keeps whitespace as it is; tok512.model removes extra spaces, so compare texts where that is moot.
      const same = plainText.filter((x) => !removeExtra || roundTripOf(x, true) === x);
      fc.assert(fc.property(same, (x) => {
        expect(fromBin.encode(x)).toEqual(ref.encode(x));
        expect(fromBin.decode(fromBin.encode(x))).toBe(x);
      }), { ...FC, numRuns: 100 });
    }
    expect(right(await loadTokenizer(path.join(FIXTURES, 'stories260K/tok512.bin'))()).encode('Once upon a time')).toEqual([1, 403, 407, 261, 378]);
  });

  it('loadTokenizer reads a .model, a directory, and a tokenizer.json file', async () => {
    const byFile = right(await loadTokenizer(path.join(FIXTURES, 'stories260K/tok512.model'))());
    const byDir = right(await loadTokenizer(path.join(FIXTURES, 'llama2-tokenizer-32k'))());
    expect(byFile.vocabSize).toBe(512);
    expect(byDir.encode('Hello world')).toEqual([1, 15043, 3186]);
    const vocab = Object.fromEntries(byFile.pieces.map((p, i) => [p, i]));
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'camelid-tok-')), 'tokenizer.json');
    writeFileSync(file, JSON.stringify({ model: { type: 'BPE', vocab, merges: [], byte_fallback: true, unk_token: '<unk>' } }));
    const hf = right(await loadTokenizer(file)());
    expect(hf.encode('ab', { bos: false })).toEqual([vocab['a'], vocab['b']]); // no normalizer, no merges
  });
});
