// The eval harness: readers on the official MMLU CSV and GSM8k JSONL formats (and their malformed rows), answer
// extraction as open-instruct's GSM8k script does it, the Wilson interval, and the scores checked against a direct
// computation of the same logits on the real stories260K checkpoint (interpreter).
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { data, setBackend } from '../core/backend.js';
import { tensor } from '../ops/create.js';
import { forward, generateIds, loadLlama, loadTokenizer, type LlamaConfig, type LlamaParams, type Tokenizer } from '../models/index.js';
import { chatPrompt } from '../recipes/chat.js';
import { accuracy, evalGsm8k, evalMultipleChoice, greedyContinuations, greedyReplies, gsmPrompt, lastNumber, mmluPrompt, parseCsv, readGsm8k, readMmlu, sameNumber } from '../recipes/eval.js';
import { fixture, leftMessage, right, tempDir } from './helpers.js';

const { path: fixtures, have: haveFixtures } = fixture('stories260K', 'the stories260K scoring tests');

describe('eval readers', () => {
  const dir = tempDir('camelid-eval-');

  it('parses RFC 4180 CSV: quoted commas, newlines and doubled quotes; names the line of a broken quote', () => {
    const rows = right(parseCsv('a,"b, c","say ""hi""\nthere",d\r\n\n"x",y,,\n', 'f.csv'));
    expect(rows).toEqual([{ line: 1, fields: ['a', 'b, c', 'say "hi"\nthere', 'd'] }, { line: 4, fields: ['x', 'y', '', ''] }]);
    expect(leftMessage(parseCsv('q,a\nq2,"open\n', 'f.csv'))).toBe('f.csv:2: a quoted field is not closed before the end of the file');
    expect(leftMessage(parseCsv('q,a\nab"c,d\n', 'f.csv'))).toBe('f.csv:2: a quote inside an unquoted field');
  });

  it('reads MMLU test CSVs with the subject from the file name, and names the line of a bad answer', async () => {
    const f = join(dir.path, 'high_school_physics_test.csv');
    await writeFile(f, 'What is 1+1?,1,2,3,4,B\n"Which, of these?",x,y,z,"w ""quoted""",D\n');
    const set = right(await readMmlu(f)());
    expect(set.subject).toBe('high school physics');
    expect(set.items).toEqual([
      { question: 'What is 1+1?', choices: ['1', '2', '3', '4'], answer: 1, line: 1 },
      { question: 'Which, of these?', choices: ['x', 'y', 'z', 'w "quoted"'], answer: 3, line: 2 },
    ]);
    expect(mmluPrompt(set.subject, set.items[1]!, [set.items[0]!])).toBe(
      'The following are multiple choice questions (with answers) about high school physics.\n\n'
      + 'What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n' + 'Which, of these?\nA. x\nB. y\nC. z\nD. w "quoted"\nAnswer:');
    await writeFile(f, 'q,1,2,3,4,A\nq2,1,2,3,4,E\n');
    expect(leftMessage(await readMmlu(f)())).toBe(`${f}:2: answer is 'E', expected one of A, B, C, D`);
    await writeFile(f, 'q,A\n');
    expect(leftMessage(await readMmlu(f)())).toBe(`${f}:1: expected question, at least two choices and the answer letter; got 2 fields`);
    expect(leftMessage(await readMmlu(join(dir.path, 'none.csv'))())).toBe(`${join(dir.path, 'none.csv')}: cannot read (ENOENT)`);
  });

  it('reads GSM8k JSONL, takes the target after ####, and names the line and field of a bad row', async () => {
    const f = join(dir.path, 'test.jsonl');
    await writeFile(f, `${JSON.stringify({ question: 'Tom has 3 apples and buys 1,200 more. How many?', answer: 'He has 3 + 1200 = <<3+1200=1203>>1203.\n#### 1,203' })}\n\n${JSON.stringify({ question: 'q', answer: 'x\n#### 7' })}\n`);
    const items = right(await readGsm8k(f)());
    expect(items.map((i) => [i.target, i.line, i.solution])).toEqual([['1203', 1, 'He has 3 + 1200 = <<3+1200=1203>>1203.'], ['7', 3, 'x']]);
    await writeFile(f, `${JSON.stringify({ question: 'q', answer: 'x\n#### 7' })}\n{"question": 5, "answer": "#### 1"}\n`);
    expect(leftMessage(await readGsm8k(f)())).toBe(`${f}:2: field 'question' must be a string, got 5`);
    await writeFile(f, '{"question": "q", "answer": "no final line"}\n');
    expect(leftMessage(await readGsm8k(f)())).toBe(`${f}:1: answer has no '#### N' final line`);
    await writeFile(f, '{"question": "q",\n');
    expect(leftMessage(await readGsm8k(f)())).toMatch(new RegExp(`^${f.replaceAll('/', '\\/')}:1: not valid JSON`));
  });

  it('extracts the last number as open-instruct does (commas dropped, decimals kept) and compares numerically', () => {
    expect(lastNumber('3 + 4 = 7. So the answer is 1,234.')).toBe('1234');
    expect(lastNumber('It costs -3.5 then .25')).toBe('.25');
    expect(lastNumber('no digits here')).toBe('no digits here');
    expect(sameNumber('18.0', '18')).toBe(true);
    expect(sameNumber('.25', '0.25')).toBe(true);
    expect(sameNumber('17', '18')).toBe(false);
    expect(sameNumber('abc', '18')).toBe(false);
    expect(sameNumber(' ', '0')).toBe(false); // a blank is no number (Number(' ') is 0)
    expect(sameNumber(' 18 ', '18')).toBe(true);
  });

  it('CSV edges: CR-only line ends, a last record without a newline, blank lines, a quote only at a field start', () => {
    expect(right(parseCsv('a,b\rc,d', 'f.csv'))).toEqual([{ line: 1, fields: ['a', 'b'] }, { line: 2, fields: ['c', 'd'] }]);
    expect(right(parseCsv('a,b\r\n\r\n\nc,\n', 'f.csv'))).toEqual([{ line: 1, fields: ['a', 'b'] }, { line: 4, fields: ['c', ''] }]);
    expect(right(parseCsv('"",x\n,\n', 'f.csv'))).toEqual([{ line: 1, fields: ['', 'x'] }, { line: 2, fields: ['', ''] }]);
    expect(right(parseCsv('', 'f.csv'))).toEqual([]);
    expect(right(parseCsv('x\ny', 'f.csv'))).toEqual([{ line: 1, fields: ['x'] }, { line: 2, fields: ['y'] }]); // one column, no final newline
    expect(right(parseCsv('"a\r\nb",c', 'f.csv'))).toEqual([{ line: 1, fields: ['a\r\nb', 'c'] }]); // inside quotes, kept as is
    expect(leftMessage(parseCsv('x\n"a"b,c\n', 'f.csv'))).toBe("f.csv:2: text after a quoted field's closing quote");
    expect(leftMessage(parseCsv('"a" ,c\n', 'f.csv'))).toBe("f.csv:1: text after a quoted field's closing quote");
  });

  it('MMLU: only _test/_dev/_val at the end leave the subject; empty and unreadable files are refused', async () => {
    const at = async (name: string, text = 'q,1,2,A\n') => { const f = join(dir.path, name); await writeFile(f, text); return readMmlu(f)(); };
    expect(right(await at('college_test_prep_dev.csv')).subject).toBe('college test prep');
    expect(right(await at('econometrics.csv')).subject).toBe('econometrics');
    expect(right(await at('anatomy_val.csv.bak')).subject).toBe('anatomy val.csv.bak');
    const two = right(await at('two_test.csv', 'q,yes,no,B\n'));
    expect(right(await at('spaced_test.csv', 'q,yes,no, B \n')).items[0]!.answer).toBe(1); // the letter's spaces trimmed
    expect(two.items[0]).toEqual({ question: 'q', choices: ['yes', 'no'], answer: 1, line: 1 });
    expect(leftMessage(await at('blank_test.csv', '\n\n'))).toBe(`${join(dir.path, 'blank_test.csv')}: no rows`);
    expect(leftMessage(await at('wide_test.csv', 'q,1,2,AB\n'))).toBe(`${join(dir.path, 'wide_test.csv')}:1: answer is 'AB', expected one of A, B`);
    expect(leftMessage(await at('broken_test.csv', 'q,"1,2,A\n'))).toBe(`${join(dir.path, 'broken_test.csv')}:1: a quoted field is not closed before the end of the file`);
  });

  it('GSM8k: the last #### is the target, whitespace-only lines are skipped, and each bad row is named', async () => {
    const f = join(dir.path, 'g.jsonl');
    await writeFile(f, `  \n${JSON.stringify({ question: 'q', answer: 'a #### b\n#### 12' })}\n`);
    expect(right(await readGsm8k(f)()).map((i) => [i.line, i.solution, i.target])).toEqual([[2, 'a #### b', '12']]);
    await writeFile(f, `{"question": "q", "answer": 3}\n`);
    expect(leftMessage(await readGsm8k(f)())).toBe(`${f}:1: field 'answer' must be a string, got 3`);
    await writeFile(f, `[1, 2]\n`);
    expect(leftMessage(await readGsm8k(f)())).toBe(`${f}:1: expected an object {question, answer}, got [1,2]`);
    for (const [row, got] of [['null', 'null'], ['"text"', '"text"'], [JSON.stringify(Array(30).fill(1)), JSON.stringify(Array(30).fill(1)).slice(0, 40)]]) {
      await writeFile(f, `${row}\n`);
      expect(leftMessage(await readGsm8k(f)())).toBe(`${f}:1: expected an object {question, answer}, got ${got}`);
    }
    await writeFile(f, `{"answer": "#### 1"}\n`);
    expect(leftMessage(await readGsm8k(f)())).toBe(`${f}:1: field 'question' is missing`);
    await writeFile(f, `{"question": "${'x'.repeat(60)}", "answer": null}\n`);
    expect(leftMessage(await readGsm8k(f)())).toBe(`${f}:1: field 'answer' must be a string, got null`);
    await writeFile(f, `{"question": {"long": "${'y'.repeat(60)}"}, "answer": "#### 1"}\n`);
    expect(leftMessage(await readGsm8k(f)())).toBe(`${f}:1: field 'question' must be a string, got ${JSON.stringify({ long: 'y'.repeat(60) }).slice(0, 40)}`);
    await writeFile(f, `{"question": "q", "answer": "####"}\n`);
    expect(right(await readGsm8k(f)())[0]!.target).toBe('');
    await writeFile(f, '\n \n');
    expect(leftMessage(await readGsm8k(f)())).toBe(`${f}: no rows`);
    expect(leftMessage(await readGsm8k(join(dir.path, 'none.jsonl'))())).toBe(`${join(dir.path, 'none.jsonl')}: cannot read (ENOENT)`);
  });

  it('the GSM8k prompt: the instruction, worked shots ("So the answer is N."), then the trimmed question', () => {
    const item = { question: '  How many?\n', solution: '', target: '', line: 1 };
    expect(gsmPrompt(item)).toBe('Answer the following question.\n\nQuestion: How many?');
    const shots = [{ question: 'A?', solution: 'one\ntwo', target: '3', line: 1 }, { question: 'B?', solution: 's', target: '4', line: 2 }];
    expect(gsmPrompt(item, shots)).toBe('Answer the following questions.\n\nQuestion: A?\nAnswer: one two So the answer is 3.\n\nQuestion: B?\nAnswer: s So the answer is 4.\n\nQuestion: How many?');
  });

  it('numbers compare as numbers only when both are numbers; a blank is not 0', () => {
    expect([sameNumber('0', ''), sameNumber('', '0'), sameNumber('', ''), sameNumber(' ', ' ')]).toEqual([false, false, true, true]);
    expect([sameNumber('18', '18.00'), sameNumber('1e1', '10'), sameNumber('x', 'x'), sameNumber('18', 'x')]).toEqual([true, true, true, false]);
  });

  it('gives the 95% Wilson interval', () => {
    // p = 0.8, n = 10, z = 1.96: centre (0.8 + 1.9208/10)/1.38415 = 0.71673, half 1.41603·√(0.016 + 0.0096037) = 0.22658.
    const a = accuracy(8, 10);
    expect(a.accuracy).toBe(0.8);
    expect(a.low).toBeCloseTo(0.4902, 3);
    expect(a.high).toBeCloseTo(0.9433, 3);
    expect(accuracy(0, 5).low).toBe(0);
    expect(accuracy(5, 5).high).toBe(1);
    expect(accuracy(0, 5).high).toBeCloseTo(0.4345, 3); // z²/(n + z²) at p = 0
    expect(accuracy(5, 5).low).toBeCloseTo(0.5655, 3);
    expect(accuracy(0, 0)).toEqual({ correct: 0, n: 0, accuracy: 0, low: 0, high: 1 }); // nothing scored: no information
  });
});

