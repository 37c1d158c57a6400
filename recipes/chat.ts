// The Tulu chat format (open-instruct finetune.py `encode_with_messages_format`, identical in EasyLM's
// TuluJsonTorchDataset; facts in RECIPES-FACTS.md §2.4, §3.1–3.2): text template, ids and assistant-only labels,
// and the generation prompt. Pure: no files, no tensors. Reading and batching rows is data.ts's job.
import type { Tokenizer } from '../models/tokenizer/index.js';

export type Role = 'system' | 'user' | 'assistant';
export interface Message { readonly role: Role; readonly content: string }
/** How the tokenizer treats text around an in-text `</s>` (RECIPES-FACTS §2.4). `'hf-legacy'`: every segment after
 * it gets SentencePiece's dummy prefix (open-instruct, the released Tulu 2 tokenizer); `'hf'`: no prefix after a
 * special token (transformers non-legacy); `'easylm'`: whitespace on both sides of `</s>` stripped, then the
 * prefix (transformers 4.31, what Tulu 2 was trained with). */
export type ChatVariant = 'hf-legacy' | 'hf' | 'easylm';
export interface EncodeChatOpts {
  /** Right truncation: keep the first `maxSeqLen` ids (BOS included), as `tokenizer(..., truncation=True)`. */
  readonly maxSeqLen?: number;
  readonly variant?: ChatVariant;
  /** 'all' (SFT: every assistant turn trained) or 'last' (DPO: only the final assistant turn). */
  readonly train?: 'all' | 'last';
}
/** The label of a position the loss ignores (PyTorch's cross-entropy `ignore_index`). */
export const IGNORE = -100;
export const CHAT_VARIANTS: readonly ChatVariant[] = ['hf-legacy', 'hf', 'easylm'];

/** A message list the template cannot render (a role other than system/user/assistant, no messages). */
export class ChatError extends Error { override name = 'ChatError'; }

