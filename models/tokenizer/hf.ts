// Hugging Face tokenizer.json (model.type "BPE", SentencePiece-style: Llama 2) → TokenizerSpec. Merge priority
// is the rank in `merges`. Added tokens are not matched inside the text: camelid encodes like SentencePiece.
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { bytePiece, PieceKind, SPACE, tokenizerError, type TokenizerError, type TokenizerSpec } from './bpe.js';

const Nullable = <C extends t.Mixed>(c: C) => t.union([c, t.null, t.undefined]);

/** A merge as a [left, right] pair: io-ts tuples drop extra items silently, so the length is checked here. */
const isPair = (u: unknown): u is [string, string] =>
  Array.isArray(u) && u.length === 2 && typeof u[0] === 'string' && typeof u[1] === 'string';
const MergePair = new t.Type<[string, string], [string, string], unknown>(
  '[left, right]', isPair, (u, c) => (isPair(u) ? t.success(u) : t.failure(u, c)), t.identity);

export const HfBpeModel = t.intersection([
  t.type({
    vocab: t.record(t.string, t.number, 'an object of piece ids'),
    merges: t.array(t.union([t.string, MergePair], "a 'left right' string or a [left, right] pair"), 'an array of merges'),
  }),
  t.partial({
    type: t.string,
    byte_fallback: Nullable(t.boolean),
    unk_token: Nullable(t.string),
    dropout: Nullable(t.number),
    continuing_subword_prefix: Nullable(t.string),
    end_of_word_suffix: Nullable(t.string),
  }),
]);
export type HfBpeModel = t.TypeOf<typeof HfBpeModel>;

/** One normalizer or pre-tokenizer record; a Sequence's items (`normalizers` or `pretokenizers`) are checked again
 * with the same codec. */
export const HfStep = t.intersection([
  t.type({ type: t.string }),
  t.partial({
    normalizers: t.array(t.unknown), pretokenizers: t.array(t.unknown), prepend: t.string, content: t.string, pattern: t.unknown,
    replacement: t.string, prepend_scheme: t.string, add_prefix_space: t.boolean, split: t.boolean,
  }),
]);
export type HfStep = t.TypeOf<typeof HfStep>;

export const HfAddedToken = t.intersection([t.type({ id: t.number, content: t.string }), t.partial({ special: t.boolean })]);
export type HfAddedToken = t.TypeOf<typeof HfAddedToken>;

export const TokenizerJson = t.intersection([
  t.type({ model: HfBpeModel }),
  t.partial({ added_tokens: Nullable(t.array(HfAddedToken, 'an array of added tokens')), normalizer: Nullable(HfStep), pre_tokenizer: Nullable(HfStep) }),
]);
export type TokenizerJson = t.TypeOf<typeof TokenizerJson>;

