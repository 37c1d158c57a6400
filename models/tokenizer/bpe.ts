// SentencePiece-style BPE encoding over a TokenizerSpec: normalisation, the merge loop, byte fallback.
// It reads no files and knows no file format: proto.ts and hf.ts build the spec; index.ts adds decoding and loading.

/** Piece kinds, numbered as SentencePiece's `ModelProto.SentencePiece.Type`. */
export const PieceKind = { Normal: 1, Unknown: 2, Control: 3, UserDefined: 4, Unused: 5, Byte: 6 } as const;

export interface TokenizerError {
  readonly _tag: 'TokenizerError';
  readonly kind: 'io' | 'format' | 'unsupported';
  readonly file: string;
  /** Whole sentence, starting with the file: `tok.model: protobuf field 1 (pieces) truncated at byte 1234`. */
  readonly message: string;
}
export const tokenizerError = (kind: TokenizerError['kind'], file: string, what: string): TokenizerError =>
  ({ _tag: 'TokenizerError', kind, file, message: `${file}: ${what}` });

/** How adjacent symbols merge. `score`: SentencePiece — any pair whose concatenation is a piece, best piece score
 * first. `rank`: Hugging Face — only listed pairs, key `leftId * vocabSize + rightId`, lowest rank first. */
export type MergeRule =
  | { readonly by: 'score'; readonly scores: ArrayLike<number> }
  | { readonly by: 'rank'; readonly ranks: ReadonlyMap<number, number>; readonly results: Int32Array };

export interface TokenizerSpec {
  readonly pieces: readonly string[];
  readonly kinds: Uint8Array; // PieceKind per id
  readonly merge: MergeRule;
  readonly bosId: number; // -1: none
  readonly eosId: number;
  readonly unkId: number;
  readonly byteFallback: boolean;
  readonly addDummyPrefix: boolean;
  readonly removeExtraWhitespaces: boolean;
  readonly escapeWhitespaces: boolean;
  readonly whitespaceSuffix: boolean; // dummy '▁' goes at the end (SentencePiece treat_whitespace_as_suffix)
  readonly splitBeforeSpace: boolean; // encode each '▁'-started chunk alone (HF Metaspace split: true)
  readonly unkSurface: string;
}

export const SPACE = '\u2581';
/** SentencePiece's name for the byte piece of b: <0x0A> for 10. */
export const bytePiece = (b: number): string => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
const UTF8 = new TextEncoder();
const LONE_SURROGATE = /[\uD800-\uDFFF]/gu; // with /u, paired surrogates form one code point and do not match

/** SentencePiece's identity normaliser: optional whitespace cleanup, dummy prefix, ' ' → '▁'. Empty stays empty.
 * `dummyPrefix: false` overrides the spec's add_dummy_prefix (text that follows a special token, HF non-legacy). */
export const normalize = (text: string, s: TokenizerSpec, dummyPrefix = s.addDummyPrefix): string => {
  let t = text.replace(LONE_SURROGATE, '\uFFFD'); // what UTF-8 encoding does to them anyway
  if (s.removeExtraWhitespaces) t = t.replace(/^ +/, '');
  if (t === '') return '';
  if (s.removeExtraWhitespaces) t = t.replace(/ {2,}/g, ' ');
  const ws = s.escapeWhitespaces ? SPACE : ' ';
  if (s.escapeWhitespaces) t = t.replaceAll(' ', SPACE);
  if (dummyPrefix && !s.whitespaceSuffix) t = ws + t;
  if (s.removeExtraWhitespaces) {
    let e = t.length;
    while (e > 0 && t[e - 1] === ws) e--;
    t = t.slice(0, e);
  }
  return dummyPrefix && s.whitespaceSuffix ? t + ws : t;
};

/** The BPE merge loop. Symbols form a linked list over the normalised text (each one a substring); candidate pairs
 * sit in a binary heap ordered by (priority desc, left position asc), so a text of n chars costs O(n log n). A
 * popped pair is stale when either side was merged since; its side lengths then no longer add up (lengths only
 * grow), which is SentencePiece's own check. */
