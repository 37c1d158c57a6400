// `camelid sft` end to end on stories260K (interpreter, tiny: short sequences, one padded T): loss falls, the output
// folder loads and `camelid generate` runs on it; runSft resumed from a checkpoint repeats an uninterrupted run's
// losses; config errors name the key, the field, or both vocabulary sizes.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import { loadLlama, setBackend, type LlamaConfig, type LlamaParams } from '../index.js';
import { generate } from '../models/generate.js';
import { loadTokenizer, type Tokenizer } from '../models/tokenizer/index.js';
import { chatPrompt } from '../recipes/chat.js';
import { runCli } from '../cli.js';
import { parseSftConfig, resolveSftConfig, runSft, TULU2_SFT } from '../recipes/sft.js';
import { flagsToConfig } from '../recipes/cli-sft.js';
import { stories260K } from './helpers.js';
import './setup.js';

setBackend('cpu');

const { fixtures, model, tok, have } = stories260K('sft end-to-end tests');
const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'camelid-sft-')); dirs.push(d); return d; };
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const rows = [
  [{ role: 'user', content: 'Who is Lily?' }, { role: 'assistant', content: 'Lily is a little girl.' }],
  [{ role: 'system', content: 'Be kind.' }, { role: 'user', content: 'What did the cat do?' }, { role: 'assistant', content: 'The cat played in the park.' }],
  [{ role: 'user', content: 'Say hi.' }, { role: 'assistant', content: 'Hi! I am happy.' }, { role: 'user', content: 'Again.' }, { role: 'assistant', content: 'Hi!' }],
  [{ role: 'user', content: 'Where is the ball?' }, { role: 'assistant', content: 'The ball is in the box.' }],
  [{ role: 'user', content: 'Is the sun out?' }, { role: 'assistant', content: 'Yes, it is a sunny day.' }],
];
// At maxSeqLen 40 the system-turn row keeps no trained token (tok512 spells the markers in many pieces) and is
// dropped: 4 usable rows; with evalFraction 0.2 one is held out and 3 train (2 batches of 2 per epoch).
const writeData = (dir: string) => {
  const f = join(dir, 'chat.jsonl');
  writeFileSync(f, rows.map((m, i) => JSON.stringify({ id: `r${i}`, messages: m })).join('\n') + '\n');
  return f;
};
const cliIn = async (...argv: string[]) => {
  let out = '', err = '';
  const code = await runCli(argv, { writeOut: (s) => { out += s; }, writeErr: (s) => { err += s; } });
  return { code, out, err };
};
const small = { maxSeqLen: 40, batchSize: 2, gradAccum: 1, padToMultiple: 40, lr: 3e-3, warmupRatio: 0, clipNorm: 1 };

describe('sft config', () => {
  it('unknown keys are rejected by name; fields are checked by name', () => {
    const bad = parseSftConfig({ model: 'm', lerning_rate: 1, batchSize: 2 }, 'cfg.json');
    expect(E.isLeft(bad) && bad.left).toMatch(/cfg\.json: unknown key 'lerning_rate'/);
    const badData = parseSftConfig({ data: [{ path: 'a', wieght: 2 }] }, 'cfg.json');
    expect(E.isLeft(badData) && badData.left).toMatch(/'data\.0\.wieght'/);
    const badType = parseSftConfig({ batchSize: 0, lossReduction: 'avg' }, 'cfg.json');
    expect(E.isLeft(badType) && badType.left).toMatch(/batchSize must be an integer > 0/);
    expect(E.isLeft(badType) && badType.left).toMatch(/lossReduction/);
  });
  it('defaults ← tulu2 preset ← file ← flags; epochs xor steps; required fields', () => {
    const r = resolveSftConfig([{ preset: 'tulu2', model: 'm', data: [{ path: 'd' }], output: 'o', lr: 1e-5 }, { batchSize: 4 }]);
    expect(E.isRight(r) && r.right).toMatchObject({ lr: 1e-5, batchSize: 4, epochs: 2, gradAccum: 128, maxSeqLen: 8192, clipNorm: 1, warmupRatio: 0.03, weightDecay: 0, schedule: 'linear' });
    // The Tulu 2 paper's SFT values (App. B): lr 2e-5, 2 epochs, warmup 0.03, wd 0, length 8192, batch 128, clip 1.
    expect(TULU2_SFT).toEqual({ lr: 2e-5, epochs: 2, warmupRatio: 0.03, weightDecay: 0, maxSeqLen: 8192, batchSize: 1, gradAccum: 128, schedule: 'linear', clipNorm: 1 });
    const s = resolveSftConfig([{ model: 'm', data: [{ path: 'd' }], output: 'o' }, { steps: 5 }]);
    expect(E.isRight(s) && s.right.steps === 5 && s.right.epochs === undefined).toBe(true);
    expect(resolveSftConfig([{ model: 'm', data: [{ path: 'd' }], output: 'o', epochs: 1, steps: 3 }])).toEqual(E.left('config: give epochs or steps, not both'));
    expect(resolveSftConfig([{ model: 'm' }])).toEqual(E.left('config: missing data, output'));
  });
  it.skipIf(!have)('a model and tokenizer that disagree on vocabulary size: an error naming both', async () => {
    const d = tmp();
    const r = await cliIn('sft', '--model', model, '--tokenizer', join(fixtures, 'llama2-tokenizer-32k/tokenizer.model'), '--data', writeData(d), '--output', join(d, 'out'), '--steps', '1');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/tokenizer .*llama2-tokenizer-32k\/tokenizer\.model has 32000 tokens but model .*stories260K\/hf has vocab_size 512/);
  });
  it('sft --help lists every config key as a flag; flags become config fields', async () => {
    const h = await cliIn('sft', '--help');
    expect(h.code).toBe(0);
    for (const f of ['--config', '--preset', '--model', '--data', '--maxSeqLen', '--gradAccum', '--lossReduction', '--resume']) expect(h.out).toContain(f);
    expect(flagsToConfig({ lr: '1e-5', data: ['a.jsonl', 'b.jsonl:2'], variant: 'hf' })).toEqual({ lr: 1e-5, data: [{ path: 'a.jsonl' }, { path: 'b.jsonl', weight: 2 }], variant: 'hf' });
    expect(() => flagsToConfig({ lr: 'fast' })).toThrow(/--lr must be a number, got 'fast'/);
  });
  it('an unknown flag or config key fails the command with exit code 2', async () => {
    const d = tmp();
    writeFileSync(join(d, 'c.json'), JSON.stringify({ model, oops: 1 }));
    const r = await cliIn('sft', '--config', join(d, 'c.json'));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/unknown key 'oops'/);
    expect((await cliIn('sft', '--bogus', '1')).code).toBe(2);
  });
});

