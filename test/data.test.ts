// SFT data: JSONL rows checked and streamed, bad input named by file, line and field, skips and drops counted,
// mixing by weight, the seeded shuffle and the train/eval split, and padded batches (expected values by hand).
import { execFileSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { toArray } from '../core/backend.js';
import { loadTokenizer, type Tokenizer } from '../models/tokenizer/index.js';
import { encodeChat, IGNORE } from '../recipes/chat.js';
import {
  batchTensors, defaultPadId, describeData, loadChatData, makeBatches, readChatRows, type ChatData, type DataSource, type Example,
} from '../recipes/data.js';
import { fixture, leftMessage, right, tempDir } from './helpers.js';

const { path: TOK, have } = fixture('llama2-tokenizer-32k', 'the tokenizer-backed data tests');

const row = (q: string, a: string, extra: object = {}) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }], ...extra });
const dir = tempDir('camelid-data-');
const write = async (name: string, lines: readonly string[] | string): Promise<string> => {
  const p = path.join(dir.path, name);
  await writeFile(p, typeof lines === 'string' ? lines : lines.join('\n') + '\n');
  return p;
};
const key = (e: Example) => e.ids.join(',');

describe('readChatRows: streaming and row errors', () => {
  it('names file, line and field for each kind of bad row; ignores extra keys and blank lines', async () => {
    const f = await write('bad.jsonl', [
      row('q', 'a', { dataset: 'flan_v2', id: 'x1' }),
      '{"messages": [{"role": "user", "content": "q"}',
      '',
      JSON.stringify({ messages: [{ role: 'user', content: 'q' }, { role: 'tool', content: 'x' }] }),
      JSON.stringify({ dataset: 'x' }),
      JSON.stringify({ messages: [] }),
      JSON.stringify({ messages: [{ role: 'user', content: 5 }] }),
      '42',
    ]);
    const got: [number, string][] = [];
    for await (const r of readChatRows(f)) got.push([r.line, E.isRight(r.row) ? `ok ${r.row.right.messages.length}` : r.row.left.message]);
    expect(got.map(([l]) => l)).toEqual([1, 2, 4, 5, 6, 7, 8]);
    expect(got[0]![1]).toBe('ok 2');
    expect(got[1]![1]).toMatch(new RegExp(`^${f}:2: not valid JSON`));
    expect(got[2]![1]).toBe(`${f}:4: field messages[1].role: expected 'system' | 'user' | 'assistant', got "tool"`);
    expect(got[3]![1]).toBe(`${f}:5: field messages: expected array of messages, got nothing (missing)`);
    expect(got[4]![1]).toBe(`${f}:6: field messages: expected at least one message, got []`);
    expect(got[5]![1]).toBe(`${f}:7: field messages[0].content: expected string, got 5`);
    expect(got[6]![1]).toBe(`${f}:8: expected object with "messages", got 42`);
  });

  it('CRLF line ends and a byte order mark', async () => {
    const f = await write('crlf.jsonl', '\ufeff' + row('a', 'b') + '\r\n' + row('c', 'd') + '\r\n');
    const lines: number[] = [];
    for await (const r of readChatRows(f)) { expect(E.isRight(r.row)).toBe(true); lines.push(r.line); }
    expect(lines).toEqual([1, 2]);
  });

  it('each error says its kind; long values are cut at 60 characters; indices past 9 stay bracketed; a BOM counts only first', async () => {
    const long = 'x'.repeat(80);
    const many = Array.from({ length: 12 }, (_, i) => ({ role: i === 11 ? 'tool' : 'user', content: 'q' }));
    const f = await write('kinds.jsonl', [
      '{oops',
      JSON.stringify({ messages: [{ role: 'user', content: 5 }] }),
      JSON.stringify({ messages: [{ role: long, content: 'q' }] }),
      JSON.stringify({ messages: many }),
      JSON.stringify({ messages: [3] }),
      '\ufeff' + row('a', 'b'),
    ]);
    const got: { kind: string; message: string; field?: string }[] = [];
    for await (const r of readChatRows(f)) if (E.isLeft(r.row)) got.push(r.row.left);
    expect(got.map((e) => e.kind)).toEqual(['json', 'row', 'row', 'row', 'row', 'json']);
    expect(got[1]!.field).toBe('messages[0].content');
    expect(got[2]!.message).toBe(`${f}:3: field messages[0].role: expected 'system' | 'user' | 'assistant', got "${'x'.repeat(56)}...`);
    expect(got[3]!.message).toBe(`${f}:4: field messages[11].role: expected 'system' | 'user' | 'assistant', got "tool"`);
    expect(got[4]!.message).toBe(`${f}:5: field messages[0]: expected message, got 3`);
    expect(got[5]!.message).toMatch(new RegExp(`^${f}:6: not valid JSON`)); // a byte order mark belongs at the start of the file
    const exact = await write('sixty.jsonl', [JSON.stringify({ messages: [{ role: 'x'.repeat(58), content: 'q' }] })]);
    for await (const r of readChatRows(exact)) expect(E.isLeft(r.row) && r.row.left.message).toMatch(new RegExp(`got "${'x'.repeat(58)}"$`)); // 60 characters: whole
  });

  it('a folder is an io error saying so', async () => {
    const items = [];
    for await (const r of readChatRows(dir.path)) items.push(r);
    expect(items).toHaveLength(1);
    expect(E.isLeft(items[0]!.row) && [items[0]!.row.left.kind, items[0]!.row.left.message]).toEqual(['io', `${dir.path}: is a directory, not a JSONL file`]);
  });

  it('a missing file is an io error naming it', async () => {
    const items = [];
    for await (const r of readChatRows(path.join(dir.path, 'nope.jsonl'))) items.push(r);
    expect(items).toHaveLength(1);
    expect(E.isLeft(items[0]!.row) && items[0]!.row.left.message).toBe(`${path.join(dir.path, 'nope.jsonl')}: no such file`);
  });

  it.skipIf(process.platform === 'win32')('yields the first row before the writer has finished (streams; never reads the file whole)', async () => {
    const fifo = path.join(dir.path, 'pipe.jsonl');
    execFileSync('mkfifo', [fifo]);
    const rows = readChatRows(fifo);
    const first = rows.next();
    const w = createWriteStream(fifo);
    w.write(row('one', '1') + '\n');
    const timeout = new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), 10_000));
    const r1 = await Promise.race([first, timeout]);
    expect(r1).not.toBe('timeout'); // a reader that waited for the end of the file would still be waiting here
    expect(r1 !== 'timeout' && !r1.done && r1.value.line).toBe(1);
    w.end(row('two', '2') + '\n');
    const rest = [];
    for await (const r of rows) rest.push(r.line);
    expect(rest).toEqual([2]);
  });
});