describe.skipIf(!haveFixtures)('eval scoring on stories260K (interpreter)', () => {
  let cfg: LlamaConfig, params: LlamaParams, tok: Tokenizer;
  beforeAll(async () => {
    await setBackend('cpu');
    ({ config: cfg, params } = right(await loadLlama(join(fixtures, 'hf'))()));
    tok = right(await loadTokenizer(join(fixtures, 'tok512.model'))());
  });

  it('MMLU letter scores are the next-token logits of the full forward at each prompt end', async () => {
    const set = { subject: 'stories', items: [
      { question: 'Who went to the park?', choices: ['Tom', 'Lily', 'a dog', 'the sun'], answer: 1, line: 1 },
      { question: 'What was red?', choices: ['a ball', 'the sky'], answer: 0, line: 2 },
    ] };
    const { results, acc } = await evalMultipleChoice(cfg, params, tok, set, { batchSize: 2 });
    for (const [i, it] of set.items.entries()) {
      const ids = chatPrompt(tok, [{ role: 'user', content: mmluPrompt(set.subject, it) }], { answerPrefix: 'The answer is:' });
      const logits = await data(forward(cfg, params, tensor([ids], { dtype: 'i32' }))); // (1, T, V)
      const at = (ids.length - 1) * cfg.vocabSize;
      const letters = ['A', 'B', 'C', 'D'].slice(0, it.choices.length).map((l) => tok.encode(` ${l}`, { bos: false }).at(-1)!);
      const direct = letters.map((id) => logits[at + id]!);
      results[i]!.scores.forEach((s, j) => expect(s).toBeCloseTo(direct[j]!, 4));
      expect(results[i]!.predicted).toBe(direct.indexOf(Math.max(...direct)));
    }
    expect(acc.n).toBe(2);
    expect(acc.correct).toBe(results.filter((r) => r.predicted === set.items[results.indexOf(r)]!.answer).length);
  });

  it('greedy replies are the generated ids decoded, cut at a stop string', async () => {
    const chats = [[{ role: 'user' as const, content: 'Once upon a time' }], [{ role: 'user' as const, content: 'The cat' }]];
    const replies = await greedyReplies(cfg, params, tok, chats, { maxTokens: 8 });
    const ids = await generateIds(cfg, params, chats.map((m) => chatPrompt(tok, m)), { maxTokens: 8, temperature: 0, stop: [tok.eosId] });
    expect(replies).toEqual(ids.map((r) => tok.decode(r)));
    const word = replies[0]!.trim().split(' ')[1]!;
    const cut = await greedyReplies(cfg, params, tok, chats.slice(0, 1), { maxTokens: 8, stop: [` ${word}`] });
    expect(cut[0]).toBe(replies[0]!.slice(0, replies[0]!.indexOf(` ${word}`)));
  });

  it('greedy continuations of plain token prompts (no chat template), in batches smaller than the prompts', async () => {
    const prompts = ['Once upon a time', 'The cat', 'Lily'].map((s) => tok.encode(s));
    const got = await greedyContinuations(cfg, params, tok, prompts, { maxTokens: 6, batchSize: 2 });
    const ids = await generateIds(cfg, params, prompts, { maxTokens: 6, temperature: 0, stop: [tok.eosId] });
    expect(got).toEqual(ids.map((r) => tok.decode(r)));
    expect(got.every((r) => r.length > 0)).toBe(true);
  });

  it('GSM8k: greedy replies after "Answer:" to the prompt with its shots, scored by the last number', async () => {
    const shots = [{ question: 'Tom had 2 balls and got 3 more. How many?', solution: 'He has 2 + 3 = 5.', target: '5', line: 1 }];
    const items = [
      { question: 'Lily saw 4 cats. How many cats?', solution: '', target: '4', line: 7 },
      { question: ' The dog ran. How far?', solution: '', target: '12', line: 9 },
    ];
    const { results, acc } = await evalGsm8k(cfg, params, tok, items, { shots, maxTokens: 5, batchSize: 1 });
    // The same decode written out: open-instruct's prompt as the user turn, "Answer:" opening the reply.
    const prompts = items.map((it) => chatPrompt(tok, [{ role: 'user', content: gsmPrompt(it, shots) }], { answerPrefix: 'Answer:' }));
    const outputs = (await generateIds(cfg, params, prompts, { maxTokens: 5, temperature: 0, stop: [tok.eosId] })).map((r) => tok.decode(r));
    expect(results.map((r) => r.output)).toEqual(outputs);
    expect(results.map((r) => [r.line, r.target, r.predicted])).toEqual(items.map((it, i) => [it.line, it.target, lastNumber(outputs[i]!)]));
    expect(acc).toEqual(accuracy(items.filter((it, i) => sameNumber(lastNumber(outputs[i]!), it.target)).length, 2));
    // An item whose target is what the model answers is scored correct.
    const said = { ...items[1]!, target: results[1]!.predicted };
    const again = await evalGsm8k(cfg, params, tok, [items[0]!, said], { shots, maxTokens: 5 });
    expect(again.results.map((r) => r.correct)).toEqual([sameNumber(results[0]!.predicted, '4'), true]);
    expect(again.acc.correct).toBe(again.results.filter((r) => r.correct).length);
  });
});