export const makeEncoder = (spec: TokenizerSpec): ((text: string, out: number[], dummyPrefix?: boolean) => void) => {
  const { pieces, kinds, merge } = spec;
  const V = pieces.length;
  const ids = new Map<string, number>(); // every piece, as SentencePiece's PieceToId
  const mergeable = new Map<string, number>(); // pieces a pair may merge into: normal, user-defined, unused
  const userDefined: string[] = [];
  let maxLen = 0, hasUnused = false;
  pieces.forEach((p, i) => {
    if (!ids.has(p)) ids.set(p, i);
    const k = kinds[i];
    if (k === PieceKind.Normal || k === PieceKind.UserDefined || k === PieceKind.Unused) {
      if (!mergeable.has(p)) mergeable.set(p, i);
      maxLen = Math.max(maxLen, p.length);
    }
    if (k === PieceKind.UserDefined && p.length > 0) userDefined.push(p);
    if (k === PieceKind.Unused) hasUnused = true;
  });
  userDefined.sort((a, b) => b.length - a.length); // longest match first
  const byteIds = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256; b++) byteIds[b] = ids.get(bytePiece(b)) ?? -1;
  const bmpIds = new Int32Array(0x10000).fill(-2); // per-BMP-char id cache; -2 = not looked up yet
  const scores = merge.by === 'score' ? merge.scores : null;
  const ranks = merge.by === 'rank' ? merge.ranks : null, results = merge.by === 'rank' ? merge.results : null;

  let cap = 0;
  let start = new Int32Array(0), len = start, sym = start, prev = start, next = start, frozen = new Uint8Array(0);
  let heap = start, eLeft = start, eRight = start, eSize = start, eResult = start, ePri = new Float64Array(0);
  const grow = (n: number): void => {
    if (n <= cap) return;
    cap = Math.max(n, cap * 2);
    start = new Int32Array(cap); len = new Int32Array(cap); sym = new Int32Array(cap);
    prev = new Int32Array(cap); next = new Int32Array(cap); frozen = new Uint8Array(cap);
    const m = 3 * cap + 4; // pairs: n - 1 initial + at most 2 per merge
    heap = new Int32Array(m); eLeft = new Int32Array(m); eRight = new Int32Array(m);
    eSize = new Int32Array(m); eResult = new Int32Array(m);
    ePri = new Float64Array(m);
  };

  const emitUnknown = (w: string, out: number[]): void => {
    if (!spec.byteFallback) { out.push(spec.unkId); return; }
    for (const b of UTF8.encode(w)) { const id = byteIds[b]!; out.push(id >= 0 ? id : spec.unkId); }
  };

  // Per-call state, kept here so that encoding many short words allocates nothing per word.
  let text = '', hn = 0, ne = 0;
  let revMerge: Map<string, readonly [string, string]> | null = null;
  const before = (a: number, b: number): boolean => ePri[a]! > ePri[b]! || (ePri[a] === ePri[b] && eLeft[a]! < eLeft[b]!);
  const tryPair = (l: number, r: number): void => {
    if (frozen[l] || frozen[r]) return;
    let result: number, pri: number;
    if (scores) {
      if (len[l]! + len[r]! > maxLen) return;
      const p = text.slice(start[l], start[r]! + len[r]!);
      const id = mergeable.get(p);
      if (id === undefined) return;
      result = id; pri = scores[id]!;
      if (revMerge && kinds[id] === PieceKind.Unused) revMerge.set(p, [text.slice(start[l], start[r]), text.slice(start[r], start[r]! + len[r]!)]);
    } else {
      if (!ranks || sym[l]! < 0 || sym[r]! < 0) return;
      const rank = ranks.get(sym[l]! * V + sym[r]!);
      if (rank === undefined) return;
      result = results![rank]!; pri = -rank;
    }
    const e = ne++;
    eLeft[e] = l; eRight[e] = r; eSize[e] = len[l]! + len[r]!; eResult[e] = result; ePri[e] = pri;
    let i = hn++; // sift up
    while (i > 0) { const p = (i - 1) >> 1; if (!before(e, heap[p]!)) break; heap[i] = heap[p]!; i = p; }
    heap[i] = e;
  };
  const resegment = (w: string, out: number[]): void => {
    const id = ids.get(w) ?? -1;
    const pair = id >= 0 && kinds[id] === PieceKind.Unused ? revMerge?.get(w) : undefined;
    if (pair) { resegment(pair[0], out); resegment(pair[1], out); }
    else if (id < 0 || id === spec.unkId) emitUnknown(w, out);
    else out.push(id);
  };

  const encodeChunk = (chunk: string, out: number[]): void => {
    text = chunk;
    grow(text.length);
    // 1. one symbol per code point (or per longest user-defined piece, which never merges further)
    let n = 0;
    for (let i = 0; i < text.length; n++) {
      let l = 0;
      for (const u of userDefined) if (text.startsWith(u, i)) { l = u.length; break; }
      frozen[n] = l > 0 ? 1 : 0;
      let id: number;
      if (l === 0) {
        const c = text.charCodeAt(i);
        if (c >= 0xd800 && c < 0xdc00) { l = 2; id = ids.get(text.slice(i, i + 2)) ?? -1; }
        else { l = 1; id = bmpIds[c]!; if (id === -2) id = bmpIds[c] = ids.get(text[i]!) ?? -1; }
      } else id = ids.get(text.slice(i, i + l))!;
      start[n] = i; len[n] = l; sym[n] = id; prev[n] = n - 1; next[n] = n + 1;
      i += l;
    }
    if (n === 0) return;
    next[n - 1] = -1;

    // 2. candidate pairs; 3. merge the best one until none is left
    hn = 0; ne = 0;
    revMerge = hasUnused ? new Map() : null;
    for (let i = 1; i < n; i++) tryPair(i - 1, i);
    while (hn > 0) {
      const e = heap[0]!, last = heap[--hn]!;
      let i = 0; // sift `last` down from the root
      for (;;) {
        let c = 2 * i + 1;
        if (c >= hn) break;
        if (c + 1 < hn && before(heap[c + 1]!, heap[c]!)) c++;
        if (!before(heap[c]!, last)) break;
        heap[i] = heap[c]!; i = c;
      }
      heap[i] = last;
      const l = eLeft[e]!, r = eRight[e]!;
      if (len[l] === 0 || len[r] === 0 || len[l]! + len[r]! !== eSize[e]) continue; // stale
      len[l] = eSize[e]!; sym[l] = eResult[e]!; len[r] = 0;
      next[l] = next[r]!;
      if (next[r]! >= 0) prev[next[r]!] = l;
      if (prev[l]! >= 0) tryPair(prev[l]!, l);
      if (next[l]! >= 0) tryPair(l, next[l]!);
    }

    // 4. ids; unused pieces split back into the pair that made them; unknown text falls back to bytes or unk
    for (let i = 0; i >= 0; i = next[i]!) {
      const id = sym[i]!;
      if (id < 0 || id === spec.unkId) emitUnknown(text.slice(start[i], start[i]! + len[i]!), out);
      else if (revMerge && kinds[id] === PieceKind.Unused) resegment(pieces[id]!, out);
      else out.push(id);
    }
  };

  // When no piece has a '▁' right after another character, no merge can cross the start of a '▁' run, so the
  // text splits there into words that encode independently (the result is identical) and can be cached.
  const wordsSafe = spec.escapeWhitespaces && ![...mergeable.keys()].some((p) => /[^\u2581]\u2581/u.test(p));
  const splitter = spec.splitBeforeSpace ? /(?=\u2581)/u : wordsSafe ? /(?<=[^\u2581])(?=\u2581)/u : null;
  const cache = new Map<string, readonly number[]>();
  const encodeWords = (t: string, out: number[]): void => {
    if (!splitter) { encodeChunk(t, out); return; }
    for (const w of t.split(splitter)) {
      let ids = cache.get(w);
      if (ids === undefined) {
        const fresh: number[] = [];
        encodeChunk(w, fresh);
        ids = fresh;
        if (w.length <= 64) { if (cache.size >= 1 << 16) cache.clear(); cache.set(w, fresh); }
      }
      for (const id of ids) out.push(id);
    }
  };
  return (text, out, dummyPrefix = spec.addDummyPrefix) => {
    const from = out.length;
    encodeWords(normalize(text, spec, dummyPrefix), out);
    // SentencePiece emits a run of unknown pieces as one unk (PopulateSentencePieceText). With byte fallback there
    // is none: each unknown character has become its bytes.
    let w = from;
    for (let r = from; r < out.length; r++) if (out[r] !== spec.unkId || w === from || out[w - 1] !== spec.unkId) out[w++] = out[r]!;
    out.length = w;
  };
};
