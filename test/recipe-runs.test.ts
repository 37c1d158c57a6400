// runSft and runDpo as a researcher calls them, each run a step or two on stories260K (interpreter): the settings
// they take through the codecs (presets, defaults, every field's own error), what they read (bad rows skipped or
// refused, eval files), what they hand on (AdamW's settings, the loss reduction, DPO's loss options, LoRA vs
// QLoRA, dropout keys), what they log, how they stop on a non-finite loss and how a full-fine-tuning DPO run
// resumes. Expected numbers are worked from the published formulas (PyTorch AdamW, TRL/open-instruct DPO and
// SimPO, open-instruct's loss reductions), cited where used.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { data, setBackend } from '../index.js';
import { flatten } from '../core/tree.js';
import { loadLlama, saveLlama } from '../models/load.js';
import { tensor } from '../ops/create.js';
import { loadTokenizer } from '../models/tokenizer/index.js';
import { DPO_DEFAULTS, parseDpoConfig, resolveDpoConfig, runDpo, TULU2_DPO, type DpoConfig, type DpoConfigPartial } from '../recipes/dpo-run.js';
import { parseSftConfig, resolveSftConfig, runSft, SFT_DEFAULTS, type SftConfig, type SftConfigPartial } from '../recipes/sft.js';
import { encodePairs, parsePrefs } from '../recipes/prefs.js';
import { NonFiniteLossError } from '../recipes/train.js';
import { checkpointName, readOptState } from '../recipes/checkpoint.js';
import { adamw } from '../recipes/optim.js';
import { UsageError } from '../models/cli-options.js';
import { right, stories260K, tempDir } from './helpers.js';
import './setup.js';

setBackend('cpu');

const { fixtures, model, tok, have } = stories260K('recipe run tests');
const tmp = tempDir('camelid-runs-');
const leftOf = <A>(e: E.Either<string, A>): string => (E.isLeft(e) ? e.left : 'accepted');
const okOf = <A>(e: E.Either<string, A>): A => { if (E.isLeft(e)) throw new Error(e.left); return e.right; };
const lines = () => { const all: string[] = []; return { all, log: (s: string) => { all.push(s); }, text: () => all.join('\n') }; };
const metrics = (dir: string) => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);

describe('sft settings', () => {
  it('the defaults are open-instruct finetune.py\'s (RECIPES-FACTS §4.1), clipping off and 3 epochs as there', () => {
    expect(SFT_DEFAULTS).toStrictEqual({
      maxSeqLen: 512, batchSize: 8, gradAccum: 1, epochs: 3, lr: 5e-5, schedule: 'linear', warmupRatio: 0, weightDecay: 0,
      b1: 0.9, b2: 0.999, eps: 1e-8, clipNorm: 0, seed: 42, lossReduction: 'mean', variant: 'hf-legacy', padToMultiple: 1,
      evalEvery: 0, saveEvery: 0, keepCheckpoints: 1, logEvery: 1,
    });
  });
  it('every enumerated value parses; a data entry is a path and an optional weight, nothing else', () => {
    const layer = { preset: 'tulu2', lossReduction: 'sum', data: [{ path: 'a.jsonl', weight: 2 }, { path: 'b.jsonl' }], evalData: ['e.jsonl'], evalFraction: 0.1, evalEvery: 3 };
    expect(okOf(parseSftConfig(layer, 'cfg.json'))).toStrictEqual(layer);
    expect(okOf(parseSftConfig({ lossReduction: 'mean' }, 'f'))).toStrictEqual({ lossReduction: 'mean' });
    expect(leftOf(parseSftConfig({ data: [{ weight: 1 }] }, 'cfg.json'))).toMatch(/^cfg\.json: data\.0\.path: expected string, got undefined/);
    expect(leftOf(parseSftConfig({ data: [{ path: 'a', weight: -1 }] }, 'cfg.json'))).toMatch(/data\.0\.weight: weight must be a number ≥ 0/);
    expect(leftOf(parseSftConfig({ data: [{ path: 'a', wieght: 1, size: 2 }] }, 'cfg.json'))).toBe("cfg.json: unknown keys 'data.0.wieght', 'data.0.size' (a data entry has path and weight)");
    expect(leftOf(parseSftConfig({ evalFraction: -0.1 }, 'f'))).toBe('f: evalFraction: evalFraction must be a number ≥ 0');
    expect(leftOf(parseSftConfig({ evalEvery: 1.5 }, 'f'))).toBe('f: evalEvery: evalEvery must be an integer ≥ 0');
    expect(leftOf(parseSftConfig({ preset: 'tulu3' }, 'f'))).toMatch(/^f: preset: expected "tulu2", got "tulu3"/);
    expect(leftOf(parseSftConfig({ lossReduction: 'avg' }, 'f'))).toMatch(/^f: lossReduction: expected "mean" \| "sum", got "avg"/);
  });
});