describe.skipIf(!have)('loadChatData on the Llama 2 tokenizer', () => {
  let tok: Tokenizer;
  beforeAll(async () => { tok = right(await loadTokenizer(TOK)()); });
  const load = async (sources: readonly DataSource[], opts = {}): Promise<E.Either<{ message: string }, ChatData>> =>
    loadChatData(tok, sources, opts)();

  it('a bad row stops loading with its file and line; onBadRow skip counts and reports it', async () => {
    const f = await write('mixed.jsonl', [row('q1', 'a1'), '{oops', JSON.stringify({ messages: [{ role: 'robot', content: 'x' }] }), row('q2', 'a2')]);
    expect(leftMessage(await load([{ path: f }]))).toMatch(new RegExp(`^${f}:2: not valid JSON`));
    const d = right(await load([{ path: f }], { onBadRow: 'skip' }));
    expect(d.train).toHaveLength(2);
    expect(d.files[0]).toMatchObject({ rows: 4, skipped: 2, dropped: 0, train: 2, eval: 0 });
    expect(d.files[0]!.skips[1]).toBe(`${f}:3: field messages[0].role: expected 'system' | 'user' | 'assistant', got "robot"`);
    expect(describeData(d)).toContain('4 rows, 2 bad rows skipped, 0 dropped');
  });

  it('an empty file, a blank-only file and a missing file are errors naming them', async () => {
    const empty = await write('empty.jsonl', '');
    const blank = await write('blank.jsonl', '\n  \n\n');
    expect(leftMessage(await load([{ path: empty }]))).toBe(`${empty}: empty file: no JSONL rows`);
    expect(leftMessage(await load([{ path: blank }]))).toBe(`${blank}: empty file: no JSONL rows`);
    const good = await write('good.jsonl', [row('q', 'a')]);
    expect(leftMessage(await load([{ path: good }], { evalFiles: [path.join(dir.path, 'missing.jsonl')] }))).toBe(`${path.join(dir.path, 'missing.jsonl')}: no such file`);
    expect(leftMessage(await load([{ path: good, weight: -1 }]))).toMatch(/good.jsonl: weight must be a finite number ≥ 0, got -1/);
    expect(leftMessage(await load([{ path: good }], { evalFraction: 0.5, evalFiles: [good] }))).toMatch(/not both/);
    expect(leftMessage(await load([{ path: good, weight: 0 }]))).toMatch(/no training example left/);
    const kindOf = async (sources: readonly DataSource[], opts = {}) => { const r = await load(sources, opts); return E.isLeft(r) ? (r.left as { kind?: string }).kind : 'loaded'; };
    expect([await kindOf([{ path: empty }]), await kindOf([{ path: good, weight: 0 }]), await kindOf([]), await kindOf([{ path: path.join(dir.path, 'missing.jsonl') }])]).toEqual(['empty', 'empty', 'option', 'io']);
    // An unreadable file is an error even under onBadRow 'skip' (only bad rows are skipped).
    expect(leftMessage(await load([{ path: good }, { path: path.join(dir.path, 'missing.jsonl') }], { onBadRow: 'skip' }))).toMatch(/missing\.jsonl: no such file/);
  });

  it('skipping keeps the first 10 reasons and counts them all', async () => {
    const f = await write('twelve-bad.jsonl', [row('q', 'a'), ...Array.from({ length: 12 }, () => '{oops')]);
    const d = right(await load([{ path: f }], { onBadRow: 'skip' }));
    expect(d.files[0]!.skipped).toBe(12);
    expect(d.files[0]!.skips.map((x) => Number(/:(\d+): /.exec(x)![1]))).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });

  it('rows truncated inside the prompt are dropped and counted; truncated inside the answer kept', async () => {
    // "<|user|>\nHi\n<|assistant|>\n" is 16 ids with BOS; the answer "Hello!" adds 10994, 29991, 2.
    const f = await write('trunc.jsonl', [row('Hi', 'Hello!'), row('Hi there, a much longer question than the other', 'Hello!')]);
    const d = right(await load([{ path: f }], { maxSeqLen: 17 }));
    expect(d.files[0]).toMatchObject({ rows: 2, dropped: 1, atMaxLen: 2, train: 1 });
    expect(d.train[0]!.ids).toHaveLength(17);
    expect(d.train[0]!.labels.slice(16)).toEqual([10994]);
    expect(describeData(d)).toContain('1 dropped (no trained token after truncation)');
  });

  it('mixing by weight: ⌊w⌋ copies plus a seeded fraction; reproducible by seed', async () => {
    const a = await write('a.jsonl', [0, 1, 2, 3].map((i) => row(`a${i}`, `x${i}`)));
    const b = await write('b.jsonl', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => row(`b${i}`, `y${i}`)));
    const src = [{ path: a, weight: 2 }, { path: b, weight: 0.5 }];
    const d = right(await load(src, { seed: 7 }));
    const aKeys = [0, 1, 2, 3].map((i) => key(encodeChat(tok, [{ role: 'user', content: `a${i}` }, { role: 'assistant', content: `x${i}` }])));
    const bKeys = new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => key(encodeChat(tok, [{ role: 'user', content: `b${i}` }, { role: 'assistant', content: `y${i}` }]))));
    expect(d.train).toHaveLength(4 * 2 + 5);
    const counts = new Map<string, number>();
    for (const e of d.train) counts.set(key(e), (counts.get(key(e)) ?? 0) + 1);
    for (const k of aKeys) expect(counts.get(k)).toBe(2);
    const fromB = [...counts].filter(([k]) => bKeys.has(k));
    expect(fromB).toHaveLength(5);
    for (const [, n] of fromB) expect(n).toBe(1);
    expect(d.files.map((f) => f.train)).toEqual([8, 5]);
    // same seed, same data and order; another seed, another order
    expect(right(await load(src, { seed: 7 })).train.map(key)).toEqual(d.train.map(key));
    expect(right(await load(src, { seed: 8 })).train.map(key)).not.toEqual(d.train.map(key));
    // weight 2.5 = two copies and half the rows once more
    expect(right(await load([{ path: a, weight: 2.5 }])).train).toHaveLength(10);
  });

  it('train/eval split by fraction (before weighting: no copy leaks into eval) and by eval file', async () => {
    const a = await write('split.jsonl', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => row(`s${i}`, `t${i}`)));
    const d = right(await load([{ path: a, weight: 3 }], { evalFraction: 0.2, seed: 1 }));
    expect(d.eval).toHaveLength(2);
    expect(d.train).toHaveLength(8 * 3);
    const trainKeys = new Set(d.train.map(key));
    expect(trainKeys.size).toBe(8);
    for (const e of d.eval) expect(trainKeys.has(key(e))).toBe(false);
    expect(d.files[0]).toMatchObject({ train: 24, eval: 2 });
    const ev = await write('eval.jsonl', [row('e1', 'f1'), row('e2', 'f2'), row('e3', 'f3')]);
    const d2 = right(await load([{ path: a }], { evalFiles: [ev] }));
    expect(d2.train).toHaveLength(10);
    expect(d2.eval.map((e) => tok.decode(e.ids))).toEqual(['<|user|>\ne1\n<|assistant|>\nf1', '<|user|>\ne2\n<|assistant|>\nf2', '<|user|>\ne3\n<|assistant|>\nf3']);
  });

  it('the pad id defaults to EOS, or 0 for a tokenizer without one', () => {
    expect(defaultPadId(tok)).toBe(2);
    expect(defaultPadId({ ...tok, eosId: -1 })).toBe(0);
  });

  it('option errors name the option and its bound; eval rows keep file order; skipped rows are listed', async () => {
    const good = await write('opts.jsonl', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => row(`o${i}`, `p${i}`)));
    expect(leftMessage(await load([]))).toBe('(data): no training files given');
    for (const bad of [1, -0.1, Number.NaN]) expect(leftMessage(await load([{ path: good }], { evalFraction: bad }))).toBe(`(data): evalFraction must be in [0, 1), got ${bad}`);
    expect(leftMessage(await load([{ path: good }], { evalFraction: 0.99 }))).toMatch(/no training example left/); // in range: all 10 held out
    for (const w of [Number.NaN, Number.POSITIVE_INFINITY]) expect(leftMessage(await load([{ path: good, weight: w }]))).toBe(`${good}: weight must be a finite number ≥ 0, got ${w}`);
    expect(leftMessage(await load([{ path: good }], { evalFraction: 0.2, evalFiles: [good] }))).toBe('(data): give evalFraction or evalFiles, not both');
    const d = right(await load([{ path: good }], { evalFraction: 0.5, seed: 3 }));
    const index = (e: Example) => Number(/o(\d)/.exec(tok.decode(e.ids))![1]);
    const held = d.eval.map(index);
    expect(held).toHaveLength(5);
    expect(held).toEqual([...held].sort((a, b) => a - b)); // in file order, not the seeded draw's
    const bad = await write('skips.jsonl', [row('q', 'a'), '{oops', '[]']);
    const described = describeData(right(await load([{ path: bad }], { onBadRow: 'skip' })));
    expect(described.split('\n').slice(1).map((l) => l.replace(/ \(.*/, ''))).toEqual([`  skipped ${bad}:2: not valid JSON`, `  skipped ${bad}:3: expected object with "messages", got []`]);
  });
});

