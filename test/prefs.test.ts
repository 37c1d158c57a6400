// Preference data: both row layouts, bad rows named by file and line (missing side, empty completion, wrong
// types, bad JSON), final-turn-only labels on both sides, pairs with no trained token dropped and counted, and
// batching both sides to one length.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { orThrow } from '../core/edge.js';
import { data, setBackend } from '../core/backend.js';
import { tokenizerFromJson } from '../models/tokenizer/index.js';
import { trainTokenizer } from '../recipes/demo/tokenizer.js';
import { encodeChat, IGNORE, type Message } from '../recipes/chat.js';
import { encodePairs, makePrefBatches, parsePrefs, prefBatchTensors, readPrefs, shuffledOrder, type PrefPair } from '../recipes/prefs.js';
import { leftMessage, right } from './helpers.js';

setBackend('cpu');

const tok = orThrow(tokenizerFromJson(trainTokenizer(['<|user|>\nWhat is 2 plus 3?\n<|assistant|>\n5', 'Say hello. Hello there! Go away.'], 40)));

const uf = (prompt: string, good: string, bad: string) => JSON.stringify({
  prompt, prompt_id: 'abc', score_chosen: 8.5, score_rejected: 3,
  chosen: [{ role: 'user', content: prompt }, { role: 'assistant', content: good }],
  rejected: [{ role: 'user', content: prompt }, { role: 'assistant', content: bad }],
  messages: [{ role: 'user', content: prompt }, { role: 'assistant', content: good }],
});

describe('parsePrefs', () => {
  it('reads UltraFeedback rows (scores ignored) and the older prompt/chosen/rejected strings, skipping blank lines', () => {
    const text = `${uf('What is 2 plus 3?', '5', '6')}\n\n${JSON.stringify({ prompt: 'Say hello.', chosen: 'Hello there!', rejected: 'Go away.' })}\n`;
    const { pairs, skipped } = right(parsePrefs(text, 'p.jsonl'));
    expect(skipped).toEqual([]);
    expect(pairs).toEqual([
      { chosen: [{ role: 'user', content: 'What is 2 plus 3?' }, { role: 'assistant', content: '5' }], rejected: [{ role: 'user', content: 'What is 2 plus 3?' }, { role: 'assistant', content: '6' }] },
      { chosen: [{ role: 'user', content: 'Say hello.' }, { role: 'assistant', content: 'Hello there!' }], rejected: [{ role: 'user', content: 'Say hello.' }, { role: 'assistant', content: 'Go away.' }] },
    ]);
  });

  const bad: [string, string, RegExp][] = [
    ['missing side', JSON.stringify({ prompt: 'x', chosen: 'a' }), /p\.jsonl:2: missing field 'rejected'/],
    ['empty completion (strings)', JSON.stringify({ prompt: 'x', chosen: 'a', rejected: '  ' }), /p\.jsonl:2: rejected: empty completion/],
    ['empty completion (messages)', uf('x', '', 'b'), /p\.jsonl:2: chosen: empty completion/],
    ['no final assistant turn', JSON.stringify({ chosen: [{ role: 'user', content: 'x' }], rejected: [{ role: 'user', content: 'x' }, { role: 'assistant', content: 'b' }] }), /p\.jsonl:2: chosen: the conversation must end with an assistant turn/],
    ['wrong type of a field', JSON.stringify({ prompt: 'x', chosen: 'a', rejected: 7 }), /p\.jsonl:2: not a StringPrefRow: rejected: expected string, got 7/],
    ['wrong type inside a message', JSON.stringify({ chosen: [{ role: 'user', content: 3 }], rejected: [] }), /p\.jsonl:2: not a MessagesPrefRow: chosen\.0\.content: expected string, got 3/],
    ['unknown role', JSON.stringify({ chosen: [{ role: 'bot', content: 'x' }], rejected: [] }), /p\.jsonl:2: not a MessagesPrefRow: chosen\.0\.role/],
    ['not an object', '[1, 2]', /p\.jsonl:2: expected an object with chosen and rejected/],
    ['null', 'null', /p\.jsonl:2: expected an object with chosen and rejected/],
    ['a string', '"chosen rejected"', /p\.jsonl:2: expected an object with chosen and rejected/],
    ['one side a string, the other messages', JSON.stringify({ prompt: 'x', chosen: [{ role: 'assistant', content: 'a' }], rejected: 'b' }), /p\.jsonl:2: not a StringPrefRow: chosen: expected string/],
    ['invalid JSON', '{"prompt": "x", ', /p\.jsonl:2: invalid JSON/],
  ];
  for (const [what, row, msg] of bad) {
    it(`a bad row is a Left naming file and line: ${what}`, () => {
      expect(leftMessage(parsePrefs(`${uf('a', 'b', 'c')}\n${row}\n`, 'p.jsonl'))).toMatch(msg);
    });
  }

  it("onBadRow 'skip' keeps the good rows and names every skipped one", () => {
    const r = right(parsePrefs(`${bad[0]![1]}\n${uf('a', 'b', 'c')}\n${bad[1]![1]}`, 'q.jsonl', { onBadRow: 'skip' }));
    expect(r.pairs).toHaveLength(1);
    expect(r.skipped.map((e) => [e.line, e.message])).toEqual([[1, "q.jsonl:1: missing field 'rejected'"], [3, 'q.jsonl:3: rejected: empty completion (the final assistant turn has no text)']]);
  });

  it('a line of spaces is blank; every wrong field of a row is named, "; " apart; the error is a PrefError', () => {
    expect(right(parsePrefs(`${uf('a', 'b', 'c')}\n   \t \n${uf('d', 'e', 'f')}\n`, 'p.jsonl')).pairs).toHaveLength(2);
    const r = parsePrefs(JSON.stringify({ prompt: 1, chosen: 'a', rejected: 7 }), 'p.jsonl');
    expect(leftMessage(r)).toBe('p.jsonl:1: not a StringPrefRow: prompt: expected string, got 1; rejected: expected string, got 7');
    expect(E.isLeft(r) && [r.left.name, r.left.file, r.left.line]).toEqual(['PrefError', 'p.jsonl', 1]);
  });

  it('readPrefs reads a file, and names a missing one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'camelid-prefs-'));
    try {
      const f = join(dir, 'prefs.jsonl');
      await writeFile(f, `${uf('a', 'b', 'c')}\n`);
      expect(right(await readPrefs(f)()).pairs).toHaveLength(1);
      expect(leftMessage(await readPrefs(join(dir, 'nope.jsonl'))())).toMatch(/nope\.jsonl:0: cannot read/);
    } finally { await rm(dir, { recursive: true, force: true }); }
  });
});