const show = (u: unknown): string => {
  if (u === undefined) return 'nothing (field missing)';
  const s = JSON.stringify(u) ?? String(u);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

/** First io-ts error as `path: expected T, got V`. Inside an intersection, or a union with null, the context keys are
 * branch numbers, not fields, so they are left out; any other union is reported whole (its name lists every form). */
const describe = (errors: t.Errors, prefix = ''): string => {
  const e = errors[0]!; // a Left always holds an error
  let path = prefix, at = e.context[0]!;
  for (const c of e.context.slice(1)) {
    const parent = at.type;
    if (parent instanceof t.UnionType && !(parent.types as t.Mixed[]).some((b) => b instanceof t.NullType)) break;
    at = c;
    if (parent instanceof t.ArrayType) path += `[${c.key}]`;
    else if (parent instanceof t.DictionaryType) path += `['${c.key}']`;
    else if (!(parent instanceof t.IntersectionType || parent instanceof t.UnionType)) path += path ? `.${c.key}` : c.key;
  }
  // An object codec's name spells out every field: say what kind of value was expected instead.
  const T = at.type, object = T instanceof t.InterfaceType || T instanceof t.PartialType || T instanceof t.IntersectionType;
  return `${path || '(root)'}: expected ${object ? 'a JSON object' : T.name}, got ${show(at.actual)}`;
};

/** 'left right' → [left, right]; null without a space after a non-empty left. */
const splitMerge = (mg: string): [string, string] | null => {
  const sp = mg.indexOf(' ');
  return sp > 0 ? [mg.slice(0, sp), mg.slice(sp + 1)] : null;
};

type StepError = readonly [TokenizerError['kind'], string];

/** Walks the normalizer (Sequence of Prepend('▁') / Replace(' ', '▁')) and a Metaspace pre-tokenizer. A Sequence
 * lists its steps under `normalizers` in a normalizer and under `pretokenizers` in a pre-tokenizer. */
const readSteps = (j: TokenizerJson): E.Either<StepError, { addDummyPrefix: boolean; escapeWhitespaces: boolean; splitBeforeSpace: boolean }> => {
  const flags = { addDummyPrefix: false, escapeWhitespaces: false, splitBeforeSpace: false };
  const walk = (raw: unknown, where: string, list: 'normalizers' | 'pretokenizers'): StepError | null => {
    const d = HfStep.decode(raw);
    if (E.isLeft(d)) return ['format', describe(d.left, where)];
    const s = d.right;
    if (s.type === 'Sequence') {
      const steps = s[list];
      if (!steps) return ['format', `${where}.${list}: expected an array, got ${show(steps)}`]; // never read as "no steps"
      for (const [i, n] of steps.entries()) {
        const err = walk(n, `${where}.${list}[${i}]`, list);
        if (err) return err;
      }
    } else if (s.type === 'Prepend' && s.prepend === SPACE) flags.addDummyPrefix = true;
    else if (s.type === 'Replace' && JSON.stringify(s.pattern) === '{"String":" "}' && s.content === SPACE) flags.escapeWhitespaces = true;
    else if (s.type === 'Metaspace' && (s.replacement ?? SPACE) === SPACE) {
      flags.escapeWhitespaces = true;
      // prepend_scheme (tokenizers ≥ 0.19) 'first' or 'always': camelid matches no added tokens, so both mean the text's start
      flags.addDummyPrefix = s.prepend_scheme !== undefined ? s.prepend_scheme !== 'never' : s.add_prefix_space !== false;
      flags.splitBeforeSpace = s.split ?? true;
    } else return ['unsupported', `${where} ${show(raw)} is not supported (only Prepend('▁'), Replace(' ', '▁'), Metaspace('▁'))`];
    return null;
  };
  const err = (j.normalizer ? walk(j.normalizer, 'normalizer', 'normalizers') : null)
    ?? (j.pre_tokenizer ? walk(j.pre_tokenizer, 'pre_tokenizer', 'pretokenizers') : null);
  return err ? E.left(err) : E.right(flags);
};

/** Validates a parsed tokenizer.json and builds its spec; `source` names the file in errors. */
export const specFromTokenizerJson = (json: unknown, source: string): E.Either<TokenizerError, TokenizerSpec> => {
  const bad = (kind: TokenizerError['kind'], what: string) => E.left(tokenizerError(kind, source, what));
  const d = TokenizerJson.decode(json);
  if (E.isLeft(d)) return bad('format', describe(d.left));
  const j = d.right, m = j.model;
  if (m.type !== undefined && m.type !== 'BPE') return bad('unsupported', `model.type is '${m.type}'; only 'BPE' is supported`);
  if (m.dropout) return bad('unsupported', `model.dropout is ${m.dropout}; only deterministic BPE is supported`);
  if (m.continuing_subword_prefix || m.end_of_word_suffix) return bad('unsupported', 'model.continuing_subword_prefix / end_of_word_suffix are not supported');
  const steps = readSteps(j);
  if (E.isLeft(steps)) return bad(...steps.left);
  if (steps.right.addDummyPrefix && !steps.right.escapeWhitespaces) return bad('unsupported', "Prepend('▁') without Replace(' ', '▁')");

  // ids: vocab plus added tokens, dense 0..n-1
  const byId = new Map<number, string>();
  const vocab = new Map<string, number>();
  const add = (piece: string, id: number, where: string): string | null => {
    if (!Number.isInteger(id) || id < 0) return `${where}: id ${id} is not a non-negative integer`;
    const old = byId.get(id);
    if (old !== undefined && old !== piece) return `${where}: id ${id} is both '${old}' and '${piece}'`;
    byId.set(id, piece);
    if (!vocab.has(piece)) vocab.set(piece, id);
    return null;
  };
  for (const [piece, id] of Object.entries(m.vocab)) { const e = add(piece, id, `model.vocab['${piece}']`); if (e) return bad('format', e); }
  const added = j.added_tokens ?? [];
  for (const [i, a] of added.entries()) { const e = add(a.content, a.id, `added_tokens[${i}]`); if (e) return bad('format', e); }
  const V = byId.size;
  for (let i = 0; i < V; i++) if (!byId.has(i)) return bad('format', `ids are not dense: no token has id ${i} (of ${V})`);
  const pieces = Array.from({ length: V }, (_, i) => byId.get(i)!);

  const byteFallback = m.byte_fallback ?? false;
  const unkId = m.unk_token != null ? (vocab.get(m.unk_token) ?? -2) : -1;
  if (unkId === -2) return bad('format', `model.unk_token '${m.unk_token}' is not in model.vocab`);
  if (unkId < 0 && !byteFallback) return bad('unsupported', 'no model.unk_token and no byte_fallback: unknown characters would have no id');
  const kinds = new Uint8Array(V).fill(PieceKind.Normal);
  for (let b = 0; b < 256 && byteFallback; b++) {
    const name = bytePiece(b), id = vocab.get(name);
    if (id === undefined) return bad('format', `model.byte_fallback is true but model.vocab lacks ${name}`);
    kinds[id] = PieceKind.Byte;
  }
  for (const a of added) if (a.special) kinds[a.id] = PieceKind.Control;
  if (unkId >= 0) kinds[unkId] = PieceKind.Unknown;

  // merges: rank r joins (left, right) into left+right; the first listing of a pair wins
  const ranks = new Map<number, number>();
  const results = new Int32Array(m.merges.length);
  for (const [r, mg] of m.merges.entries()) {
    const pair = typeof mg === 'string' ? splitMerge(mg) : mg;
    if (!pair) return bad('format', `model.merges[${r}] '${mg}' is not 'left right'`);
    const [a, b] = pair;
    const [l, rt, res] = [vocab.get(a), vocab.get(b), vocab.get(a + b)];
    if (l === undefined || rt === undefined || res === undefined)
      return bad('format', `model.merges[${r}] ('${a}', '${b}'): '${[a, b, a + b].find((p) => !vocab.has(p))}' is not in model.vocab`);
    results[r] = res;
    if (!ranks.has(l * V + rt)) ranks.set(l * V + rt, r);
  }
  const special = (s: string) => added.find((a) => a.content === s)?.id ?? vocab.get(s) ?? -1;
  return E.right({
    pieces, kinds, merge: { by: 'rank', ranks, results },
    bosId: special('<s>'), eosId: special('</s>'), unkId, byteFallback, // unkId: -1 when there is none
    addDummyPrefix: steps.right.addDummyPrefix, removeExtraWhitespaces: false,
    escapeWhitespaces: steps.right.escapeWhitespaces, whitespaceSuffix: false,
    splitBeforeSpace: steps.right.splitBeforeSpace, unkSurface: ' \u2047 ',
  });
};