describe('makeBatches and batchTensors', () => {
  const ex = (ids: number[], labels: number[]): Example => ({ ids, labels });
  const X = [ex([1, 10, 11], [IGNORE, IGNORE, 11]), ex([1, 20, 21, 22, 23], [IGNORE, IGNORE, 21, 22, IGNORE]), ex([1, 30], [IGNORE, 30])];
  const N = IGNORE;

  it('pads each batch to its longest row: ids with the pad id, labels with -100; counts trained targets', () => {
    const bs = makeBatches(X, { batchSize: 2, padId: 7, shuffle: false });
    expect(bs).toHaveLength(2);
    expect(bs[0]).toMatchObject({ B: 2, T: 5, tokens: 3, rows: [0, 1] });
    expect([...bs[0]!.ids]).toEqual([1, 10, 11, 7, 7, 1, 20, 21, 22, 23]);
    expect([...bs[0]!.labels]).toEqual([N, N, 11, N, N, N, N, 21, 22, N]);
    expect(bs[1]).toMatchObject({ B: 1, T: 2, tokens: 1, rows: [2] });
    expect([...bs[1]!.ids]).toEqual([1, 30]);
    // labels[0] is never a target (position t predicts labels[t + 1]): not counted
    expect(makeBatches([ex([1, 2], [1, 2])], { batchSize: 1, padId: 0 })[0]!.tokens).toBe(1);
  });

  it('padToMultiple rounds T up; dropLast drops the short batch', () => {
    const bs = makeBatches(X, { batchSize: 2, padId: 0, shuffle: false, padToMultiple: 4 });
    expect(bs.map((b) => b.T)).toEqual([8, 4]);
    expect([...bs[1]!.labels]).toEqual([N, 30, N, N]);
    expect(makeBatches(X, { batchSize: 2, padId: 0, shuffle: false, dropLast: true }).map((b) => b.rows)).toEqual([[0, 1]]);
  });

  it('the shuffle is a permutation fixed by (seed, epoch)', () => {
    const many = Array.from({ length: 50 }, (_, i) => ex([1, i + 2], [N, i + 2]));
    const rows = (seed: number, epoch: number) => makeBatches(many, { batchSize: 4, padId: 0, seed, epoch }).flatMap((b) => b.rows);
    const r = rows(3, 0);
    expect([...r].sort((a, b) => a - b)).toEqual(many.map((_, i) => i));
    expect(r).not.toEqual(many.map((_, i) => i));
    expect(rows(3, 0)).toEqual(r);
    expect(rows(3, 1)).not.toEqual(r);
    expect(rows(4, 0)).not.toEqual(r);
  });

  it('bucketByLength cuts batches from length-sorted pools', () => {
    const lens = [9, 2, 7, 4, 3, 8, 5, 6];
    const xs = lens.map((n) => ex(Array<number>(n).fill(1), Array<number>(n).fill(N)));
    const bs = makeBatches(xs, { batchSize: 2, padId: 0, seed: 5, bucketByLength: true });
    const pairs = bs.map((b) => b.rows.map((r) => lens[r]!).sort((a, b) => a - b));
    expect(pairs.sort((a, b) => a[0]! - b[0]!)).toEqual([[2, 3], [4, 5], [6, 7], [8, 9]]);
    expect(bs.reduce((s, b) => s + b.B * b.T, 0)).toBe(2 * (3 + 5 + 7 + 9)); // each pair padded to its longer row
  });

  it('bucketByLength sorts within pools of 64 batches, and shuffles the batches only with shuffle', () => {
    // 300 examples of lengths 300 … 1 in file order, batches of 2: pools of 128 examples, each sorted by length.
    const xs = Array.from({ length: 300 }, (_, i) => ex(Array<number>(300 - i).fill(1), Array<number>(300 - i).fill(N)));
    const lengths = (b: { rows: readonly number[] }) => b.rows.map((r) => xs[r]!.ids.length);
    const sorted = makeBatches(xs, { batchSize: 2, padId: 0, shuffle: false, bucketByLength: true });
    expect(sorted).toHaveLength(150);
    expect([lengths(sorted[0]!), lengths(sorted[63]!), lengths(sorted[64]!), lengths(sorted[128]!), lengths(sorted[149]!)]).toEqual([[173, 174], [299, 300], [45, 46], [1, 2], [43, 44]]);
    const shuffled = makeBatches(xs, { batchSize: 2, padId: 0, seed: 1, bucketByLength: true, shuffle: true });
    expect(shuffled.flatMap((b) => b.rows).sort((a, b) => a - b)).toEqual(xs.map((_, i) => i));
    const firsts = shuffled.slice(0, 64).map((b) => Math.min(...lengths(b)));
    expect(firsts).not.toEqual([...firsts].sort((a, b) => a - b)); // batches shuffled after bucketing
  });

  it('rejects bad options and ragged examples', () => {
    expect(() => makeBatches(X, { batchSize: 1, padId: 0x80000000 })).toThrow('makeBatches: padId must be a token id (integer ≥ 0), got 2147483648');
    expect(() => makeBatches(X, { batchSize: 1, padId: 1.5 })).toThrow(/padId/);
    expect(makeBatches(X, { batchSize: 3, padId: 0x7fffffff, shuffle: false })[0]!.ids[3]).toBe(0x7fffffff);
    expect(() => makeBatches(X, { batchSize: 0, padId: 0 })).toThrow(/batchSize must be a positive integer, got 0/);
    expect(() => makeBatches(X, { batchSize: 1, padId: -1 })).toThrow(/padId/);
    expect(() => makeBatches(X, { batchSize: 1, padId: 0, padToMultiple: 0 })).toThrow(/padToMultiple/);
    expect(() => makeBatches([ex([1, 2], [N])], { batchSize: 1, padId: 0 })).toThrow(/example 0 has 2 ids but 1 labels/);
  });

  it('batchTensors: (B, T) i32 tensors holding the batch', async () => {
    const b = makeBatches(X, { batchSize: 2, padId: 7, shuffle: false })[0]!;
    const { tokens, labels } = batchTensors(b);
    expect(tokens.shape).toEqual([2, 5]);
    expect(tokens.dtype).toBe('i32');
    expect(labels.dtype).toBe('i32');
    expect(await toArray(tokens)).toEqual([[1, 10, 11, 7, 7], [1, 20, 21, 22, 23]]);
    expect(await toArray(labels)).toEqual([[N, N, 11, N, N], [N, N, 21, 22, N]]);
  });
});
