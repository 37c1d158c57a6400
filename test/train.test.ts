// The shared training loop on the interpreter with a tiny Llama: resume reproduces an uninterrupted run's losses
// exactly, an interrupted checkpoint write leaves the previous checkpoint loadable, a NaN loss stops the run naming
// the step and batch, metrics.jsonl has its fields, and the step's gradient accumulation is the mean of micro-batch
// gradients.

import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, it, vi } from 'vitest';
import * as C from '../index.js';
import { data, initParams, key, leaves, loadLlama, orThrow, saveLlama, setBackend, type LlamaParams, type Tensor } from '../index.js';
import { sftLoss } from '../recipes/loss.js';
import { adamw, type AdamState } from '../recipes/optim.js';
import { linearWarmupDecay } from '../recipes/schedule.js';
import { stepBody, trainStep } from '../recipes/step.js';
import { trainLoop, NonFiniteLossError } from '../recipes/train.js';
import { listCheckpoints, readOptState, readTrainerState, resolveCheckpoint } from '../recipes/checkpoint.js';
import './setup.js';
import { tinyLlama } from './helpers.js';

setBackend('cpu');

const cfg = tinyLlama({ nLayers: 1 });
interface Batch { tokens: Tensor; labels: Tensor; scale: Tensor }
const i32 = (rows: number[][]) => C.tensor(rows, { dtype: 'i32' });
/** Micro-batch i: hand-made ids and labels, a different one for each i (mod 4). */
const batchAt = (i: number, nanAt = -1): Batch => {
  const r = i % 4;
  return {
    tokens: i32([[1, 3 + r, 5, 7, 2], [1, 4, 6 + r, 8, 2]]),
    labels: i32([[-100, -100, 5, 7, 2], [-100, -100, -100, 8, 2]]),
    scale: C.tensor([i === nanAt ? NaN : 1]),
  };
};
const loss = (p: LlamaParams, _f: null, b: Batch) => C.mul(sftLoss(cfg, p, b.tokens, b.labels), C.reshape(b.scale, []));
const opt = adamw({ lr: 1e-2, weightDecay: 0.1 });
const schedule = linearWarmupDecay({ peak: 0.05, warmupSteps: 2, totalSteps: 6 });
const dirs: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'camelid-train-')); dirs.push(d); return d; };
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const run = async (output: string, extra: { stopAfter?: number; resumeFrom?: string; nanAt?: number; hooks?: Parameters<typeof trainLoop>[0]['checkpointHooks'] } = {}) => {
  let params = initParams(cfg, key(1), { std: 0.3 });
  let optState: AdamState = opt.init(params);
  let resume;
  if (extra.resumeFrom) {
    const dir = orThrow(await resolveCheckpoint(extra.resumeFrom));
    params = orThrow(await loadLlama(dir)()).params;
    optState = orThrow(await readOptState(dir, opt.init(params)));
    resume = orThrow(await readTrainerState(dir));
  }
  return trainLoop({
    step: trainStep(loss, { optimizer: opt, clipNorm: 1 }) as never, trainable: params, optState, frozen: null,
    batchAt: (i) => batchAt(i, extra.nanAt), describeBatch: (i) => `batch ${i}`, tokensOf: () => 10,
    totalSteps: 6, gradAccum: 2, schedule, output, saveModel: async (d, p: LlamaParams) => orThrow(await saveLlama(d, cfg, p)()),
    saveEvery: 3, progress: 'none', ...(resume ? { resume } : {}), ...(extra.stopAfter ? { stopAfter: extra.stopAfter } : {}),
    ...(extra.hooks ? { checkpointHooks: extra.hooks } : {}),
  });
};