describe('dpo settings', () => {
  it('the defaults are TRL DPOConfig\'s (RECIPES-FACTS §4.3) and the tulu2-dpo preset is open-instruct\'s Tulu 2 script', () => {
    expect(DPO_DEFAULTS).toStrictEqual({
      maxSeqLen: 1024, batchSize: 8, gradAccum: 1, epochs: 1, lr: 1e-6, schedule: 'linear', warmupRatio: 0, weightDecay: 0, b1: 0.9, b2: 0.999,
      eps: 1e-8, clipNorm: 1, seed: 42, variant: 'hf-legacy', padToMultiple: 1, saveEvery: 0, keepCheckpoints: 1, logEvery: 1, beta: 0.1,
      loss: 'sigmoid', onBadRow: 'error',
    });
    expect(TULU2_DPO).toStrictEqual({ beta: 0.1, lr: 5e-7, epochs: 3, warmupRatio: 0.1, batchSize: 1, gradAccum: 32, maxSeqLen: 8192, schedule: 'linear', weightDecay: 0, clipNorm: 1, loss: 'sigmoid' });
    const named = okOf(resolveDpoConfig([okOf(parseDpoConfig({ preset: 'tulu2-dpo', model: 'm', data: ['d'], output: 'o' }, 'f'))]));
    expect([named.epochs, named.gradAccum, named.lr, named.warmupRatio]).toEqual([3, 32, 5e-7, 0.1]);
  });
  it('every enumerated value parses; each number field is refused by its name and range', () => {
    const layer = { preset: 'tulu2-dpo', onBadRow: 'skip', reference: 'cache', loss: 'simpo', labelSmoothing: 0.49, gamma: -1, rpoAlpha: 0, beta: 2, refCacheDir: 'c' };
    expect(okOf(parseDpoConfig(layer, 'f'))).toStrictEqual(layer);
    for (const reference of ['adapter', 'frozen']) expect(okOf(parseDpoConfig({ reference }, 'f'))).toStrictEqual({ reference });
    expect(okOf(parseDpoConfig({ labelSmoothing: 0 }, 'f'))).toStrictEqual({ labelSmoothing: 0 }); // the bound itself
    expect(leftOf(parseDpoConfig({ labelSmoothing: 0.5 }, 'f'))).toBe('f: labelSmoothing: labelSmoothing must be in [0, 0.5)');
    expect(leftOf(parseDpoConfig({ labelSmoothing: -0.01 }, 'f'))).toBe('f: labelSmoothing: labelSmoothing must be in [0, 0.5)');
    expect(leftOf(parseDpoConfig({ rpoAlpha: -1 }, 'f'))).toBe('f: rpoAlpha: rpoAlpha must be a non-negative number');
    expect(leftOf(parseDpoConfig({ beta: 0 }, 'f'))).toBe('f: beta: beta must be a number > 0');
    expect(leftOf(parseDpoConfig({ onBadRow: 'ignore' }, 'f'))).toMatch(/^f: onBadRow: expected "error" \| "skip", got "ignore"/);
    expect(leftOf(parseDpoConfig({ reference: 'none' }, 'f'))).toMatch(/^f: reference: expected "adapter" \| "frozen" \| "cache"/);
  });
  it('reference and loss that cannot go together are refused; the adapter reference with QLoRA alone is accepted', () => {
    const base = { model: 'm', data: ['d'], output: 'o' };
    expect(leftOf(resolveDpoConfig([{ ...base, loss: 'simpo', reference: 'cache' }]))).toBe("config: simpo uses no reference; drop reference 'cache'");
    expect(E.isRight(resolveDpoConfig([{ ...base, loss: 'simpo', reference: 'frozen' }]))).toBe(true);
    expect(E.isRight(resolveDpoConfig([{ ...base, reference: 'adapter', qlora: true }]))).toBe(true);
    expect(E.isRight(resolveDpoConfig([{ ...base, reference: 'adapter', lora: { r: 2, alpha: 2 } }]))).toBe(true);
  });
});