describe('encodePairs', () => {
  const convo = (last: string): Message[] => [
    { role: 'user', content: 'Say hello.' }, { role: 'assistant', content: 'Hello there!' },
    { role: 'user', content: 'What is 2 plus 3?' }, { role: 'assistant', content: last },
  ];

  it('trains only the final assistant turn of each side (and its </s>), the shared prompt and earlier turns masked', () => {
    const { pairs, dropped } = encodePairs(tok, [{ chosen: convo('5'), rejected: convo('Go away.') }]);
    expect(dropped).toBe(0);
    const p = pairs[0]!;
    for (const [side, text] of [[p.chosen, '5'], [p.rejected, 'Go away.']] as const) {
      const trained = side.ids.filter((_, i) => side.labels[i] !== IGNORE);
      expect(trained[trained.length - 1]).toBe(tok.eosId);
      expect(tok.decode(trained.slice(0, -1))).toBe(text);
      // the same ids as the chat template with every assistant turn trained, less the first turn's
      const all = encodeChat(tok, side === p.chosen ? convo('5') : convo('Go away.'));
      expect(side.ids).toEqual(all.ids);
      expect(all.labels.filter((l) => l !== IGNORE).length).toBeGreaterThan(trained.length);
    }
  });

  it('drops and counts a pair where a side keeps no trained token after truncation', () => {
    const short: PrefPair = { chosen: convo('5'), rejected: convo('Go away.') };
    const ids = encodeChat(tok, short.chosen, { train: 'last' });
    const firstTrained = ids.labels.findIndex((l) => l !== IGNORE);
    // cut just before the chosen completion: the chosen side has nothing left to train
    const { pairs, dropped } = encodePairs(tok, [short, short], { maxSeqLen: firstTrained });
    expect(dropped).toBe(2);
    expect(pairs).toEqual([]);
    const kept = encodePairs(tok, [short], { maxSeqLen: firstTrained + 1 });
    expect([kept.pairs.length, kept.dropped]).toEqual([1, 0]);
    expect(kept.pairs[0]!.chosen.ids.length).toBe(firstTrained + 1);
  });
});