describe('trainLoop', () => {
  it('resume after a stop reproduces the uninterrupted loss sequence exactly', async () => {
    const whole = await run(tmp());
    expect(whole.losses).toHaveLength(6);
    expect(whole.losses[5]!).toBeLessThan(whole.losses[0]!);
    const out = tmp();
    const first = await run(out, { stopAfter: 3 });
    expect(first.losses).toEqual(whole.losses.slice(0, 3));
    expect((await listCheckpoints(out)).map((c) => c.step)).toEqual([3]);
    const rest = await run(out, { resumeFrom: out });
    expect([...first.losses, ...rest.losses]).toEqual(whole.losses);
    // The final folder loads as a model; metrics.jsonl has one line per step with the documented fields.
    expect(E.isRight(await loadLlama(out)())).toBe(true);
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const k of ['loss', 'lr', 'gradNorm', 'tokensPerSec']) expect(typeof lines[0]![k]).toBe('number');
    expect(lines[0]!.lr).toBe(0); // warmup: lr 0 on the first update
    expect(lines.map((l) => l.loss)).toEqual(whole.losses);
    expect((await listCheckpoints(out)).map((c) => c.step)).toEqual([6]); // the older one pruned once 6 was complete
  });

  it('a checkpoint write that dies midway leaves the previous checkpoint complete and loadable', async () => {
    const out = tmp();
    await expect(run(out, { hooks: { afterFile: (f) => { if (f === 'optimizer.safetensors' && existsSync(join(out, 'checkpoint-3'))) throw new Error('killed'); } } }))
      .rejects.toThrow(/checkpoint-6: write failed \(killed\)/);
    expect((await listCheckpoints(out)).map((c) => c.step)).toEqual([3]);
    expect(readdirSync(out)).toContain('checkpoint-6.tmp'); // the partial write never took the real name
    const dir = orThrow(await resolveCheckpoint(out));
    expect(dir).toBe(join(out, 'checkpoint-3'));
    expect(E.isRight(await loadLlama(dir)())).toBe(true);
    expect(orThrow(await readTrainerState(dir))).toMatchObject({ step: 3, dataPos: 6 });
    const p = orThrow(await loadLlama(dir)()).params;
    expect(E.isRight(await readOptState(dir, opt.init(p)))).toBe(true);
  });

  it('a NaN loss stops the run naming the step and batch; the last checkpoint stays', async () => {
    const out = tmp();
    await expect(run(out, { nanAt: 9 })).rejects.toThrow(NonFiniteLossError);
    await expect(run(tmp(), { nanAt: 9 })).rejects.toThrow(/loss is NaN at step 5 \(batch 8, batch 9\)/);
    expect((await listCheckpoints(out)).map((c) => c.step)).toEqual([3]);
  });
});

