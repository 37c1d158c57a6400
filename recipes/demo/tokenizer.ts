// A small BPE tokenizer learnt from a corpus, written as a Hugging Face tokenizer.json in the Llama 2 layout
// (SentencePiece-style: '▁' for spaces, a dummy prefix, byte fallback, <unk> <s> </s>), so loadTokenizer reads it
// back like any Llama tokenizer. Used by the demo, whose tasks need a vocabulary of a few hundred pieces.

import { SPACE } from '../../models/tokenizer/bpe.js';

/** The tokenizer.json object (the subset of Hugging Face's format that models/tokenizer/hf.ts reads). */
export interface TokenizerJsonOut {
  readonly version: '1.0';
  readonly added_tokens: readonly { id: number; content: string; special: boolean; single_word: boolean; lstrip: boolean; rstrip: boolean; normalized: boolean }[];
  readonly normalizer: { type: 'Sequence'; normalizers: readonly unknown[] };
  readonly pre_tokenizer: null;
  readonly decoder: { type: 'Sequence'; decoders: readonly unknown[] };
  readonly model: { type: 'BPE'; unk_token: '<unk>'; byte_fallback: true; fuse_unk: true; vocab: Record<string, number>; merges: readonly string[] };
}

const SPECIAL = ['<unk>', '<s>', '</s>'] as const;
const byteName = (b: number) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;

/** Texts as the tokenizer's normaliser sees them: ' ' → '▁', with the dummy '▁' in front. */
const normalised = (text: string): string => SPACE + text.replaceAll(' ', SPACE);

/**
 * Learns `nMerges` BPE merges from `corpus` (the most frequent adjacent pair first; ties by the pair's text) over
 * a base of the three specials, the 256 byte pieces and every character of the corpus. Characters in `single`
 * never merge: text made of them (the demo's generated words and digits) is encoded one character a token.
 * @example const json = trainTokenizer(['Reverse the word bqk.'], 20, 'bgjkqxz'); orThrow(tokenizerFromJson(json)).vocabSize
 */
export const trainTokenizer = (corpus: readonly string[], nMerges: number, single = ''): TokenizerJsonOut => {
  const solo = new Set(single);
  const words = new Map<string, number>(); // a normalised text → how often it occurs
  for (const t of corpus) if (t !== '') words.set(normalised(t), (words.get(normalised(t)) ?? 0) + 1);
  const chars = [...new Set([...words.keys()].flatMap((w) => [...w]))].sort();
  const vocab: string[] = [...SPECIAL, ...Array.from({ length: 256 }, (_, b) => byteName(b)), ...chars];
  const known = new Set(vocab);
  const seqs = [...words].map(([w, n]) => ({ sym: [...w], n }));
  const merges: string[] = [];
  for (let m = 0; m < nMerges; m++) {
    const counts = new Map<string, number>(); // "left\u0000right" → occurrences
    for (const { sym, n } of seqs) for (let i = 0; i + 1 < sym.length; i++) {
      if (solo.has(sym[i]!) || solo.has(sym[i + 1]!)) continue;
      const k = `${sym[i]}\u0000${sym[i + 1]}`;
      counts.set(k, (counts.get(k) ?? 0) + n);
    }
    let best = '', bestN = 1; // a pair seen once is not worth a piece
    for (const [k, n] of counts) if (n > bestN || (n === bestN && best !== '' && k < best)) [best, bestN] = [k, n];
    if (best === '') break;
    const [a, b] = best.split('\u0000') as [string, string];
    merges.push(`${a} ${b}`);
    if (!known.has(a + b)) { known.add(a + b); vocab.push(a + b); }
    for (const s of seqs) {
      const out: string[] = [];
      for (let i = 0; i < s.sym.length; i++) {
        if (i + 1 < s.sym.length && s.sym[i] === a && s.sym[i + 1] === b) { out.push(a + b); i++; } else out.push(s.sym[i]!);
      }
      s.sym = out;
    }
  }
  return {
    version: '1.0',
    added_tokens: SPECIAL.map((content, id) => ({ id, content, special: true, single_word: false, lstrip: false, rstrip: false, normalized: false })),
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: SPACE }, { type: 'Replace', pattern: { String: ' ' }, content: SPACE }] },
    pre_tokenizer: null,
    decoder: { type: 'Sequence', decoders: [
      { type: 'Replace', pattern: { String: SPACE }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 },
    ] },
    model: { type: 'BPE', unk_token: '<unk>', byte_fallback: true, fuse_unk: true, vocab: Object.fromEntries(vocab.map((p, i) => [p, i])), merges },
  };
};