describe('makePrefBatches', () => {
  const pair = (c: number[], r: number[]) => ({ chosen: { ids: c, labels: c.map((x, i) => (i < 2 ? IGNORE : x)) }, rejected: { ids: r, labels: r.map((x, i) => (i < 2 ? IGNORE : x)) } });
  const pairs = [pair([1, 5, 6], [1, 5, 7, 8, 9]), pair([1, 4, 4, 4], [1, 4, 3]), pair([1, 9, 9], [1, 9, 8])];

  it('stacks the chosen rows then the rejected rows, padded to the longest of both', async () => {
    const [b, last] = makePrefBatches(pairs, { batchSize: 2, padId: 0 });
    expect([b!.N, b!.T]).toEqual([2, 5]);
    expect(Array.from(b!.ids)).toEqual([1, 5, 6, 0, 0, /**/ 1, 4, 4, 4, 0, /**/ 1, 5, 7, 8, 9, /**/ 1, 4, 3, 0, 0]);
    expect(Array.from(b!.labels)).toEqual([-100, -100, 6, -100, -100, -100, -100, 4, 4, -100, -100, -100, 7, 8, 9, -100, -100, 3, -100, -100]);
    expect(Array.from(b!.index)).toEqual([0, 1]);
    expect([last!.N, last!.T, Array.from(last!.index)]).toEqual([1, 3, [2]]);
    const t = prefBatchTensors(b!);
    expect([t.tokens.shape, t.labels.shape]).toEqual([[4, 5], [4, 5]]);
    expect(Array.from(await data(t.labels))).toEqual(Array.from(b!.labels));
    expect(makePrefBatches(pairs, { batchSize: 2, padId: 0, keepLast: false })).toHaveLength(1);
    expect(makePrefBatches(pairs, { batchSize: 2, padId: 0, padToMultiple: 4 })[0]!.T).toBe(8);
  });

  it('a seeded shuffle is a permutation, the same for the same (seed, epoch), different across epochs', () => {
    const a = shuffledOrder(50, 42, 0), b = shuffledOrder(50, 42, 0), c = shuffledOrder(50, 42, 1);
    expect(a).toEqual(b);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(c).not.toEqual(a);
    const shuffled = makePrefBatches(pairs, { batchSize: 3, padId: 0, seed: 42 });
    expect(Array.from(shuffled[0]!.index)).toEqual(shuffledOrder(3, 42, 0));
  });

  it('rejects a bad batch size or padToMultiple; the epoch defaults to 0 and the seed and epoch each change the order', () => {
    expect(() => makePrefBatches(pairs, { batchSize: 0, padId: 0 })).toThrow(/batchSize must be a positive integer, got 0/);
    for (const m of [0, 1.5, -4]) expect(() => makePrefBatches(pairs, { batchSize: 1, padId: 0, padToMultiple: m })).toThrow(`makePrefBatches: padToMultiple must be a positive integer, got ${m}`);
    const idx = (o: { seed: number; epoch?: number }) => makePrefBatches(pairs, { batchSize: 3, padId: 0, ...o })[0]!.index.join(',');
    expect(idx({ seed: 7 })).toBe(idx({ seed: 7, epoch: 0 }));
    expect(new Set([0, 1, 2, 3, 4, 5].map((epoch) => idx({ seed: 7, epoch }))).size).toBeGreaterThan(1); // the epoch reaches the shuffle
    const orders = (n: number) => new Set(Array.from({ length: 6 }, (_, k) => shuffledOrder(n, k, 0).join(','))).size;
    expect(orders(5)).toBeGreaterThan(3); // seeds 0…5 give (mostly) different orders
    expect(new Set(Array.from({ length: 6 }, (_, e) => shuffledOrder(5, 1, e).join(','))).size).toBeGreaterThan(3);
    expect(E.isRight(parsePrefs('', 'empty.jsonl'))).toBe(true);
  });
});