describe('trainLoop: what it logs and records', () => {
  const loop = async (extra: Partial<Parameters<typeof trainLoop<LlamaParams, AdamState, null, Batch>>[0]>) => {
    const lines: string[] = [];
    const output = tmp();
    const p = initParams(cfg, key(1), { std: 0.3 });
    const saved: string[] = [];
    await trainLoop<LlamaParams, AdamState, null, Batch>({
      step: trainStep(loss, { optimizer: opt }) as never, trainable: p, optState: opt.init(p), frozen: null, batchAt: (i) => batchAt(i),
      totalSteps: 5, gradAccum: 2, schedule, output, saveModel: async (d) => { saved.push(d); }, log: (l) => lines.push(l), ...extra,
    });
    const metrics = readFileSync(join(output, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const trainer = JSON.parse(readFileSync(join(output, 'checkpoint-5', 'trainer_state.json'), 'utf8')) as Record<string, unknown>;
    return { lines, metrics, trainer, saved, output };
  };

  it('logs every logEvery steps and the last; evaluates every evalEvery steps and the last; tokens/s from tokensOf', async () => {
    let evals = 0;
    const r = await loop({ progress: 'lines', logEvery: 2, evalEvery: 2, evalLoss: async () => 1.5 + evals++, tokensOf: () => 10, key: [3, 9], config: { note: 'x' } });
    expect(r.metrics.map((m) => [m.step, 'evalLoss' in m ? 'eval' : 'loss'])).toEqual([[2, 'loss'], [2, 'eval'], [4, 'loss'], [4, 'eval'], [5, 'loss'], [5, 'eval']]);
    expect(r.metrics.filter((m) => 'evalLoss' in m).map((m) => m.evalLoss)).toEqual([1.5, 2.5, 3.5]);
    for (const m of r.metrics.filter((x) => 'loss' in x)) {
      expect(Object.keys(m)).toEqual(['step', 'loss', 'lr', 'gradNorm', 'tokensPerSec']);
      expect(m.lr).toBeCloseTo(schedule(m.step! - 1), 12); // the rate the step used
      expect(m.tokensPerSec).toBeGreaterThan(0);
    }
    expect(r.lines.map((l) => l.replace(/  loss .*/, '  loss …'))).toEqual(['step 2/5  loss …', 'step 2/5  eval loss 1.5000', 'step 4/5  loss …', 'step 4/5  eval loss 2.5000', 'step 5/5  loss …', 'step 5/5  eval loss 3.5000']);
    // a fresh run records its own key and the run's settings; the model goes to the output folder at the end
    expect(r.trainer).toEqual({ step: 5, dataPos: 10, key: [3, 9], config: { note: 'x' } });
    expect(r.saved.at(-1)).toBe(r.output);
  });

  it('without tokensOf, evalLoss or a key: tokens/s 0, no eval lines, key [0, 0], no config; progress none logs nothing', async () => {
    const r = await loop({ progress: 'none', evalEvery: 2 });
    expect(r.lines).toEqual([]);
    expect(r.metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
    expect(r.metrics.every((m) => m.tokensPerSec === 0 && !('evalLoss' in m))).toBe(true);
    expect(r.trainer).toEqual({ step: 5, dataPos: 10, key: [0, 0] });
  });
});

describe('trainLoop: progress, stderr, aux metrics, disposal', () => {
  /** Runs fn with process.stderr's writes captured and its isTTY set as given. */
  const onStderr = async (isTTY: boolean, fn: () => Promise<unknown>): Promise<string> => {
    let text = '';
    const [write, tty] = [process.stderr.write.bind(process.stderr), Object.getOwnPropertyDescriptor(process.stderr, 'isTTY')];
    process.stderr.write = ((s: string | Uint8Array) => { text += String(s); return true; }) as typeof process.stderr.write;
    Object.defineProperty(process.stderr, 'isTTY', { value: isTTY, configurable: true });
    try { await fn(); } finally {
      process.stderr.write = write;
      if (tty) Object.defineProperty(process.stderr, 'isTTY', tty); else delete (process.stderr as { isTTY?: boolean }).isTTY;
    }
    return text;
  };
  const withAux = (p: LlamaParams, f: null, b: Batch) => ({ loss: loss(p, f, b), aux: { 'rewards/accuracy': C.tensor(0.75), 'rewards/margin': C.tensor(-0.5) } });
  const loop = (extra: Partial<Parameters<typeof trainLoop<LlamaParams, AdamState, null, Batch>>[0]>) => {
    const p = initParams(cfg, key(1));
    return trainLoop<LlamaParams, AdamState, null, Batch>({
      step: trainStep(withAux, { optimizer: opt }) as never, trainable: p, optState: opt.init(p), frozen: null, batchAt: (i) => batchAt(i),
      totalSteps: 2, schedule, output: tmp(), saveModel: async () => {}, ...extra,
    });
  };

  it("progress 'auto' (or unset) off a TTY: lines on stderr, the aux metrics two spaces apart; no bar", async () => {
    for (const progress of ['auto', undefined] as const) {
      const err = await onStderr(false, () => loop({ progress }));
      const lines = err.trim().split('\n');
      expect(lines).toHaveLength(2);
      expect(lines[1]).toMatch(/^step 2\/2  loss \d+\.\d{4}  lr \d\.\d\de-\d  gradNorm \d+\.\d{3}  0 tok\/s  rewards\/accuracy 0\.750  rewards\/margin -0\.500$/);
    }
  });

  it("on a TTY 'auto' draws cli-progress's bar (its format, '-' before the first step, the aux metrics) and no lines; the bar is stopped (cursor shown again)", async () => {
    const err = await onStderr(true, () => loop({ progress: 'auto', evalEvery: 1, evalLoss: async () => 1 }));
    expect(err).not.toMatch(/step \d\/2  loss/);
    expect(err).not.toMatch(/eval loss/); // eval results go to metrics.jsonl only, under a bar
    expect(err).toContain('step 0/2 | loss - | lr - | - tok/s | ETA');
    expect(err).toMatch(/step 2\/2 \| loss \d+\.\d{4} \| lr \d\.\d\de-\d \| 0 tok\/s \| rewards\/accuracy 0\.750 \| rewards\/margin -0\.500 \| ETA/);
    expect(err.indexOf('\x1b[?25l')).toBeGreaterThanOrEqual(0); // cursor hidden while drawing…
    expect(err.lastIndexOf('\x1b[?25h')).toBeGreaterThan(err.lastIndexOf('step 2/2')); // …and shown after the last frame
    expect(await onStderr(false, () => loop({ progress: 'bar' }))).toBe(''); // cli-progress draws nothing off a TTY
    const lines = await onStderr(true, () => loop({ progress: 'lines' })); // lines asked for on a TTY: lines, no bar
    expect(lines.trim().split('\n').map((l) => l.slice(0, 9))).toEqual(['step 1/2 ', 'step 2/2 ']);
  });

  it('a bare aux tensor is logged as "aux"', async () => {
    const lines: string[] = [];
    const p = initParams(cfg, key(1));
    await trainLoop({
      step: trainStep((q: LlamaParams, f: null, b: Batch) => ({ loss: loss(q, f, b), aux: C.tensor(2) }), { optimizer: opt }) as never, trainable: p, optState: opt.init(p), frozen: null,
      batchAt: (i) => batchAt(i), totalSteps: 1, schedule, output: tmp(), saveModel: async () => {}, progress: 'lines', log: (l) => lines.push(l),
    });
    expect(lines[0]).toMatch(/  aux 2\.000$/);
  });

  it("tokens/s is the micro-batches' tokens over the step's own seconds: at least tokens over the whole run's", async () => {
    const output = tmp(), t0 = performance.now();
    await loop({ output, progress: 'none', tokensOf: (b) => b.tokens.size, gradAccum: 2, totalSteps: 1 });
    const secs = (performance.now() - t0) / 1000;
    const m = JSON.parse(readFileSync(join(output, 'metrics.jsonl'), 'utf8').trim()) as Record<string, number>;
    expect(m.tokensPerSec).toBeGreaterThanOrEqual(20 / secs); // 2 micro-batches of 2 × 5 tokens
    expect(m.tokensPerSec).toBeLessThan(20 / 1e-5);
  });

  it("without describeBatch a non-finite loss names the micro-batches' positions", async () => {
    await expect(loop({ progress: 'none', batchAt: (i) => batchAt(i, 3), gradAccum: 2 })).rejects.toThrow(/^loss is NaN at step 2 \(micro-batch 2, micro-batch 3\)/);
    const e = await loop({ progress: 'none', batchAt: (i) => batchAt(i, 0) }).catch((x: unknown) => x);
    expect((e as Error).name).toBe('NonFiniteLossError');
  });

  it("disposeBatches frees each micro-batch's tensors after its step (and only then); the step's loss, norm and aux are freed after they are read", async () => {
    for (const disposeBatches of [true, false]) {
      const made: Tensor[] = [];
      const spied = (i: number) => { const b = batchAt(i); made.push(b.tokens, b.labels, b.scale); for (const t of [b.tokens, b.labels, b.scale]) vi.spyOn(t, 'dispose'); return b; };
      const outs: Tensor[] = [];
      const p = initParams(cfg, key(1));
      const inner = trainStep(withAux, { optimizer: opt });
      const step = async (...a: Parameters<typeof inner>) => {
        const o = await inner(...a);
        for (const t of [o.loss, o.gradNorm, ...leaves(o.aux)]) { vi.spyOn(t, 'dispose'); outs.push(t); }
        return o;
      };
      await trainLoop<LlamaParams, AdamState, null, Batch>({
        step: step as never, trainable: p, optState: opt.init(p), frozen: null, batchAt: spied, disposeBatches,
        totalSteps: 2, gradAccum: 2, schedule, output: tmp(), saveModel: async () => {}, progress: 'none',
      });
      expect(made).toHaveLength(12);
      for (const t of made) expect(t.dispose).toHaveBeenCalledTimes(disposeBatches ? 1 : 0);
      expect(outs).toHaveLength(8);
      for (const t of outs) expect(t.dispose).toHaveBeenCalledTimes(1);
    }
  });
});

describe('trainStep', () => {
  it('exposes its plan\'s kernels and dispatches (none on the interpreter) and a dispose; refuses an empty micro-batch list', async () => {
    const s = trainStep(loss, { optimizer: opt });
    const p = initParams(cfg, key(2), { std: 0.3 });
    expect([s.kernels, s.dispatches]).toEqual([0, 0]);
    const out = await s(p, opt.init(p), null, [batchAt(0)], 1e-3);
    expect(Number.isFinite((await data(out.loss))[0])).toBe(true);
    expect([s.kernels, s.dispatches]).toEqual([0, 0]); // the interpreter compiles nothing
    expect(typeof s.dispose).toBe('function');
    s.dispose();
    await expect(s(p, opt.init(p), null, [], 1e-3)).rejects.toThrow('train step: no micro-batches');
  });

  it('accumulation: the update from two micro-batches equals the update from their mean gradient', async () => {
    const p = initParams(cfg, key(2), { std: 0.3, dtype: 'f64' });
    const b0 = batchAt(0), b1 = batchAt(1);
    const f64b = (b: Batch) => ({ ...b, scale: C.cast(b.scale, 'f64') });
    const sgd = { init: () => null, update: (g: unknown, s: null, q: unknown) => [C.zipTrees([q, g] as never, ([a, d]) => C.sub(a!, C.mul(d!, 0.5))), s] as [never, null] };
    const two = stepBody(loss, { optimizer: sgd })(p, null, null, [f64b(b0), f64b(b1)], 0.5);
    const g0 = C.grad((q: LlamaParams) => loss(q, null, f64b(b0)))(p), g1 = C.grad((q: LlamaParams) => loss(q, null, f64b(b1)))(p);
    const want = C.zipTrees([p, g0, g1] as never, ([a, x, y]) => C.sub(a!, C.mul(C.add(x!, y!), 0.25))) as LlamaParams;
    const [got, exp] = [leaves(two.trainable), leaves(want)];
    for (let i = 0; i < got.length; i++) {
      const [a, b] = [await data(got[i]!), await data(exp[i]!)];
      for (let j = 0; j < a.length; j++) expect(a[j]).toBeCloseTo(b[j]!, 13);
    }
    const l0 = (await data(loss(p, null, f64b(b0))))[0]!, l1 = (await data(loss(p, null, f64b(b1))))[0]!;
    expect((await data(two.loss))[0]).toBeCloseTo((l0 + l1) / 2, 13);
  });
  it('the aux metrics of several micro-batches are their mean, leaf by leaf', async () => {
    const p = initParams(cfg, key(2), { std: 0.3 });
    // Each micro-batch reports the sum of its token ids (as f32) and a constant: 1 + 2 + … of batchAt(0) and (1).
    const withAux = (q: LlamaParams, f: null, b: Batch) => ({ loss: loss(q, f, b), aux: { ids: C.sum(C.cast(b.tokens, 'f32')), one: C.tensor(1) } });
    const sgd = { init: () => null, update: (_g: unknown, st: null, q: unknown) => [q, st] as [never, null] };
    const out = stepBody(withAux, { optimizer: sgd })(p, null, null, [batchAt(0), batchAt(1)], 0.1);
    const ids = (i: number) => (batchAt(i).tokens.size && [[1, 3 + i, 5, 7, 2], [1, 4, 6 + i, 8, 2]].flat().reduce((a, x) => a + x, 0));
    const aux = out.aux as { ids: Tensor; one: Tensor };
    expect((await data(aux.ids))[0]).toBeCloseTo((ids(0) + ids(1)) / 2, 5);
    expect((await data(aux.one))[0]).toBeCloseTo(1, 6);
  });

  it("progress lines carry the loss's own metrics (DPO's rewards) after the standard ones", async () => {
    const lines: string[] = [];
    const withAux = (p: LlamaParams, f: null, b: Batch) => ({ loss: loss(p, f, b), aux: { 'rewards/accuracy': C.tensor(0.75) } });
    await trainLoop({
      step: trainStep(withAux, { optimizer: opt }) as never, trainable: initParams(cfg, key(1)), optState: opt.init(initParams(cfg, key(1))), frozen: null,
      batchAt: (i) => batchAt(i), totalSteps: 2, schedule, output: tmp(), saveModel: async () => {}, progress: 'lines', log: (l) => lines.push(l),
    });
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^step 2\/2  loss \d+\.\d{4}  lr .*  gradNorm .* tok\/s  rewards\/accuracy 0\.750$/);
  });
});
