// `camelid sft --lora / --qlora` and `camelid merge` on stories260K (interpreter): the strict lora setting, loss
// falls for LoRA and QLoRA, checkpoints and the output are PEFT adapter folders, a resumed run repeats the
// uninterrupted losses (dropout keyed per micro-batch), the merged dense model gives the adapted logits, and a
// pre-quantised bitsandbytes 4-bit folder trains under --qlora.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, loadLlama, setBackend } from '../index.js';
import { runCli } from '../cli.js';
import { forward } from '../models/llama.js';
import { withLora } from '../models/lora.js';
import { loadAdapters } from '../models/peft.js';
import { saveBnb4bit } from '../models/bnb.js';
import { quantizeBase } from '../models/nf4.js';
import { parseSftConfig, resolveSftConfig, runSft } from '../recipes/sft.js';
import { checkLora, loadBase, LoraSetting, loraRun } from '../recipes/lora-sft.js';
import { UsageError } from '../models/cli-options.js';
import './setup.js';
import { maxAbsDiff, right, stories260K } from './helpers.js';

setBackend('cpu');

const { model, tok, have } = stories260K('LoRA SFT tests');
const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'camelid-lora-sft-')); dirs.push(d); return d; };
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const rows = [
  [{ role: 'user', content: 'Who is Lily?' }, { role: 'assistant', content: 'Lily is a little girl.' }],
  [{ role: 'user', content: 'What did the cat do?' }, { role: 'assistant', content: 'The cat played in the park.' }],
  [{ role: 'user', content: 'Say hi.' }, { role: 'assistant', content: 'Hi! I am happy.' }],
  [{ role: 'user', content: 'Where is the ball?' }, { role: 'assistant', content: 'The ball is in the box.' }],
];
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
const small = ['--maxSeqLen', '40', '--batchSize', '2', '--padToMultiple', '40', '--progress', 'none', '--clipNorm', '1'];
const epochMean = (m: readonly { loss: number }[], e: number) => (m[2 * e]!.loss + m[2 * e + 1]!.loss) / 2;
const metrics = (out: string) => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number });

describe('the lora setting', () => {
  it('the flag string and the object form; unknown keys, bad values and targets named', () => {
    const r = parseSftConfig({ lora: 'r=8,alpha=16,dropout=0.1,targets=q_proj+wv' }, 'flags');
    expect(E.isRight(r) && r.right.lora).toEqual({ r: 8, alpha: 16, dropout: 0.1, targets: ['wq', 'wv'] });
    const o = parseSftConfig({ lora: { r: 4, alpha: 4, rslora: true }, qlora: true }, 'cfg.json');
    expect(E.isRight(o) && o.right).toEqual({ lora: { r: 4, alpha: 4, rslora: true }, qlora: true });
    const bad = (lora: unknown) => { const x = parseSftConfig({ lora }, 'cfg.json'); return E.isLeft(x) ? x.left : 'accepted'; };
    expect(bad({ r: 4, alpha: 4, rank: 2 })).toMatch(/lora: unknown key 'rank'/);
    expect(bad('r=0,alpha=4')).toMatch(/r must be an integer > 0/);
    expect(bad('r=4,alpha=4,dropout=1')).toMatch(/dropout must be in \[0, 1\)/);
    expect(bad('r=4,alpha=4,targets=lm_head')).toMatch(/unknown target "lm_head"/);
    expect(bad('r4,alpha=4')).toMatch(/'r4' is not key=value/);
  });
});