const chatRows = [
  [{ role: 'user', content: 'Who is Lily?' }, { role: 'assistant', content: 'Lily is a little girl.' }],
  [{ role: 'user', content: 'What did the cat do?' }, { role: 'assistant', content: 'The cat played in the park.' }],
  [{ role: 'user', content: 'Say hi.' }, { role: 'assistant', content: 'Hi! I am happy.' }],
  [{ role: 'user', content: 'Where is the ball?' }, { role: 'assistant', content: 'The ball is in the box.' }],
];
const chatFile = (() => {
  let f: string | undefined;
  return () => f ??= (() => { const p = join(tmp.path, 'chat.jsonl'); writeFileSync(p, chatRows.map((m, i) => JSON.stringify({ id: `r${i}`, messages: m })).join('\n') + '\n'); return p; })();
})();
const sft = (extra: SftConfigPartial): SftConfig => okOf(resolveSftConfig([{ model, tokenizer: tok, data: [{ path: chatFile() }], maxSeqLen: 40, batchSize: 2, padToMultiple: 8, lr: 1e-2, ...extra }]));

describe.skipIf(!have)('runSft (stories260K, interpreter)', () => {
  it('one step is one PyTorch AdamW update with the run\'s lr and weight decay; what it logs goes to stderr by default', async () => {
    const out = join(tmp.path, 'adamw');
    const [lr, wd] = [1e-2, 0.5];
    let err = '';
    const orig = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string | Uint8Array) => { err += String(s); return true; }) as typeof process.stderr.write;
    // evalEvery without eval rows: nothing to evaluate, so no eval loss is recorded (not 0, not NaN).
    try { await runSft(sft({ output: out, steps: 1, batchSize: 4, weightDecay: wd, evalEvery: 1 })); } finally { process.stderr.write = orig; }
    // torch.optim.AdamW, step 1 (RECIPES-FACTS §7): θ ← θ(1 − lr·λ) − lr·m̂/(√v̂ + ε) with m̂ = g, v̂ = g², so each
    // element moves to θ(1 − lr·λ) − lr·sign(g). Matrices decay, norm weights do not (adamw's default, open-instruct's
    // no_decay intent). The layers' weights only: the tied embedding's rows of unseen tokens get gradients far
    // below ε from the softmax alone, so m̂/(√v̂ + ε) falls short of ±1 there.
    const before = right(await loadLlama(model)()).params.layers, after = right(await loadLlama(out)()).params.layers;
    const [b, a] = [flatten(before).leaves, flatten(after).leaves];
    let n = 0, fit = 0;
    for (const [i, t] of b.entries()) {
      const [x0, x1] = [await data(t), await data(a[i]!)];
      const keep = t.shape.length >= 2 ? 1 - lr * wd : 1;
      for (const [j, x] of x0.entries()) {
        const d = x1[j]! - x * keep;
        n++;
        if (Math.abs(Math.abs(d) - lr) < 2e-6) fit++;
      }
    }
    expect(fit / n).toBeGreaterThan(0.99); // 226351 of 227200 here
    expect(err).toContain(`${chatFile()}: 4 rows, 0 bad rows skipped, 0 dropped (no trained token after truncation)`);
    expect(err).toContain('sft: 4 train examples, 1 batches of 4 per epoch, 1 steps of 1 micro-batches, warmup 0, lr 0.01 (linear)\n');
    const m = metrics(out);
    expect(m.filter((x) => 'evalLoss' in x)).toEqual([]);
    expect(err).toMatch(new RegExp(`step 1/1  loss ${m[0]!.loss!.toFixed(4)}  lr 1\\.00e-2`)); // progress 'auto' off a TTY: lines
    expect(err).toContain(`sft: 1 steps done; model in ${out}, last loss ${m[0]!.loss!.toFixed(4)}`);
    expect(m[0]!.tokensPerSec).toBeGreaterThan(0); // tokens are counted (4 rows × 40 padded positions)
  });

  it("with lr 0 the eval loss over two copies of the training file is the training loss, under either reduction, and the reductions differ", async () => {
    // One batch of all four rows: the training batch (shuffled) and each eval batch (a copy of the file, in order)
    // hold the same rows, and both reductions are order-free, so the mean over the two eval batches is the loss.
    const copy = join(tmp.path, 'chat-copy.jsonl');
    writeFileSync(copy, readFileSync(chatFile()));
    const losses: number[] = [];
    for (const lossReduction of ['mean', 'sum'] as const) {
      const out = join(tmp.path, `eval-${lossReduction}`), l = lines();
      const r = await runSft(sft({ output: out, steps: 1, batchSize: 4, lr: 0, lossReduction, evalData: [chatFile(), copy], evalEvery: 1 }), { log: l.log, progress: 'none' });
      const evals = metrics(out).filter((x) => x.evalLoss !== undefined);
      expect(evals.map((x) => x.step)).toEqual([1]);
      expect(evals[0]!.evalLoss).toBeCloseTo(r.losses[0]!, 5);
      expect(l.text()).toContain('4 train, 0 eval');
      expect(l.text()).toMatch(/chat-copy\.jsonl: 4 rows, .*; 0 train, 4 eval/);
      losses.push(r.losses[0]!);
    }
    // 'mean' averages each row's token mean; 'sum' weighs every token alike (open-instruct --reduce_loss): rows of
    // 7 to 11 trained tokens make the two differ.
    expect(Math.abs(losses[0]! - losses[1]!)).toBeGreaterThan(1e-3);
  });

  it('evalFraction holds out that share of the rows; resuming a finished run does no step and says so', async () => {
    const out = join(tmp.path, 'frac'), l = lines();
    const c = sft({ output: out, steps: 1, batchSize: 2, evalFraction: 0.5, evalEvery: 1, saveEvery: 1 });
    const r = await runSft(c, { log: l.log, progress: 'none' });
    expect(l.text()).toMatch(/chat\.jsonl: 4 rows, .*; 2 train, 2 eval/);
    const evals = metrics(out).filter((x) => x.evalLoss !== undefined);
    expect(evals.map((x) => x.step)).toEqual([1]);
    expect(evals[0]!.evalLoss).toBeGreaterThan(0);
    const again = lines();
    const done = await runSft({ ...c, resume: out }, { log: again.log, progress: 'none' });
    expect(done.losses).toEqual([]);
    expect(again.all.at(-1)).toBe(`sft: 1 steps done; model in ${out}`);
    expect(r.losses).toHaveLength(1);
  });

  it('LoRA dropout is drawn per micro-batch (a key per step); the summary names LoRA or QLoRA with the trainable count', async () => {
    const adapters = { r: 2, alpha: 4, targets: ['wq' as const, 'w1' as const] };
    const l = lines();
    const on = await runSft(sft({ output: join(tmp.path, 'drop'), steps: 2, lora: { ...adapters, dropout: 0.5 } }), { log: l.log, progress: 'none' });
    const off = await runSft(sft({ output: join(tmp.path, 'nodrop'), steps: 2, lora: { ...adapters, dropout: 0 } }), { log: () => {}, progress: 'none' });
    // B = 0 at the start: dropout cannot change the first loss, only the first update of B, hence the second loss.
    expect(on.losses[0]).toBeCloseTo(off.losses[0]!, 6);
    expect(Math.abs(on.losses[1]! - off.losses[1]!)).toBeGreaterThan(1e-5);
    // PEFT counts r·(in + out) per adapted matrix: wq 64×64, w1 (gate_proj) 172×64, in each of 5 layers.
    expect(l.text()).toContain(`LoRA: r 2, alpha 4, dropout 0.5, targets wq w1; ${5 * 2 * (64 + 64 + 64 + 172)} trainable parameters`);
    const cfg = JSON.parse(readFileSync(join(tmp.path, 'drop', 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg).toMatchObject({ base_model_name_or_path: model, r: 2, lora_alpha: 4, lora_dropout: 0.5 });
    const q = lines();
    await runSft(sft({ output: join(tmp.path, 'qlora'), steps: 1, qlora: true, lora: adapters }), { log: q.log, progress: 'none' });
    expect(q.text()).toContain('QLoRA (NF4 base, double quantisation): r 2, alpha 4, dropout 0, targets wq w1');
  });

  it('a non-finite loss stops the run naming the step and the batch\'s examples', async () => {
    const c = sft({ model: await nanModel(), output: join(tmp.path, 'nan'), steps: 3 });
    const run = runSft(c, { log: () => {}, progress: 'none' });
    await expect(run).rejects.toThrow(NonFiniteLossError);
    await expect(run).rejects.toThrow(/^loss is NaN at step 1 \(epoch 1, batch 1 \(examples \d, \d\)\); stopped/);
  });

  it('problems are named before training: the vocabulary before the data, a missing data file, a folder without a model', async () => {
    const llama2 = join(fixtures, 'llama2-tokenizer-32k/tokenizer.model');
    const missing = join(tmp.path, 'no-such.jsonl');
    await expect(runSft({ ...sft({ output: join(tmp.path, 'x') }), tokenizer: llama2, data: [{ path: missing }] }, { log: () => {} }))
      .rejects.toThrow(/tokenizer .*llama2-tokenizer-32k\/tokenizer\.model has 32000 tokens but model .* has vocab_size 512/);
    const noData = runSft({ ...sft({ output: join(tmp.path, 'x') }), data: [{ path: missing }] }, { log: () => {} });
    await expect(noData).rejects.toThrow(UsageError);
    await expect(runSft({ ...sft({ output: join(tmp.path, 'x') }), data: [{ path: missing }] }, { log: () => {} })).rejects.toThrow(/no-such\.jsonl/);
    const empty = join(tmp.path, 'empty-model');
    const noModel = runSft({ ...sft({ output: join(tmp.path, 'x') }), model: empty }, { log: () => {} });
    await expect(noModel).rejects.toThrow(UsageError);
    await expect(runSft({ ...sft({ output: join(tmp.path, 'x') }), model: empty }, { log: () => {} })).rejects.toThrow(/empty-model/);
  });
});

