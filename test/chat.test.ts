// The Tulu chat format: the golden example of issue 18 (ids and labels worked out from open-instruct's
// encode_with_messages_format and the three tokenizer behaviours, RECIPES-FACTS §2.4) in all variants, whitespace
// and Python-strip edges, Unicode, truncation, train: 'last', the generation prompt, and bad roles.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadTokenizer, type Tokenizer } from '../models/tokenizer/index.js';
import { CHAT_VARIANTS, chatPrompt, encodeChat, IGNORE, pyStrip, type Message } from '../recipes/chat.js';
import { fixture, right } from './helpers.js';

const { path: TOK, have } = fixture('llama2-tokenizer-32k', 'the Llama 2 tokenizer tests');

const M = (role: Message['role'], content: string): Message => ({ role, content });
const GOLDEN_MSGS = [M('system', 'Be brief.'), M('user', 'Hi'), M('assistant', 'Hello!'), M('user', 'Bye'), M('assistant', 'Ciao.')];
const rep = (n: number) => Array<number>(n).fill(IGNORE);
// Issue 18 / RECIPES-FACTS §2.4, 'hf-legacy'.
const SYS = [529, 29989, 5205, 29989, 29958, 13, 3629, 11473, 29889, 13];
const USER_HI = [29966, 29989, 1792, 29989, 29958, 13, 18567, 13];
const ASSIST = [29966, 29989, 465, 22137, 29989, 29958, 13];
const USER_BYE = [29966, 29989, 1792, 29989, 29958, 13, 2059, 29872, 13];
const GOLDEN_IDS = [1, ...SYS, ...USER_HI, ...ASSIST, 10994, 29991, 2, 29871, 13, ...USER_BYE, ...ASSIST, 29907, 29653, 29889, 2];
const GOLDEN_LABELS = [...rep(26), 10994, 29991, 2, 29871, 13, ...rep(16), 29907, 29653, 29889, 2];

describe('pyStrip (Python str.strip whitespace)', () => {
  it('strips what Python strips and keeps what only JS trim strips', () => {
    expect(pyStrip('\x1c\x1d\x1e\x1f\x85 a b\u3000\u2028\u205f\xa0')).toBe('a b');
    expect(pyStrip('\ufeffa\ufeff')).toBe('\ufeffa\ufeff'); // JS trim would remove U+FEFF; Python does not
    expect(pyStrip('\u200ba\u180e')).toBe('\u200ba\u180e'); // zero-width space and Mongolian vowel separator: not spaces
    expect(pyStrip('  a  ', true, false)).toBe('a  ');
    expect(pyStrip('  a  ', false, true)).toBe('  a');
    expect(pyStrip(' \t\n ')).toBe('');
  });
});