// Python's str.isspace() set (what `str.strip()` removes), checked against CPython 3.11 over all code points:
// unlike JS `trim` it includes U+001C–U+001F and U+0085 and excludes U+FEFF. All are single UTF-16 units.
const PY_SPACE = new Set<number>([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);
/** Python's `s.lstrip()` / `s.rstrip()` / `s.strip()` (a scan, not a regex: no quadratic backtracking on long runs). */
export const pyStrip = (s: string, left = true, right = true): string => {
  let a = 0, b = s.length;
  if (left) while (a < b && PY_SPACE.has(s.charCodeAt(a))) a++;
  if (right) while (b > a && PY_SPACE.has(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
};

/** Rendered text as the segments between `</s>` tokens: `['a', 'b']` is `a</s>b`. The EOS is never characters, so
 * a literal "</s>" inside a message stays text (HF would split it out as the EOS token; we do not let content
 * inject control tokens). */
type Segments = string[];

const HEADER: Record<Role, string> = { system: '<|system|>\n', user: '<|user|>\n', assistant: '<|assistant|>\n' };

const checkMessages = (messages: readonly Message[]): void => {
  if (messages.length === 0) throw new ChatError('encodeChat: no messages (the Tulu format needs at least one turn)');
  messages.forEach((m, i) => {
    if (!Object.hasOwn(HEADER, m.role))
      throw new ChatError(`encodeChat: message ${i} has role '${String(m.role)}'; expected system, user or assistant`);
  });
};

/** open-instruct `_concat_messages`: the turns, content stripped (`strip: 'all'`) or, for the eval prompt, only the
 * assistant's (`'assistant'`, `create_prompt_with_tulu_chat_format`). Not stripped as a whole. */
const render = (messages: readonly Message[], strip: 'all' | 'assistant' = 'all'): Segments => {
  const segs: Segments = [''];
  for (const m of messages) {
    const content = strip === 'all' || m.role === 'assistant' ? pyStrip(m.content) : m.content;
    segs[segs.length - 1] += HEADER[m.role] + content;
    if (m.role === 'assistant') segs.push('\n');
    else segs[segs.length - 1] += '\n';
  }
  return segs;
};

const append = (segs: Segments, text: string): Segments => [...segs.slice(0, -1), segs[segs.length - 1]! + text];

/** `example_text.strip()`: whitespace off the text's two ends; an end `</s>` stops it, as the characters would. */
const stripEnds = (segs: Segments): Segments => {
  const out = [...segs];
  out[0] = pyStrip(out[0]!, true, false);
  out[out.length - 1] = pyStrip(out[out.length - 1]!, false, true);
  return out;
};

/** Tokenizes segments as the variant's tokenizer would tokenize the joined text: BOS, then each segment, with EOS
 * between. Segment ids are memoised per call, since every prefix repeats the segments before it. */
const segmentEncoder = (tok: Tokenizer, variant: ChatVariant): ((segs: Segments) => number[]) => {
  if (tok.eosId < 0) throw new ChatError('encodeChat: the tokenizer has no EOS token for </s>');
  const memo = new Map<string, readonly number[]>();
  // noPrefix: the segment follows a special token and the variant gives it no dummy prefix; otherwise the
  // tokenizer's own setting applies.
  const piece = (text: string, noPrefix: boolean): readonly number[] => {
    const key = (noPrefix ? '0' : '1') + text;
    let ids = memo.get(key);
    if (ids === undefined) memo.set(key, (ids = tok.encode(text, noPrefix ? { bos: false, dummyPrefix: false } : { bos: false })));
    return ids;
  };
  return (segs) => {
    const out: number[] = tok.bosId >= 0 ? [tok.bosId] : [];
    segs.forEach((s, i) => {
      if (i > 0) out.push(tok.eosId);
      const last = i === segs.length - 1;
      const text = variant === 'easylm' ? pyStrip(s, i > 0, !last) : s;
      for (const id of piece(text, variant === 'hf' && i > 0)) out.push(id);
    });
    return out;
  };
};

/**
 * Ids and labels of one conversation in the Tulu format. Labels mask (-100) every system/user turn and the
 * `<|assistant|>\n` header after it, computed as open-instruct does: tokenize the prefix up to each turn (with the
 * same truncation) and mask by its length, so offsets follow the real tokenizer. Trained: each assistant turn's
 * content, its `</s>` and whatever the variant puts before the next turn (`▁\n` in 'hf-legacy'). `train: 'last'`
 * also masks everything before the final assistant turn's content. `labels[0]` (BOS) is always -100: no position
 * predicts it (open-instruct leaves the BOS id there, unused). Throws ChatError on an unknown role.
 * @example
 * const { ids, labels } = encodeChat(tok, [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }]);
 * // ids: [1, 529,29989,1792,29989,29958,13, 18567,13, 29966,29989,465,22137,29989,29958,13, 10994,29991,2]
 * // labels: -100 ×16, then 10994, 29991, 2
 */
export const encodeChat = (tok: Tokenizer, messages: readonly Message[], opts: EncodeChatOpts = {}): { ids: number[]; labels: number[] } => {
  checkMessages(messages);
  const max = opts.maxSeqLen ?? Infinity;
  if (!(max >= 1) || (max !== Infinity && !Number.isInteger(max))) throw new RangeError(`encodeChat: maxSeqLen must be a positive integer, got ${max}`);
  const encode = segmentEncoder(tok, opts.variant ?? 'hf-legacy');
  const length = (segs: Segments): number => Math.min(encode(segs).length, max);
  const ids = encode(stripEnds(render(messages))).slice(0, max);
  const labels = ids.slice();
  if (labels.length > 0) labels[0] = IGNORE;
  for (let i = 0; i < messages.length; i++) {
    if (messages[i]!.role === 'assistant') continue;
    const start = i === 0 ? 0 : length(render(messages.slice(0, i)));
    const upTo = render(messages.slice(0, i + 1));
    const end = length(messages[i + 1]?.role === 'assistant' ? append(upTo, HEADER.assistant) : upTo);
    labels.fill(IGNORE, start, end);
    if (end >= max) break;
  }
  if (opts.train === 'last') {
    const k = messages.map((m) => m.role).lastIndexOf('assistant');
    if (k >= 0) labels.fill(IGNORE, 0, length(append(render(messages.slice(0, k)), HEADER.assistant)));
  }
  return { ids, labels };
};

/**
 * The generation prompt: BOS, the turns as open-instruct's eval template writes them (system/user content not
 * stripped, assistant content stripped and followed by `</s>\n`), then `<|assistant|>\n` and `answerPrefix` (text
 * the reply starts with, tokenized with the prompt as one text: MMLU's "The answer is:").
 * @example
 * chatPrompt(tok, [{ role: 'user', content: 'Hi' }]);
 * // [1, 529,29989,1792,29989,29958,13, 18567,13, 29966,29989,465,22137,29989,29958,13]
 */
export const chatPrompt = (tok: Tokenizer, messages: readonly Message[], opts: { readonly variant?: ChatVariant; readonly answerPrefix?: string } = {}): number[] => {
  messages.forEach((m, i) => {
    if (!Object.hasOwn(HEADER, m.role))
      throw new ChatError(`chatPrompt: message ${i} has role '${String(m.role)}'; expected system, user or assistant`);
  });
  return segmentEncoder(tok, opts.variant ?? 'hf-legacy')(append(render(messages, 'assistant'), HEADER.assistant + (opts.answerPrefix ?? '')));
};