const prefRows: readonly unknown[] = [
  { prompt: 'Tell a story about a cat.', chosen: 'Once upon a time there was a cat.', rejected: 'No.' },
  { prompt: 'Who is Lily?', chosen: 'Lily is a little girl who likes to play.', rejected: 'A dog ran.' },
  { prompt: 'What did Tom see?', chosen: 'Tom saw a big red ball in the park.', rejected: 'Tom.' },
  { prompt: 'Say hi.', chosen: 'Hi! How are you?', rejected: 'Go.' },
];
const prefFile = (name: string, rows: readonly unknown[], extra = '') => { const p = join(tmp.path, name); writeFileSync(p, rows.map((r) => JSON.stringify(r)).join('\n') + '\n' + extra); return p; };
const dpo = (extra: DpoConfigPartial): DpoConfig => okOf(resolveDpoConfig([{ model, tokenizer: tok, data: [prefFile('prefs.jsonl', prefRows)], maxSeqLen: 48, batchSize: 2, padToMultiple: 8, lr: 1e-3, ...extra }]));
/** stories260K with one NaN in the final norm's weight (and its tokenizer beside it): every loss is NaN. */
let nanDir: string | undefined;
const nanModel = async (): Promise<string> => {
  if (nanDir) return nanDir;
  const { config, params } = right(await loadLlama(model)());
  const w = Float32Array.from(await data(params.norm));
  w[3] = Number.NaN;
  const dir = join(tmp.path, 'nan-model');
  right(await saveLlama(dir, config, { ...params, norm: tensor(w, { shape: params.norm.shape }) })());
  return (nanDir = dir);
};
const logSigmoid = (z: number) => -Math.log1p(Math.exp(-z));