describe.skipIf(!have)('encodeChat on the Llama 2 tokenizer', () => {
  let tok: Tokenizer;
  beforeAll(async () => { tok = right(await loadTokenizer(TOK)()); });

  it('the golden example, hf-legacy (default): ids and labels', () => {
    expect(GOLDEN_IDS).toHaveLength(51);
    expect(encodeChat(tok, GOLDEN_MSGS)).toEqual({ ids: GOLDEN_IDS, labels: GOLDEN_LABELS });
    expect(encodeChat(tok, GOLDEN_MSGS, { variant: 'hf-legacy', train: 'all' })).toEqual({ ids: GOLDEN_IDS, labels: GOLDEN_LABELS });
  });

  it("the golden example, 'hf': only \\n after the first </s>", () => {
    const ids = [1, ...SYS, ...USER_HI, ...ASSIST, 10994, 29991, 2, 13, ...USER_BYE, ...ASSIST, 29907, 29653, 29889, 2];
    const labels = [...rep(26), 10994, 29991, 2, 13, ...rep(16), 29907, 29653, 29889, 2];
    expect(encodeChat(tok, GOLDEN_MSGS, { variant: 'hf' })).toEqual({ ids, labels });
  });

  it("the golden example, 'easylm': the \\n after </s> is gone and the next turn starts with ▁<", () => {
    const ids = [1, ...SYS, ...USER_HI, ...ASSIST, 10994, 29991, 2, 529, ...USER_BYE.slice(1), ...ASSIST, 29907, 29653, 29889, 2];
    const labels = [...rep(26), 10994, 29991, 2, ...rep(16), 29907, 29653, 29889, 2];
    expect(encodeChat(tok, GOLDEN_MSGS, { variant: 'easylm' })).toEqual({ ids, labels });
  });

  it('surrounding whitespace (Python-strip set) in every turn changes nothing', () => {
    const padded = [M('system', ' \tBe brief.\n'), M('user', '\x1c\x1fHi\x85'), M('assistant', '\u3000Hello!\u2028 '),
      M('user', '\n\nBye  '), M('assistant', '\xa0Ciao.\u205f\n')];
    for (const variant of ['hf-legacy', 'hf', 'easylm'] as const)
      expect(encodeChat(tok, padded, { variant })).toEqual(encodeChat(tok, GOLDEN_MSGS, { variant }));
  });

  it('keeps characters Python does not strip (U+FEFF, U+200B)', () => {
    const { ids, labels } = encodeChat(tok, [M('user', '\ufeffHi\u200b'), M('assistant', 'Hello!')]);
    expect(tok.decode(ids)).toBe('<|user|>\n\ufeffHi\u200b\n<|assistant|>\nHello!');
    expect(labels.filter((l) => l !== IGNORE)).toEqual([10994, 29991, 2]);
  });

  it('Unicode content: CJK pieces and byte fallback, stripped of ideographic space and NEL', () => {
    const { ids, labels } = encodeChat(tok, [M('user', 'Hi'), M('assistant', '\u3000日本🦙\x85')]);
    // 日 30325, 本 30346 (RECIPES-FACTS §2.1); 🦙 = F0 9F A6 99 as byte pieces (byte + 3).
    const answer = [30325, 30346, 0xf0 + 3, 0x9f + 3, 0xa6 + 3, 0x99 + 3, 2];
    expect(ids).toEqual([1, 529, 29989, 1792, 29989, 29958, 13, 18567, 13, ...ASSIST, ...answer]);
    expect(labels).toEqual([...rep(16), ...answer]);
  });

  it('multi-turn with a system turn: every assistant turn trained, the rest masked', () => {
    const msgs = [M('system', 'S'), M('user', 'Hi'), M('assistant', 'Hello!'), M('user', 'Hi'), M('assistant', 'Hello!'),
      M('user', 'Bye'), M('assistant', 'Ciao.')];
    const { ids, labels } = encodeChat(tok, msgs);
    expect(tok.decode(ids)).toBe('<|system|>\nS\n<|user|>\nHi\n<|assistant|>\nHello! \n<|user|>\nHi\n<|assistant|>\nHello! \n<|user|>\nBye\n<|assistant|>\nCiao.');
    const trained = labels.flatMap((l, i) => (l === IGNORE ? [] : [i]));
    const spans = trained.reduce<number[][]>((acc, i) => {
      const last = acc[acc.length - 1];
      if (last && last[last.length - 1] === i - 1) last.push(i); else acc.push([i]);
      return acc;
    }, []);
    expect(spans.map((s) => s.map((i) => ids[i]))).toEqual([[10994, 29991, 2, 29871, 13], [10994, 29991, 2, 29871, 13], [29907, 29653, 29889, 2]]);
    for (const i of trained) expect(labels[i]).toBe(ids[i]);
    // each trained span starts right after an "<|assistant|>\n" header
    for (const s of spans) expect(ids.slice(s[0]! - ASSIST.length, s[0])).toEqual(ASSIST);
  });

  it('right truncation at every length gives the golden prefix (inside prompts and answers)', () => {
    for (let L = 1; L <= 55; L++) {
      const want = { ids: GOLDEN_IDS.slice(0, L), labels: GOLDEN_LABELS.slice(0, L) };
      expect(encodeChat(tok, GOLDEN_MSGS, { maxSeqLen: L }), `maxSeqLen ${L}`).toEqual(want);
    }
    // truncated inside the first prompt: nothing trained; inside the first answer: its first two tokens
    expect(encodeChat(tok, GOLDEN_MSGS, { maxSeqLen: 20 }).labels.every((l) => l === IGNORE)).toBe(true);
    expect(encodeChat(tok, GOLDEN_MSGS, { maxSeqLen: 28 }).labels.slice(26)).toEqual([10994, 29991]);
  });

  it("train: 'last' trains only the final assistant turn", () => {
    const want = [...rep(47), 29907, 29653, 29889, 2];
    expect(encodeChat(tok, GOLDEN_MSGS, { train: 'last' })).toEqual({ ids: GOLDEN_IDS, labels: want });
    expect(encodeChat(tok, GOLDEN_MSGS, { train: 'last', variant: 'easylm' }).labels).toEqual([...rep(45), 29907, 29653, 29889, 2]);
    // a single exchange: the same as 'all'
    const one = [M('user', 'Hi'), M('assistant', 'Hello!')];
    expect(encodeChat(tok, one, { train: 'last' })).toEqual(encodeChat(tok, one));
  });

  it("an assistant-first conversation: open-instruct masks nothing but BOS; train: 'last' masks its header", () => {
    const head = [529, 29989, 465, 22137, 29989, 29958, 13]; // "▁<|assistant|>\n": the text's first segment has the dummy prefix
    const ids = [1, ...head, 10994, 29991, 2];
    expect(encodeChat(tok, [M('assistant', 'Hello!')])).toEqual({ ids, labels: [IGNORE, ...head, 10994, 29991, 2] });
    expect(encodeChat(tok, [M('assistant', 'Hello!')], { train: 'last' })).toEqual({ ids, labels: [...rep(8), 10994, 29991, 2] });
  });

  it('the generation prompt: golden, and user content not stripped', () => {
    expect(chatPrompt(tok, [M('user', 'Hi')])).toEqual([1, 529, 29989, 1792, 29989, 29958, 13, 18567, 13, ...ASSIST]);
    expect(tok.decode(chatPrompt(tok, [M('user', ' Hi ')]))).toBe('<|user|>\n Hi \n<|assistant|>\n');
    // a finished exchange inside the prompt ends with </s> and (hf-legacy) ▁\n
    expect(chatPrompt(tok, GOLDEN_MSGS.slice(0, 4))).toEqual([1, ...SYS, ...USER_HI, ...ASSIST, 10994, 29991, 2, 29871, 13, ...USER_BYE, ...ASSIST]);
    // …while an assistant turn inside the prompt is stripped (open-instruct's create_prompt_with_tulu_chat_format).
    expect(chatPrompt(tok, [M('user', 'Hi'), M('assistant', '  Hello!\n'), M('user', 'Bye')])).toEqual(chatPrompt(tok, [M('user', 'Hi'), M('assistant', 'Hello!'), M('user', 'Bye')]));
  });

  it('a conversation ending with a user turn trains only the assistant turn; the variants are the three named', () => {
    const r = encodeChat(tok, [M('user', 'Hi'), M('assistant', 'Hello!'), M('user', 'Bye')]);
    expect(r.ids).toEqual([1, ...USER_HI.map((x, i) => (i === 0 ? 529 : x)), ...ASSIST, 10994, 29991, 2, 29871, 13, ...USER_BYE.slice(0, -1)]); // the text's end stripped
    expect(r.labels.filter((x) => x !== IGNORE)).toEqual([10994, 29991, 2, 29871, 13]); // the reply and the newline after its </s>, as GOLDEN_LABELS
    expect(CHAT_VARIANTS).toEqual(['hf-legacy', 'hf', 'easylm']);
  });

  it('the dummy-prefix option of the tokenizer', () => {
    expect(tok.encode('\n<|user|>', { bos: false })).toEqual([29871, 13, 29966, 29989, 1792, 29989, 29958]);
    expect(tok.encode('\n<|user|>', { bos: false, dummyPrefix: false })).toEqual([13, 29966, 29989, 1792, 29989, 29958]);
    expect(tok.encode('Hello world', { dummyPrefix: false })).toEqual([1, 10994, 3186]);
  });

  it('a role other than system/user/assistant, or no messages, is an error naming it', () => {
    const bad = [M('user', 'Hi'), { role: 'tool', content: 'x' } as unknown as Message];
    expect(() => encodeChat(tok, bad)).toThrow(/message 1 has role 'tool'; expected system, user or assistant/);
    expect(() => chatPrompt(tok, bad)).toThrow(/message 1 has role 'tool'/);
    expect(() => encodeChat(tok, [])).toThrow(/no messages/);
    expect((() => { try { encodeChat(tok, []); } catch (e) { return (e as Error).name; } return 'none'; })()).toBe('ChatError');
    expect(() => encodeChat(tok, GOLDEN_MSGS, { maxSeqLen: 0 })).toThrow(/maxSeqLen/);
    for (const bad of [1.5, Number.NaN, -3]) expect(() => encodeChat(tok, GOLDEN_MSGS, { maxSeqLen: bad })).toThrow(`encodeChat: maxSeqLen must be a positive integer, got ${bad}`);
  });

  it('maxSeqLen 1 keeps BOS alone, untrained; a tokenizer without EOS is refused, one without BOS starts at the text', () => {
    expect(encodeChat(tok, GOLDEN_MSGS, { maxSeqLen: 1 })).toEqual({ ids: [1], labels: [IGNORE] });
    expect(encodeChat(tok, GOLDEN_MSGS, { maxSeqLen: Infinity }).ids).toEqual(GOLDEN_IDS);
    expect(() => encodeChat({ ...tok, eosId: -1 }, GOLDEN_MSGS)).toThrow('encodeChat: the tokenizer has no EOS token for </s>');
    const noBos = encodeChat({ ...tok, bosId: -1 }, GOLDEN_MSGS);
    expect(noBos.ids).toEqual(GOLDEN_IDS.slice(1));
    expect(noBos.labels[0]).toBe(IGNORE); // the first position is never predicted
    expect(noBos.labels.slice(1)).toEqual(GOLDEN_LABELS.slice(2));
    expect(chatPrompt({ ...tok, bosId: -1 }, [M('user', 'Hi')])[0]).toBe(529);
  });
});