describe('the lora setting: the flag string\'s edges and each field\'s check', () => {
  const ok = (lora: unknown) => { const x = checkLora(lora); if (E.isLeft(x)) throw new Error(x.left); return x.right; };
  const bad = (lora: unknown) => { const x = checkLora(lora); return E.isLeft(x) ? x.left : 'accepted'; };
  it('spaces around parts, empty parts and a trailing comma are allowed; targets split on + or space, repeats of + ignored', () => {
    expect(ok(' r=4 , alpha=8,, dropout=0.05,')).toStrictEqual({ r: 4, alpha: 8, dropout: 0.05 });
    expect(ok('r=2,alpha=2,targets=q_proj wk++down_proj')).toStrictEqual({ r: 2, alpha: 2, targets: ['wq', 'wk', 'w2'] });
    expect(ok('r=2,alpha=2,rslora=true').rslora).toBe(true);
    expect(ok('r=2,alpha=2,rslora=false')).toStrictEqual({ r: 2, alpha: 2, rslora: false });
    // Absent fields stay absent (PEFT's defaults apply later), not present as undefined.
    expect(ok({ r: 8, alpha: 16 })).toStrictEqual({ r: 8, alpha: 16 });
  });
  it('a part must be key=value from its first character to its last; an empty value is not 0', () => {
    expect(bad('r=4,9alpha=8')).toBe("'9alpha=8' is not key=value");
    expect(bad('r=4,alpha=8\n9')).toBe("'alpha=8\n9' is not key=value");
    expect(bad('r=4,alpha=')).toBe('alpha must be a number, got null');
    expect(bad('r=4,alpha=8,rslora=yes')).toBe('rslora must be true or false, got "yes"');
  });
  it('each field is checked by name and value, in the object form as in the string', () => {
    expect(bad({ r: 4, alpha: 8, rank: 2, bias: 1 })).toBe("unknown keys 'rank', 'bias' (known: r, alpha, dropout, targets, rslora)");
    expect(bad({ r: '4', alpha: 8 })).toBe('r must be an integer > 0, got "4"');
    expect(bad({ r: 2.5, alpha: 8 })).toBe('r must be an integer > 0, got 2.5');
    expect(bad({ r: 4, alpha: '8' })).toBe('alpha must be a number, got "8"');
    expect(bad({ r: 4, alpha: Number.POSITIVE_INFINITY })).toBe('alpha must be a number, got null');
    expect(bad({ r: 4, alpha: 8, dropout: '0.1' })).toBe('dropout must be in [0, 1), got "0.1"');
    expect(bad({ r: 4, alpha: 8, dropout: -0.1 })).toBe('dropout must be in [0, 1), got -0.1');
    expect(ok({ r: 4, alpha: 8, dropout: 0 }).dropout).toBe(0);
    expect(bad({ r: 4, alpha: 8, rslora: 'true' })).toBe('rslora must be true or false, got "true"');
    expect(bad({ r: 4, alpha: 8, targets: 'wq' })).toBe('targets must be a non-empty list');
    expect(bad({ r: 4, alpha: 8, targets: [] })).toBe('targets must be a non-empty list');
    expect(bad({ r: 4, alpha: 8, targets: ['wq', 5] })).toMatch(/^unknown target 5 \(known: wq wk wv wo w1 w2 w3 or q_proj/);
    for (const u of [null, [{ r: 4 }], 4]) expect(bad(u)).toBe('expected an object {r, alpha, dropout?, targets?, rslora?} or "r=…,alpha=…"');
  });
  it('the io-ts codec: is() agrees with the check, encode is the identity', () => {
    expect(LoraSetting.is({ r: 4, alpha: 8 })).toBe(true);
    expect(LoraSetting.is({ r: 0, alpha: 8 })).toBe(false);
    const s = { r: 4, alpha: 8, targets: ['wq' as const] };
    expect(LoraSetting.encode(s)).toBe(s);
    expect(LoraSetting.name).toBe('LoraSettings');
  });
});

describe.skipIf(!have)('loadBase and loraRun', () => {
  it('a bnb-4bit folder loads as an NF4 base only for adapters; a missing folder is named', async () => {
    const d = tmp(), bnb = join(d, 'bnb4');
    const base = right(await loadLlama(model)());
    right(await saveBnb4bit(bnb, base.config, await quantizeBase(base.params))());
    await expect(loadBase(bnb, false)).rejects.toThrow(`${bnb} is a bitsandbytes 4-bit checkpoint: its NF4 weights are frozen; train adapters on it with qlora (or lora)`);
    const nf4 = await loadBase(bnb, true);
    expect(nf4.nf4).toBe(true);
    expect((await loadBase(model, false)).nf4).toBe(false);
    const missing = join(d, 'nothing-here');
    await expect(loadBase(missing, true)).rejects.toThrow(UsageError);
    await expect(loadBase(missing, true)).rejects.toThrow(/nothing-here/);
    // A bitsandbytes 4-bit folder of another 4-bit type (FP4) is refused by its field, never read as a dense model.
    const cfgFile = join(bnb, 'config.json');
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as { quantization_config: Record<string, unknown> };
    cfg.quantization_config.bnb_4bit_quant_type = 'fp4';
    writeFileSync(cfgFile, JSON.stringify(cfg));
    await expect(loadBase(bnb, true)).rejects.toThrow(UsageError);
    await expect(loadBase(bnb, true)).rejects.toThrow(/config\.json.*quantization_config\.bnb_4bit_quant_type.*"fp4"/s);
  });
  it('without settings, Tulu 2\'s adapters (r 64, α 16, dropout 0.1, all seven projections) and PEFT\'s count of r·(in + out) each', async () => {
    const { config, params } = right(await loadLlama(model)());
    const run = await loraRun(config, params, { seed: 1 });
    // stories260K: dim 64, 4 kv heads of 8 (wk, wv: 64 → 32), hidden 172; 5 layers.
    const perLayer = (64 + 64) + (64 + 32) + (64 + 32) + (64 + 64) + (64 + 172) + (172 + 64) + (64 + 172);
    expect(run.summary).toBe(`LoRA: r 64, alpha 16, dropout 0.1, targets wq wk wv wo w1 w2 w3; ${5 * 64 * perLayer} trainable parameters`);
    await expect(loraRun(config, params, { seed: 1, resumeDir: join(tmp(), 'no-adapters') })).rejects.toThrow(/no-adapters/);
    // Adapters that cannot be written (a file where the folder should be) are an error, not a silent loss.
    const blocked = join(tmp(), 'a-file');
    writeFileSync(blocked, '');
    await expect(run.save(join(blocked, 'adapters'), run.trainable)).rejects.toThrow(/a-file/);
  });
});

describe.skipIf(!have)('LoRA and QLoRA SFT on stories260K (interpreter)', () => {
  it('--lora: loss falls; checkpoints and output are adapter folders; merge gives the adapted logits', async () => {
    const d = tmp(), out = join(d, 'out');
    const r = await cliIn('sft', '--model', model, '--tokenizer', tok, '--data', writeData(d), '--output', out, '--steps', '6', '--saveEvery', '3',
      '--lr', '5e-3', '--lora', 'r=4,alpha=8,dropout=0.1', ...small);
    expect(r.code, r.err).toBe(0);
    const m = metrics(out);
    console.log(`LoRA SFT losses: ${m.map((x) => x.loss.toFixed(4)).join(' ')}`);
    expect(m.map((x) => x.step)).toEqual([1, 2, 3, 4, 5, 6]);
    // Two batches per epoch, each epoch the same four examples: the third epoch's mean loss is well below the first's.
    expect(epochMean(m, 2)).toBeLessThan(epochMean(m, 0) - 0.3);
    for (const dir of [out, join(out, 'checkpoint-6')]) {
      expect(existsSync(join(dir, 'adapter_config.json'))).toBe(true);
      expect(existsSync(join(dir, 'adapter_model.safetensors'))).toBe(true);
      expect(existsSync(join(dir, 'model.safetensors'))).toBe(false);
    }
    const merged = join(d, 'merged');
    const g = await cliIn('merge', '--model', model, '--adapter', out, '--output', merged);
    expect(g.code, g.err).toBe(0);
    const base = (await loadLlama(model)()) as E.Right<{ config: C.LlamaConfig; params: C.LlamaParams }>;
    const a = await loadAdapters(out, base.right.params)();
    if (E.isLeft(a)) throw new Error(a.left.message);
    const dense = (await loadLlama(merged)()) as E.Right<{ config: C.LlamaConfig; params: C.LlamaParams }>;
    const tokens = C.tensor([[1, 403, 407, 261, 378]], { dtype: 'i32' });
    const want = await data(forward(base.right.config, withLora(base.right.params, a.right), tokens));
    expect(maxAbsDiff(await data(forward(dense.right.config, dense.right.params, tokens)), want)).toBeLessThan(1e-4);
    expect(maxAbsDiff(want, await data(forward(base.right.config, base.right.params, tokens)))).toBeGreaterThan(1e-3);
    expect(existsSync(join(merged, 'tokenizer.model'))).toBe(true);
    expect((await cliIn('merge', '--model', model, '--output', merged)).code).toBe(2); // --adapter is required
  });

  it('a resumed LoRA run (dropout 0.1) repeats the uninterrupted losses', async () => {
    const d = tmp(), dataFiles = [{ path: writeData(d) }];
    const cfg = (output: string, extra = {}) => {
      const r = resolveSftConfig([{ model, tokenizer: tok, data: dataFiles, output, steps: 4, saveEvery: 2, maxSeqLen: 40, batchSize: 2, padToMultiple: 40, lr: 2e-2, lora: { r: 2, alpha: 4, dropout: 0.1, targets: ['wq', 'wv', 'w2'] }, ...extra }]);
      if (E.isLeft(r)) throw new Error(r.left);
      return r.right;
    };
    const quiet = { log: () => {}, progress: 'none' as const };
    const whole = await runSft(cfg(join(d, 'a')), quiet);
    const first = await runSft(cfg(join(d, 'b')), { ...quiet, stopAfter: 2 });
    const rest = await runSft(cfg(join(d, 'b'), { resume: join(d, 'b') }), quiet);
    expect(whole.losses).toHaveLength(4);
    expect([...first.losses, ...rest.losses]).toEqual(whole.losses);
  });

  it('--qlora: NF4 base with adapters, loss falls', async () => {
    const d = tmp(), out = join(d, 'out');
    const r = await cliIn('sft', '--model', model, '--tokenizer', tok, '--data', writeData(d), '--output', out, '--steps', '6',
      '--lr', '5e-3', '--qlora', '--lora', 'r=4,alpha=8,dropout=0', ...small);
    expect(r.code, r.err).toBe(0);
    const m = metrics(out);
    console.log(`QLoRA SFT losses: ${m.map((x) => x.loss.toFixed(4)).join(' ')}`);
    expect(epochMean(m, 2)).toBeLessThan(epochMean(m, 0) - 0.3);
    expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ r: 4, lora_alpha: 8, lora_dropout: 0 });
  });

  it('a pre-quantised bitsandbytes 4-bit folder trains as the NF4 base it holds: the losses of --qlora on the dense model; without adapters, refused', async () => {
    const d = tmp(), chat = writeData(d), bnb = join(d, 'bnb4');
    const base = (await loadLlama(model)()) as E.Right<{ config: C.LlamaConfig; params: C.LlamaParams }>;
    expect(E.isRight(await saveBnb4bit(bnb, base.right.config, await quantizeBase(base.right.params))())).toBe(true);
    const args = (m: string, out: string) => ['sft', '--model', m, '--tokenizer', tok, '--data', chat, '--output', out, '--steps', '2', '--lr', '5e-3', '--qlora', '--lora', 'r=4,alpha=8,dropout=0', ...small];
    const fromDense = await cliIn(...args(model, join(d, 'a')));
    const fromBnb = await cliIn(...args(bnb, join(d, 'b')));
    expect(fromDense.code, fromDense.err).toBe(0);
    expect(fromBnb.code, fromBnb.err).toBe(0);
    expect(metrics(join(d, 'b')).map((x) => x.loss)).toEqual(metrics(join(d, 'a')).map((x) => x.loss));
    const full = await cliIn('sft', '--model', bnb, '--tokenizer', tok, '--data', chat, '--output', join(d, 'c'), '--steps', '1', ...small);
    expect(full.code).toBe(2);
    expect(full.err).toContain(`${bnb} is a bitsandbytes 4-bit checkpoint`);
  });
});
