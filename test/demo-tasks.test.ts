// The demo's generated tasks and its learnt tokenizer: reproducible, answers right by construction (checked here
// by independent rules), wrong answers really wrong, and the tokenizer.json read back by loadTokenizer's parser.
import { describe, expect, it } from 'vitest';
import { FOLLOWED_SHARE, FORMAT_REQUEST, followsFormat, isCorrect, LETTERS, rng, tasks, TASK_KINDS } from '../recipes/demo/tasks.js';
import { trainTokenizer } from '../recipes/demo/tokenizer.js';
import { tokenizerFromJson } from '../models/tokenizer/index.js';
import { right } from './helpers.js';
import { preferencePairs } from '../recipes/demo/run.js';

describe('demo tasks', () => {
  it('are reproducible from the seed and cycle through every kind', () => {
    expect(tasks(7, 20)).toEqual(tasks(7, 20));
    expect(tasks(7, 20)).not.toEqual(tasks(8, 20));
    expect(tasks(7, 10).map((t) => t.kind)).toEqual([...TASK_KINDS, ...TASK_KINDS]);
  });

  it('answer each prompt by its rule, and the wrong answer differs', () => {
    for (const t of tasks(3, 500)) {
      expect(t.wrong).not.toBe(t.answer);
      expect(isCorrect(t, ` ${t.answer}\n`)).toBe(true);
      expect(isCorrect(t, t.wrong)).toBe(false);
      const prompt = t.format ? t.prompt.slice(0, -FORMAT_REQUEST.length) : t.prompt;
      const answer = t.format ? t.answer.slice(1, -1) : t.answer; // inside the brackets
      if (t.format) expect(t.answer).toBe(`[${answer}]`);
      const w = /(\w+)[.?]$/.exec(prompt.replace(' in capitals.', '.'))![1]!;
      if (t.kind === 'reverse') expect(answer).toBe(w.split('').reverse().join(''));
      if (t.kind === 'sort') expect(answer).toBe(w.split('').sort().join(''));
      if (t.kind === 'upper') expect(answer).toBe(w.toUpperCase());
      if (t.kind === 'add') {
        const [, a, b] = /What is (\d) plus (\d)\?/.exec(prompt)!;
        expect(Number(answer)).toBe(Number(a) + Number(b));
      }
      if (t.kind === 'count') {
        const [, c, s] = /How many (\w) are in (\w+)\?/.exec(prompt)!;
        expect(Number(answer)).toBe(s!.split(c!).length - 1);
      }
    }
  });

  it('ask for brackets in half the prompts; the demonstrations follow that request one time in four', () => {
    const ts = tasks(5, 4000);
    const asked = ts.filter((t) => t.format);
    expect(Math.abs(asked.length - 2000)).toBeLessThan(190); // 6σ of a fair coin over 4000
    for (const t of ts) {
      expect(t.format).toBe(t.prompt.endsWith(FORMAT_REQUEST));
      if (!t.format) expect(t.shown).toBe(t.answer);
      else {
        expect(t.wrong).toBe(t.answer.slice(1, -1)); // the slip: the bare answer
        expect([t.answer, t.wrong]).toContain(t.shown);
      }
    }
    const followed = asked.filter((t) => t.shown === t.answer).length;
    const sd = Math.sqrt(asked.length * FOLLOWED_SHARE * (1 - FOLLOWED_SHARE));
    expect(Math.abs(followed - asked.length * FOLLOWED_SHARE)).toBeLessThan(6 * sd);
    expect(FOLLOWED_SHARE).toBeLessThan(0.5); // so greedy decoding after SFT mostly skips the brackets
  });

  it('followsFormat: brackets around the whole trimmed reply', () => {
    for (const r of ['[abc]', ' [12]\n', '[]', '[a]b]']) expect(followsFormat(r)).toBe(true);
    for (const r of ['abc', '[abc', 'abc]', 'x[abc]', '[abc] x', '']) expect(followsFormat(r)).toBe(false);
  });

  it('rng: uniform in [0, 1) with inclusive integer ranges', () => {
    const r = rng(1);
    const xs = Array.from({ length: 4000 }, () => r.int(0, 3));
    for (let v = 0; v <= 3; v++) expect(Math.abs(xs.filter((x) => x === v).length - 1000)).toBeLessThan(150); // ~6σ
  });
});

describe('demo tokenizer', () => {
  const corpus = tasks(1, 400).map((t) => `<|user|>\n${t.prompt}\n<|assistant|>\n${t.answer}`);
  const json = trainTokenizer(corpus, 60, `${LETTERS}${LETTERS.toUpperCase()}0123456789`);
  const tok = right(tokenizerFromJson(JSON.parse(JSON.stringify(json)), 'demo tokenizer.json'));

  it('reads back as a Llama-layout tokenizer that round-trips its corpus', () => {
    expect([tok.unkId, tok.bosId, tok.eosId]).toEqual([0, 1, 2]);
    expect(tok.pieces[3 + 0x0a]).toBe('<0x0A>');
    for (const s of corpus.slice(0, 50)) expect(tok.decode(tok.encode(s))).toBe(s);
    expect(tok.decode(tok.encode('ünïcode ✓'))).toBe('ünïcode ✓'); // byte fallback for unseen characters
  });

  it('learns merges that shorten the text, but never merges the generated letters and digits', () => {
    const s = corpus[0]!;
    expect(tok.encode(s).length).toBeLessThan(s.length / 2);
    const ids = tok.encode('Reverse the word bgjkqxz.', { bos: false });
    const pieces = ids.map((i) => tok.pieces[i]!);
    expect(pieces.slice(-8)).toEqual([...'bgjkqxz', '.']);
    expect(tok.encode('1234', { bos: false }).map((i) => tok.pieces[i]).join('|')).toBe('▁|1|2|3|4');
  });
});

describe('the DPO stage\'s preference pairs', () => {
  it('reject the model\'s own answer where it is wrong, and the generated mistake where it is right, empty or missing', () => {
    const ts = tasks(3, 4);
    const own = [ts[0]!.answer, `${ts[1]!.answer}x`, ''];
    const pairs = preferencePairs(ts, own);
    const reply = (m: { role: string; content: string }[]) => m.find((x) => x.role === 'assistant')!.content;
    expect(pairs.map((p) => reply(p.chosen))).toEqual(ts.map((t) => t.answer));
    expect(pairs.map((p) => reply(p.rejected))).toEqual([ts[0]!.wrong, `${ts[1]!.answer}x`, ts[2]!.wrong, ts[3]!.wrong]);
    expect(pairs.every((p, i) => p.chosen[0]!.content === ts[i]!.prompt && p.rejected[0]!.content === ts[i]!.prompt)).toBe(true);
  });
});