describe.skipIf(!have)('camelid sft on stories260K (interpreter)', () => {
  it('trains from a config file plus flag overrides: loss falls, the folder loads and generates', async () => {
    const d = tmp(), out = join(d, 'out');
    writeFileSync(join(d, 'cfg.json'), JSON.stringify({ model, tokenizer: tok, data: [{ path: writeData(d) }], output: out, epochs: 4, ...small, lr: 1 }));
    const r = await cliIn('sft', '--config', join(d, 'cfg.json'), '--lr', '3e-3', '--progress', 'none', '--saveEvery', '4', '--evalFraction', '0.2', '--evalEvery', '4');
    expect(r.code, r.err).toBe(0);
    const all = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number; lr: number; evalLoss?: number });
    const evals = all.filter((x) => x.evalLoss !== undefined), m = all.filter((x) => x.evalLoss === undefined);
    expect(all.map((x) => x.step), JSON.stringify(all)).toEqual([1, 2, 3, 4, 4, 5, 6, 7, 8, 8]);
    expect(evals.map((x) => x.step)).toEqual([4, 8]); // eval every 4 steps and at the end
    expect(Number.isFinite(evals[0]!.evalLoss)).toBe(true);
    expect(m.map((x) => x.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]); // 4 epochs × 2 batches
    expect(m[0]!.lr).toBeCloseTo(3e-3, 12); // the flag won over the file's lr 1
    expect(m[7]!.loss).toBeLessThan(m[0]!.loss - 0.1);
    expect(E.isRight(await loadLlama(out)())).toBe(true);
    expect(existsSync(join(out, 'tokenizer.model'))).toBe(true);
    expect(existsSync(join(out, 'checkpoint-8', 'optimizer.safetensors'))).toBe(true);
    // The checkpoint records the run's settings: the file's, with the flag's lr over them.
    expect(JSON.parse(readFileSync(join(out, 'checkpoint-8', 'trainer_state.json'), 'utf8')).config).toMatchObject({ lr: 3e-3, epochs: 4, evalEvery: 4, output: out });
    // generate streams to process.stdout: capture it.
    const generated = async (...args: string[]) => {
      let text = '';
      const orig = process.stdout.write.bind(process.stdout);
      process.stdout.write = ((s: string | Uint8Array) => { text += String(s); return true; }) as typeof process.stdout.write;
      let g;
      try { g = await cliIn('generate', '--model', out, '--temperature', '0', '--max-tokens', '4', ...args); } finally { process.stdout.write = orig; }
      expect(g.code, g.err).toBe(0);
      return text;
    };
    const text = await generated('--prompt', 'Lily');
    expect(text.startsWith('Lily')).toBe(true);
    expect(text.trim().length).toBeGreaterThan('Lily'.length);
    // --chat: the prompt is one Tulu user turn and only the reply is printed: the greedy continuation of chatPrompt's ids.
    const reply = await generated('--prompt', 'Who is Lily?', '--chat');
    const t = (await loadTokenizer(join(out, 'tokenizer.model'))()) as E.Right<Tokenizer>;
    const lm = (await loadLlama(out)()) as E.Right<{ config: LlamaConfig; params: LlamaParams }>;
    const dec = t.right.decoder();
    let want = '';
    for await (const { tokens } of generate(lm.right.config, lm.right.params, [chatPrompt(t.right, [{ role: 'user', content: 'Who is Lily?' }])], { maxTokens: 4, temperature: 0 })) {
      if (tokens[0] === null || tokens[0] === undefined || tokens[0] === lm.right.config.eosId) break;
      want += dec.push(tokens[0]);
    }
    expect(reply).toBe(`${want}${dec.flush()}\n`);
  });

  it('runSft resumed from its checkpoint repeats the uninterrupted run (same losses)', async () => {
    const d = tmp(), data = [{ path: writeData(d) }];
    const cfg = (output: string, extra = {}) => { const r = resolveSftConfig([{ model, tokenizer: tok, data, output, steps: 4, saveEvery: 2, ...small, warmupRatio: 0.5, ...extra }]); if (E.isLeft(r)) throw new Error(r.left); return r.right; };
    const quiet = { log: () => {}, progress: 'none' as const };
    const whole = await runSft(cfg(join(d, 'a')), quiet);
    const first = await runSft(cfg(join(d, 'b')), { ...quiet, stopAfter: 2 });
    const rest = await runSft(cfg(join(d, 'b'), { resume: join(d, 'b') }), quiet);
    expect(whole.losses).toHaveLength(4);
    expect(first.losses).toHaveLength(2); // stopped where asked, as a killed run
    expect([...first.losses, ...rest.losses]).toEqual(whole.losses);
  });
});