describe.skipIf(!haveFixtures)('camelid eval', () => {
  const dir = tempDir('camelid-eval-cli-');
  const run = async (argv: string[]) => {
    const { runCli } = await import('../cli.js');
    let out = '', err = '';
    const code = await runCli(argv, { writeOut: (s) => { out += s; }, writeErr: (s) => { err += s; } });
    return { code, out, err };
  };

  it('scores an MMLU file with shots from its first rows and writes one JSON line per scored item', async () => {
    await setBackend('cpu');
    const data = join(dir.path, 'stories_test.csv');
    await writeFile(data, 'Who is happy?,Tom,Lily,B\nWhat is big?,a cat,a tree,B\nWhat is red?,a ball,the sky,A\n');
    const output = join(dir.path, 'items.jsonl');
    const writes: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((s: string) => { writes.push(s); return true; }) as typeof process.stdout.write;
    let r;
    try { r = await run(['eval', '--model', join(fixtures, 'hf'), '--tokenizer', join(fixtures, 'tok512.model'), '--task', 'mmlu', '--data', data, '--shots', '1', '--output', output]); }
    finally { process.stdout.write = write; }
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const lines = (await (await import('node:fs/promises')).readFile(output, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { line: number; correct: boolean });
    expect(lines.map((l) => l.line)).toEqual([2, 3]);
    const correct = lines.filter((l) => l.correct).length;
    expect(writes.join('')).toMatch(new RegExp(`^mmlu stories, 1-shot: exact match [0-9.]+% \\[[0-9.]+, [0-9.]+\\] \\(${correct}/2\\)\\n$`));
  });

  it('refuses a missing task, an unknown task and a tokenizer of another vocabulary, naming them', async () => {
    expect(await run(['eval', '--model', join(fixtures, 'hf'), '--data', 'x.csv'])).toMatchObject({ code: 2, err: 'camelid eval: --task mmlu|gsm8k is required\n' });
    const bad = await run(['eval', '--model', join(fixtures, 'hf'), '--task', 'bbh', '--data', 'x']);
    expect(bad).toMatchObject({ code: 2, err: "camelid eval: --task must be mmlu or gsm8k, got 'bbh' (see 'camelid eval --help')\n" });
    const tok32k = resolve(fixtures, '../llama2-tokenizer-32k');
    const mismatch = await run(['eval', '--model', join(fixtures, 'hf'), '--tokenizer', tok32k, '--task', 'mmlu', '--data', 'x.csv']);
    expect(mismatch.code).toBe(2);
    expect(mismatch.err).toMatch(/has 32000 tokens but model .* has vocab_size 512/);
  });
});