describe.skipIf(!have)('runDpo (stories260K, interpreter)', () => {
  it('full fine-tuning, frozen reference: resumed from its checkpoint it repeats the uninterrupted run (a cut checkpoint is refused by name); bad rows skipped and counted', async () => {
    const data = [prefFile('prefs-bad.jsonl', prefRows, '{"prompt": "x"}\n')];
    const l = lines();
    const cfg = (output: string, extra: DpoConfigPartial = {}) => dpo({ output, data, onBadRow: 'skip', steps: 2, saveEvery: 1, ...extra });
    const whole = await runDpo(cfg(join(tmp.path, 'dpo-a')), { log: l.log, progress: 'none' });
    const first = await runDpo(cfg(join(tmp.path, 'dpo-b')), { log: () => {}, progress: 'none', stopAfter: 1 });
    const rest = await runDpo(cfg(join(tmp.path, 'dpo-b'), { resume: join(tmp.path, 'dpo-b') }), { log: () => {}, progress: 'none' });
    expect(whole.losses[0]).toBeCloseTo(Math.log(2), 6); // policy = reference at the start
    expect(first.losses).toHaveLength(1);
    expect([...first.losses, ...rest.losses]).toEqual(whole.losses);
    expect(l.text()).toContain('dpo data: 4 pairs read (1 bad rows skipped), 0 dropped with an untrained side, 4 kept');
    expect(l.text()).toMatch(/skipped .*prefs-bad\.jsonl:5/);
    expect(l.text()).toContain('dpo: 4 pairs, 2 batches of 2 per epoch, 2 steps of 1 micro-batches, warmup 0, lr 0.001 (linear), β 0.1, loss sigmoid, reference frozen');
    expect(l.text()).toContain(`dpo: 2 steps done; model in ${join(tmp.path, 'dpo-a')}, last loss ${whole.losses[1]!.toFixed(4)}`);
    // A frozen reference computes no log-prob cache.
    expect(l.text()).not.toContain('reference log-probs');
    expect(existsSync(join(tmp.path, 'dpo-a', 'ref-cache'))).toBe(false);
    const m = metrics(join(tmp.path, 'dpo-a'));
    expect(m[0]!.tokensPerSec).toBeGreaterThan(0);
    await expect(runDpo(cfg(join(tmp.path, 'dpo-c'), { onBadRow: 'error' }), { log: () => {} })).rejects.toThrow(/prefs-bad\.jsonl:5/);
    // Resuming the finished run does no step, and the last line says so without a loss.
    const again = lines();
    const none = await runDpo(cfg(join(tmp.path, 'dpo-b'), { resume: join(tmp.path, 'dpo-b') }), { log: again.log, progress: 'none' });
    expect(none.losses).toEqual([]);
    expect(again.all.at(-1)).toBe(`dpo: 2 steps done; model in ${join(tmp.path, 'dpo-b')}`);
    // A checkpoint whose model file is cut short: resuming is refused naming that file, before any step.
    const weights = join(tmp.path, 'dpo-b', checkpointName(2), 'model.safetensors');
    writeFileSync(weights, readFileSync(weights).subarray(0, 100));
    const broken = runDpo(cfg(join(tmp.path, 'dpo-b'), { resume: join(tmp.path, 'dpo-b') }), { log: () => {}, progress: 'none' });
    await expect(broken).rejects.toThrow(UsageError);
    await expect(broken).rejects.toThrow(weights);
  });

  it('one step is one PyTorch AdamW update with the run\'s lr, β1, β2, ε and weight decay, read from its saved moments', async () => {
    const [lr, b1, b2, eps, wd] = [1e-3, 0.5, 0.75, 1e-3, 0.5];
    const out = join(tmp.path, 'dpo-adamw');
    let err = '';
    const orig = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string | Uint8Array) => { err += String(s); return true; }) as typeof process.stderr.write;
    try { await runDpo(dpo({ output: out, steps: 1, saveEvery: 1, lr, b1, b2, eps, weightDecay: wd }), { progress: 'none' }); } finally { process.stderr.write = orig; }
    expect(err).toMatch(new RegExp(`\ndpo: 1 steps done; model in ${out}, last loss 0\\.693\\d\n$`)); // stderr by default, a line each
    // torch.optim.AdamW, step 1 (RECIPES-FACTS §7) on the clipped gradient g: m = (1 − β1)·g, v = (1 − β2)·g², so
    // m²/v = (1 − β1)²/(1 − β2) = 1 here for every g (10 with the defaults), and
    // θ₁ = θ₀(1 − lr·λ) − lr·m̂/(√v̂ + ε) with m̂ = m/(1 − β1), v̂ = v/(1 − β2); λ on matrices only.
    const before = right(await loadLlama(model)()).params;
    const moments = right(await readOptState(join(out, checkpointName(1)), adamw({ lr }).init(before)));
    const after = right(await loadLlama(out)()).params;
    const [p0, p1, m, v] = [before, after, moments.mu, moments.nu].map((x) => flatten(x).leaves);
    let ratios = 0, checked = 0;
    for (const [i, t] of p0!.entries()) {
      const [x0, x1, mi, vi] = await Promise.all([t, p1![i]!, m![i]!, v![i]!].map((x) => data(x)));
      const keep = t.shape.length >= 2 ? 1 - lr * wd : 1;
      for (const [j, x] of x0!.entries()) {
        const want = x * keep - lr * (mi![j]! / (1 - b1)) / (Math.sqrt(vi![j]! / (1 - b2)) + eps);
        expect(Math.abs(x1![j]! - want), `leaf ${i} element ${j}`).toBeLessThan(1e-6 + 1e-6 * Math.abs(want));
        if (vi![j]! > 1e-20) { ratios++; if (Math.abs(mi![j]! ** 2 / vi![j]! - 1) < 1e-3) checked++; }
      }
    }
    expect(ratios).toBeGreaterThan(1000);
    expect(checked).toBe(ratios);
  });

  it('SimPO with γ and label smoothing: the first loss is −(1−ε)·logσ(z) − ε·logσ(−z), z = r_c − r_r − γ, from the logged rewards β·π̄', async () => {
    // One pair per batch, so the logged rewards are that pair's (SimPO: rewards β·π̄, TRL/open-instruct).
    const [beta, gamma, eps] = [2, 0.7, 0.2];
    const l = lines();
    const r = await runDpo(dpo({ output: join(tmp.path, 'simpo'), loss: 'simpo', beta, gamma, labelSmoothing: eps, batchSize: 1, steps: 1 }), { log: l.log, progress: 'none' });
    const m = metrics(join(tmp.path, 'simpo'))[0]!;
    const z = m['rewards/chosen']! - m['rewards/rejected']! - gamma;
    expect(r.losses[0]).toBeCloseTo(-(1 - eps) * logSigmoid(z) - eps * logSigmoid(-z), 5);
    expect(l.text()).toMatch(/β 2, loss simpo, reference none/);
  });

  it('RPO α with a cached reference: the first loss is log 2 + α·(−π_c / n_c), the chosen side\'s mean NLL (TRL rpo_alpha); a broken cache file is refused by name', async () => {
    const alpha = 0.5, out = join(tmp.path, 'rpo'), l = lines();
    const r = await runDpo(dpo({ output: out, rpoAlpha: alpha, reference: 'cache', batchSize: 1, steps: 1 }), { log: l.log, progress: 'none' });
    const m = metrics(out)[0]!;
    // n_c: the trained tokens of the first batch's chosen side, counted from the encoded pairs.
    const t = right(await loadTokenizer(tok)());
    const pairs = encodePairs(t, right(parsePrefs(prefRows.map((x) => JSON.stringify(x)).join('\n'), 'rows')).pairs, { maxSeqLen: 48 }).pairs;
    const counts = pairs.map((p) => p.chosen.labels.filter((x) => x !== -100).length);
    const nll = -m['logps/chosen']!;
    // Which pair came first is the shuffle's business: the loss must match one of them, and only one does.
    const fits = counts.filter((n) => Math.abs(r.losses[0]! - (Math.log(2) + alpha * nll / n)) < 1e-4);
    expect(fits.length, `loss ${r.losses[0]}, counts ${counts}, nll ${nll}`).toBeGreaterThan(0);
    expect(l.text()).toMatch(/reference log-probs computed into .*rpo\/ref-cache\/[0-9a-f]{16}\.json/);
    expect(r.refCacheHit).toBe(false);
    // The cache is keyed by model, data and template: other pairs in the same folder miss; the same run hits.
    const refCacheDir = join(out, 'ref-cache');
    const other = lines();
    const miss = await runDpo(dpo({ output: join(tmp.path, 'rpo-2'), data: [prefFile('prefs-3.jsonl', prefRows.slice(1))], rpoAlpha: alpha, reference: 'cache', refCacheDir, batchSize: 1, steps: 1 }), { log: other.log, progress: 'none' });
    expect(miss.refCacheHit).toBe(false);
    const same = lines();
    const hit = await runDpo(dpo({ output: join(tmp.path, 'rpo-3'), rpoAlpha: alpha, reference: 'cache', refCacheDir, batchSize: 1, steps: 1 }), { log: same.log, progress: 'none' });
    expect(hit.refCacheHit).toBe(true);
    const file = /computed into (\S+\.json)/.exec(l.text())![1]!;
    expect(same.text()).toContain(`reference log-probs reused from ${file}`);
    expect(other.text()).not.toContain(file);
    expect(hit.losses).toEqual(r.losses);
    // A cache file that is no longer JSON is refused by name (with what to do), never silently recomputed over.
    writeFileSync(file, '{"key": ');
    const again = runDpo(dpo({ output: out, rpoAlpha: alpha, reference: 'cache', batchSize: 1, steps: 1 }), { log: () => {}, progress: 'none' });
    await expect(again).rejects.toThrow(UsageError);
    await expect(again).rejects.toThrow(`${file}: not JSON`);
    expect(readFileSync(file, 'utf8')).toBe('{"key": ');
  });

  it('QLoRA trains on its NF4 base, whichever reference is named; a run with no pair left, and a missing file, are refused by name', async () => {
    const l = lines();
    const adapters = { r: 2, alpha: 4, targets: ['wv' as const] };
    const q = await runDpo(dpo({ output: join(tmp.path, 'dpo-q'), qlora: true, lora: adapters, steps: 1 }), { log: l.log, progress: 'none' });
    expect(l.text()).toContain('QLoRA (NF4 base, double quantisation): r 2, alpha 4, dropout 0, targets wv');
    expect(l.text()).toMatch(/reference adapter/);
    expect(l.text()).toContain(`dpo: 1 steps done; adapters in ${join(tmp.path, 'dpo-q')}, last loss ${q.losses[0]!.toFixed(4)}`);
    // The policy's log-probs are the NF4 base's (plus B = 0 adapters): the same with the reference named 'frozen'
    // (with adapters, the reference is the base either way), and not the dense base's of a LoRA run.
    await runDpo(dpo({ output: join(tmp.path, 'dpo-qf'), qlora: true, lora: adapters, reference: 'frozen', steps: 1 }), { log: () => {}, progress: 'none' });
    await runDpo(dpo({ output: join(tmp.path, 'dpo-l'), lora: adapters, steps: 1 }), { log: () => {}, progress: 'none' });
    const [nf4, nf4Frozen, dense] = ['dpo-q', 'dpo-qf', 'dpo-l'].map((d) => metrics(join(tmp.path, d))[0]!['logps/chosen']!);
    expect(nf4Frozen).toBeCloseTo(nf4!, 4);
    expect(Math.abs(nf4! - dense!)).toBeGreaterThan(1e-3);
    // Bad rows skipped: the first five are logged; with no pair left the files are named, all of them.
    const bad = prefFile('prefs-6bad.jsonl', [], Array.from({ length: 6 }, (_, i) => `{"prompt": "p${i}"}\n`).join(''));
    const x = lines();
    const none = runDpo(dpo({ output: join(tmp.path, 'dpo-x'), data: [bad, prefFile('prefs.jsonl', prefRows)], onBadRow: 'skip', maxSeqLen: 8, steps: 1 }), { log: x.log });
    await expect(none).rejects.toThrow(`no preference pair left to train on in ${bad}, ${join(tmp.path, 'prefs.jsonl')}`);
    expect(x.all.filter((s) => s.startsWith('skipped ')).map((s) => /prefs-6bad\.jsonl:(\d+)/.exec(s)?.[1])).toEqual(['2', '3', '4', '5', '6']);
    await expect(runDpo({ ...dpo({ output: join(tmp.path, 'dpo-x'), steps: 1 }), data: [join(tmp.path, 'nope.jsonl')] }, { log: () => {} })).rejects.toThrow(UsageError);
  });

  it('a non-finite loss names the step and the pairs of the batch', async () => {
    const c = dpo({ model: await nanModel(), output: join(tmp.path, 'dpo-nan'), steps: 3 });
    await expect(runDpo(c, { log: () => {}, progress: 'none' })).rejects.toThrow(/^loss is NaN at step 1 \(epoch 1, batch 1 \(pairs \d, \d\)\); stopped/);
  });
});
