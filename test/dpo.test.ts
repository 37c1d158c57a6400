// DPO: each loss kind against numbers worked by hand from the published formulas, its gradient w.r.t. the policy
// log-probs against finite differences (f64), the gradient at the DPO start (Δ = 0) not 0; sequenceLogprobs against
// a direct log-softmax of the interpreter's logits and against llama2.c's stories260K logits; the three reference
// modes agree and the reference cache is invalidated by model, data or template.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { beforeAll, describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, item, setBackend, type Tensor } from '../index.js';
import type { LlamaConfig } from '../models/config.js';
import { forward, initParams } from '../models/llama.js';
import { loadLlama } from '../models/load.js';
import { lora, merge, type LoraAdapters } from '../models/lora.js';
import { cachedReference, dpoLoss, dpoLossFn, frozenReference, loraReference, pairLogprobs, sequenceLogprobs, type DpoKind, type DpoMetrics, type DpoModel, type DpoOpts } from '../recipes/dpo.js';
import { cachedRefLogps, computeRefLogps, hashPairs, hashParams, refBatch, refCacheKey } from '../recipes/dpo-ref.js';
import { makePrefBatches, prefBatchTensors, type EncodedPair } from '../recipes/prefs.js';
import { adamw } from '../recipes/optim.js';
import { trainStep } from '../recipes/step.js';
import { trainLoop } from '../recipes/train.js';
import { parseDpoConfig, resolveDpoConfig, runDpo, TULU2_DPO, type DpoConfigPartial } from '../recipes/dpo-run.js';
import { runCli } from '../cli.js';
import { kernelOuts, schedule } from '../core/schedule/index.js';
import { fixture, leftMessage, maxAbsDiff, right, tempDir, tinyLlama } from './helpers.js';
import './setup.js';

setBackend('cpu');

const f64 = (xs: readonly number[]) => C.tensor(Float64Array.from(xs), { dtype: 'f64' });
const i32 = (x: C.NestedArray) => C.tensor(x, { dtype: 'i32' });

// Worked by hand from the formulas (TRL dpo_trainer.py, open-instruct dpo_utils.py, SimPO eq. 6, IPO eq. 17).
const logSig = (x: number) => (x >= 0 ? -Math.log(1 + Math.exp(-x)) : x - Math.log(1 + Math.exp(x)));

// Three pairs: summed log-probs of the policy and the reference, and token counts.
const pc = [-12.5, -30.25, -7.0], pr = [-14.0, -29.0, -7.0];
const rc = [-13.0, -30.0, -6.5], rr = [-13.5, -29.5, -7.25];
const nc = [5, 12, 3], nr = [7, 10, 4];
const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

const run = (kind: DpoKind, o: Partial<DpoOpts> = {}) =>
  dpoLoss(f64(pc), f64(pr), kind === 'simpo' ? null : f64(rc), kind === 'simpo' ? null : f64(rr), { beta: 0.1, kind, chosenTokens: f64(nc), rejectedTokens: f64(nr), ...o });

/** The class name and the whole message of what `f` throws, or 'no error'. */
const thrown = (f: () => unknown): [string, string] => {
  try { f(); } catch (e) { return [(e as Error).name, (e as Error).message]; }
  return ['no error', ''];
};

describe('dpoLoss against hand-worked numbers', () => {
  const beta = 0.1;
  // Δ_i = (pc − pr) − (rc − rr) on sums: (1.5 − 0.5, −1.25 − (−0.5), 0 − 0.75) = (1, −0.75, −0.75)
  const delta = pc.map((_, i) => pc[i]! - pr[i]! - (rc[i]! - rr[i]!));
  const avgDelta = pc.map((_, i) => pc[i]! / nc[i]! - pr[i]! / nr[i]! - (rc[i]! / nc[i]! - rr[i]! / nr[i]!));

  it('sigmoid: −logσ(βΔ), rewards β(π − ref), accuracy and margin', async () => {
    expect(delta).toEqual([1, -0.75, -0.75]);
    const out = run('sigmoid');
    expect(await item(out.loss)).toBeCloseTo(meanOf(delta.map((d) => -logSig(beta * d))), 12);
    const cr = pc.map((p, i) => beta * (p - rc[i]!)), rj = pr.map((p, i) => beta * (p - rr[i]!));
    expect(maxAbsDiff(await data(out.chosenRewards), cr)).toBeLessThan(1e-12);
    expect(maxAbsDiff(await data(out.rejectedRewards), rj)).toBeLessThan(1e-12);
    // rewards: c = (0.05, −0.025, −0.05), r = (−0.05, 0.05, 0.025): only the first pair is ordered right
    expect(await item(out.accuracy)).toBeCloseTo(1 / 3, 12);
    expect(await item(out.margin)).toBeCloseTo(meanOf(cr.map((c, i) => c - rj[i]!)), 12);
  });

  it('sigmoid with cDPO label smoothing ε: −(1−ε)logσ(βΔ) − ε·logσ(−βΔ)', async () => {
    const eps = 0.1;
    const want = meanOf(delta.map((d) => -(1 - eps) * logSig(beta * d) - eps * logSig(-beta * d)));
    expect(await item(run('sigmoid', { labelSmoothing: eps }).loss)).toBeCloseTo(want, 12);
    expect(want).not.toBeCloseTo(meanOf(delta.map((d) => -logSig(beta * d))), 4); // ε really changes the number
  });

  it('hinge: relu(1 − βΔ)', async () => {
    const want = meanOf(delta.map((d) => Math.max(0, 1 - beta * d)));
    expect(await item(run('hinge').loss)).toBeCloseTo(want, 12);
    // β = 2: the first pair (Δ = 1) sits past the hinge and contributes 0
    expect(await item(run('hinge', { beta: 2 }).loss)).toBeCloseTo((0 + (1 + 1.5) + (1 + 1.5)) / 3, 12);
  });

  it('ipo: (Δ̄ − 1/(2β))² on token-averaged log-probs', async () => {
    const want = meanOf(avgDelta.map((d) => (d - 1 / (2 * beta)) ** 2));
    expect(await item(run('ipo').loss)).toBeCloseTo(want, 10);
    const out = run('ipo');
    expect(maxAbsDiff(await data(out.chosenRewards), pc.map((p, i) => beta * (p / nc[i]! - rc[i]! / nc[i]!)))).toBeLessThan(1e-12);
  });

  it('dpo_norm: the sigmoid loss on token-averaged log-probs', async () => {
    const want = meanOf(avgDelta.map((d) => -logSig(beta * d)));
    expect(await item(run('dpo_norm').loss)).toBeCloseTo(want, 12);
    expect(want).not.toBeCloseTo(meanOf(delta.map((d) => -logSig(beta * d))), 4);
  });

  it('RPO (TRL rpo_alpha): + α · the chosen tokens\' mean NLL, −Σπ_c / Σn_c, on top of the pair losses', async () => {
    // Σπ_c = −12.5 − 30.25 − 7 = −49.75 over 5 + 12 + 3 = 20 tokens: NLL 2.4875
    const want = meanOf(delta.map((d) => -logSig(beta * d))) + 0.5 * (49.75 / 20);
    const out = run('sigmoid', { rpoAlpha: 0.5 });
    expect(await item(out.loss)).toBeCloseTo(want, 12);
    expect(await item(out.accuracy)).toBeCloseTo(1 / 3, 12); // the metrics are the pair losses' own
    expect(() => dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta, rpoAlpha: 1 })).toThrow(/rpoAlpha averages the chosen sides over their tokens: pass chosenTokens/);
    expect(() => run('sigmoid', { rpoAlpha: -1 })).toThrow(/rpoAlpha must be a non-negative number, got -1/);
  });

  it('simpo: −logσ(β(π̄c − π̄r) − γ), no reference; rewards β·π̄', async () => {
    const b = 2, gamma = 0.5;
    const want = meanOf(pc.map((p, i) => -logSig(b * (p / nc[i]! - pr[i]! / nr[i]!) - gamma)));
    const out = run('simpo', { beta: b, gamma });
    expect(await item(out.loss)).toBeCloseTo(want, 12);
    expect(maxAbsDiff(await data(out.chosenRewards), pc.map((p, i) => b * p / nc[i]!))).toBeLessThan(1e-12);
    // default γ = 0.3·β (open-instruct's gamma_beta_ratio)
    expect(await item(run('simpo', { beta: b }).loss)).toBeCloseTo(meanOf(pc.map((p, i) => -logSig(b * (p / nc[i]! - pr[i]! / nr[i]!) - 0.3 * b))), 12);
  });

  it('simpo does not read references that are given; summed kinds refuse a malformed token count they would not read', async () => {
    const without = run('simpo', { beta: 2 });
    const given = dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta: 2, kind: 'simpo', chosenTokens: f64(nc), rejectedTokens: f64(nr) });
    expect(await item(given.loss)).toBeCloseTo(await item(without.loss), 12);
    expect(maxAbsDiff(await data(given.chosenRewards), pc.map((p, i) => 2 * p / nc[i]!))).toBeLessThan(1e-12);
    // bad input is refused even where it is unused (a caller's mistake, not a no-op)
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta: 0.1, chosenTokens: f64([1, 2]) }))).toEqual(['ShapeError', 'dpoLoss: chosenTokens must be f64(3,) like policyChosen, got f64(2,)']);
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta: 0.1, kind: 'hinge', rejectedTokens: f64([1, 2]) }))).toEqual(['ShapeError', 'dpoLoss: rejectedTokens must be f64(3,) like policyChosen, got f64(2,)']);
  });

  it('a token count of 0 averages over 1 (open-instruct clamps at 1)', async () => {
    const out = dpoLoss(f64([-2]), f64([-3]), f64([-1]), f64([-1]), { beta: 1, kind: 'dpo_norm', chosenTokens: f64([0]), rejectedTokens: f64([1]) });
    expect(await item(out.loss)).toBeCloseTo(-logSig(1 * (-2 - -3 - (-1 - -1))), 12);
  });

  it('rejects bad options and shapes by name', () => {
    expect(() => run('hinge', { labelSmoothing: 0.1 })).toThrow(/labelSmoothing applies to sigmoid/);
    expect(() => run('sigmoid', { labelSmoothing: 0.5 })).toThrow(/labelSmoothing must be in \[0, 0.5\)/);
    expect(() => run('sigmoid', { beta: 0 })).toThrow(/beta must be a positive number/);
    expect(() => run('nope' as DpoKind)).toThrow(/unknown kind 'nope'/);
    expect(() => dpoLoss(f64(pc), f64(pr), null, null, { beta: 0.1 })).toThrow(/kind 'sigmoid' needs reference/);
    expect(() => dpoLoss(f64(pc), f64([1, 2]), f64(rc), f64(rr), { beta: 0.1 })).toThrow(/policyRejected must be f64\(3,\)/);
    expect(() => dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { beta: 0.1, kind: 'ipo' })).toThrow(/pass chosenTokens and rejectedTokens/);
  });

  it('each out-of-range option is refused with its name and value', () => {
    const range = (m: string): [string, string] => ['RangeError', `dpoLoss: ${m}`];
    for (const beta of [0, -0.1, NaN, Infinity]) expect(thrown(() => run('sigmoid', { beta }))).toEqual(range(`beta must be a positive number, got ${beta}`));
    for (const rpoAlpha of [-1, NaN, Infinity]) expect(thrown(() => run('sigmoid', { rpoAlpha }))).toEqual(range(`rpoAlpha must be a non-negative number, got ${rpoAlpha}`));
    for (const labelSmoothing of [-0.1, 0.5, 0.7, NaN]) expect(thrown(() => run('sigmoid', { labelSmoothing }))).toEqual(range(`labelSmoothing must be in [0, 0.5), got ${labelSmoothing}`));
    // cDPO's ε (a flipped-label rate in the Bradley–Terry likelihood) has no meaning for the hinge and IPO losses
    for (const kind of ['hinge', 'ipo'] as const) expect(thrown(() => run(kind, { labelSmoothing: 0.1 }))).toEqual(range(`labelSmoothing applies to sigmoid, dpo_norm and simpo, not '${kind}'`));
    expect(thrown(() => run('kto' as DpoKind))).toEqual(range(`unknown kind 'kto' (expected one of sigmoid, hinge, ipo, dpo_norm, simpo)`));
    // the edges that are allowed
    for (const o of [{ labelSmoothing: 0.49 }, { rpoAlpha: 0 }, { beta: 1e-9 }]) expect(thrown(() => run('sigmoid', o))).toEqual(['no error', '']);
  });

  it('each mis-shaped or missing tensor is refused by its name, with the shape and dtype expected and got', () => {
    const shape = (m: string): [string, string] => ['ShapeError', `dpoLoss: ${m}`];
    const col = (xs: number[]) => C.reshape(f64(xs), [xs.length, 1]);
    const f32 = (xs: number[]) => C.tensor(Float32Array.from(xs), { dtype: 'f32' });
    const o = { beta: 0.1 };
    expect(thrown(() => dpoLoss(col(pc), f64(pr), f64(rc), f64(rr), o))).toEqual(shape('policyChosen must be (N,), got (3,1)'));
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), col(rc), f64(rr), o))).toEqual(shape('refChosen must be f64(3,) like policyChosen, got f64(3,1)'));
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), f64(rc), f32(rr), o))).toEqual(shape('refRejected must be f64(3,) like policyChosen, got f32(3,)'));
    // RPO reads chosenTokens even for a summed kind
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { ...o, rpoAlpha: 1, chosenTokens: f64([5, 12]) }))).toEqual(shape('chosenTokens must be f64(3,) like policyChosen, got f64(2,)'));
    expect(thrown(() => run('ipo', { chosenTokens: f32(nc) }))).toEqual(shape('chosenTokens must be f64(3,) like policyChosen, got f32(3,)'));
    expect(thrown(() => run('dpo_norm', { rejectedTokens: col(nr) }))).toEqual(shape('rejectedTokens must be f64(3,) like policyChosen, got f64(3,1)'));
    // one of the two token counts missing is as wrong as both
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { ...o, kind: 'ipo', chosenTokens: f64(nc) }))).toEqual(shape("kind 'ipo' averages over tokens: pass chosenTokens and rejectedTokens"));
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), f64(rc), f64(rr), { ...o, kind: 'dpo_norm', rejectedTokens: f64(nr) }))).toEqual(shape("kind 'dpo_norm' averages over tokens: pass chosenTokens and rejectedTokens"));
    // one of the two reference sides missing is as wrong as both
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), null, f64(rr), o))).toEqual(shape("kind 'sigmoid' needs reference log-probs (only simpo goes without)"));
    expect(thrown(() => dpoLoss(f64(pc), f64(pr), f64(rc), null, { ...o, kind: 'hinge' }))).toEqual(shape("kind 'hinge' needs reference log-probs (only simpo goes without)"));
  });

  it('with ε = 0 the loss is DPO eq. 7 alone: a pair at z = +∞ costs 0, not 0·logσ(−∞) = NaN', async () => {
    // A rejected answer of log-prob −∞: z = β((−1 − (−∞)) − (−1 − (−2))) = +∞, and −logσ(+∞) = 0. TRL's sigmoid
    // loss always adds ε·(−logσ(−z)), which is NaN here at ε = 0; eq. 7 has no such term.
    const out = dpoLoss(f64([-1, -2]), f64([-Infinity, -3]), f64([-1, -2]), f64([-2, -2.5]), { beta: 0.1 });
    // the first pair costs 0; the second: Δ = (−2 + 3) − (−2 + 2.5) = 0.5
    expect(await item(out.loss)).toBeCloseTo((0 - logSig(0.1 * 0.5)) / 2, 12);
  });
});

describe('dpoLoss gradients (f64, central differences)', () => {
  const kinds: [DpoKind, Partial<DpoOpts>][] = [
    ['sigmoid', {}], ['sigmoid', { labelSmoothing: 0.2 }], ['hinge', {}], ['ipo', {}], ['dpo_norm', { labelSmoothing: 0.1 }], ['simpo', { beta: 2 }],
    ['sigmoid', { rpoAlpha: 1 }],
  ];
  for (const [kind, o] of kinds) {
    it(`${kind}${o.labelSmoothing ? ` ε=${o.labelSmoothing}` : ''}${o.rpoAlpha ? ` rpo α=${o.rpoAlpha}` : ''}: d loss / d (π_c, π_r)`, async () => {
      const f = (p: { c: Tensor; r: Tensor }) => dpoLoss(p.c, p.r, kind === 'simpo' ? null : f64(rc), kind === 'simpo' ? null : f64(rr), { beta: 0.1, kind, chosenTokens: f64(nc), rejectedTokens: f64(nr), ...o }).loss;
      const [, g] = C.valueAndGrad(f)({ c: f64(pc), r: f64(pr) });
      const [gc, gr] = [await data(g.c), await data(g.r)];
      const h = 1e-6;
      for (const side of ['c', 'r'] as const) {
        const base = side === 'c' ? pc : pr;
        for (let i = 0; i < base.length; i++) {
          const at = (d: number) => { const x = base.slice(); x[i]! += d; return side === 'c' ? { c: f64(x), r: f64(pr) } : { c: f64(pc), r: f64(x) }; };
          const fd = ((await item(f(at(h)))) - (await item(f(at(-h))))) / (2 * h);
          expect(Math.abs((side === 'c' ? gc : gr)[i]! - fd)).toBeLessThan(1e-8);
        }
      }
      // a real signal: the hinge's first pair is inside the margin at β = 0.1, so every kind has gradient here
      expect(Math.max(...Array.from(gc, Math.abs))).toBeGreaterThan(1e-3);
    });
  }

  it('at the DPO start (policy = reference, Δ = 0) the gradient is −β/2 per pair (·(1−2ε) with smoothing), not 0', async () => {
    const same = [-5, -9];
    for (const eps of [0, 0.25]) {
      const f = (c: Tensor) => dpoLoss(c, f64(same), f64(same), f64(same), { beta: 0.1, labelSmoothing: eps }).loss;
      const g = await data(C.grad(f)(f64(same)));
      // d/dπ_c of mean_i [−(1−ε)logσ(βΔ_i) − ε logσ(−βΔ_i)] at Δ = 0: (−(1−ε)σ(0) + εσ(0))·β / N = −β(1−2ε)/(2N)
      for (const v of g) expect(v).toBeCloseTo((-0.1 * (1 - 2 * eps)) / 2 / 2, 12);
      expect(await item(f(f64(same)))).toBeCloseTo(Math.log(2), 12);
    }
  });
});

// dim 8, 2 layers, vocab 11.
const tiny = tinyLlama();

/** Σ_t log softmax(logits[b, t−1])[labels[b, t]] over labels ≠ −100, from the logits on the host. */
const direct = (logits: ArrayLike<number>, labels: number[][], V: number): { lp: number[]; n: number[] } => {
  const T = labels[0]!.length;
  const lp: number[] = [], n: number[] = [];
  labels.forEach((row, b) => {
    let s = 0, k = 0;
    for (let t = 1; t < T; t++) {
      if (row[t] === -100) continue;
      const at = (b * T + t - 1) * V;
      let m = -Infinity;
      for (let v = 0; v < V; v++) m = Math.max(m, logits[at + v]!);
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(logits[at + v]! - m);
      s += logits[at + row[t]!]! - m - Math.log(z);
      k++;
    }
    lp.push(s); n.push(k);
  });
  return { lp, n };
};

describe('sequenceLogprobs', () => {
  const tokens = [[1, 5, 3, 9, 2, 0], [4, 4, 10, 7, 6, 8], [1, 2, 3, 4, 0, 0]];
  const labels = [[-100, -100, 3, 9, 2, -100], [-100, 4, 10, 7, 6, 8], [-100, -100, -100, -100, -100, -100]];

  for (const tie of [false, true]) {
    it(`equals a direct log-softmax of the interpreter's logits (f64, ${tie ? 'tied' : 'untied'}; whole and chunked head)`, async () => {
      const cfg = { ...tiny, tieEmbeddings: tie };
      const p = initParams(cfg, C.key(2), { dtype: 'f64', std: 0.5 });
      const want = direct(await data(forward(cfg, p, i32(tokens))), labels, cfg.vocabSize);
      for (const chunk of [undefined, 2]) {
        const got = sequenceLogprobs(cfg, p, i32(tokens), i32(labels), chunk ? { chunk } : {});
        expect(got.logps.shape).toEqual([3]);
        expect(maxAbsDiff(await data(got.logps), want.lp)).toBeLessThan(1e-12);
        expect(Array.from(await data(got.tokens))).toEqual([3, 5, 0]);
      }
      expect(want.lp[0]).toBeLessThan(-1); // real log-probs, not zeros
    });
  }

  it('refuses tokens and labels that are not both (B, T), labels i32, or T < 2, naming them', () => {
    const p = initParams(tiny, C.key(2), { dtype: 'f64', std: 0.5 });
    const msg = /sequenceLogprobs: tokens i32\(.*\) and labels .* must both be \(B, T\), labels i32/;
    expect(() => sequenceLogprobs(tiny, p, i32(tokens), i32(labels.slice(0, 2)))).toThrow(msg); // B differs
    expect(() => sequenceLogprobs(tiny, p, i32(tokens), i32(labels.map((r) => r.slice(1))))).toThrow(msg); // T differs
    expect(() => sequenceLogprobs(tiny, p, i32(tokens), i32(labels[0]!))).toThrow(msg); // rank 1
    expect(() => sequenceLogprobs(tiny, p, i32(tokens[0]!), i32(labels))).toThrow(msg); // rank 1
    expect(() => sequenceLogprobs(tiny, p, i32(tokens), C.tensor(labels, { dtype: 'f64' }))).toThrow(msg); // f64 labels
    expect(() => sequenceLogprobs(tiny, p, i32([[1]]), i32([[1]]))).toThrow('sequenceLogprobs: sequences need at least 2 positions to predict a label, got T = 1');
    // only the rank wrong: the same B and T in front, a trailing axis of 1
    const col = (x: number[][]) => C.reshape(i32(x), [3, 6, 1]);
    expect(() => sequenceLogprobs(tiny, p, col(tokens), i32(labels))).toThrow(/tokens i32\(3,6,1\) and labels i32\(3,6\) must both be \(B, T\)/);
    expect(() => sequenceLogprobs(tiny, p, i32(tokens), col(labels))).toThrow(/tokens i32\(3,6\) and labels i32\(3,6,1\) must both be \(B, T\)/);
  });

  it('pairLogprobs splits 2N rows into the chosen half and the rejected half, and refuses an odd number of rows', async () => {
    const p = initParams(tiny, C.key(2), { dtype: 'f64', std: 0.5 });
    const rows = tokens.slice(0, 2), labs = [labels[1]!, labels[0]!];
    const want = direct(await data(forward(tiny, p, i32(rows))), labs, tiny.vocabSize);
    const got = pairLogprobs(tiny, p, i32(rows), i32(labs));
    expect(maxAbsDiff([...await data(got.chosen), ...await data(got.rejected)], want.lp)).toBeLessThan(1e-12);
    expect([...await data(got.chosenTokens), ...await data(got.rejectedTokens)]).toEqual([5, 3]);
    expect(() => pairLogprobs(tiny, p, i32(tokens), i32(labels))).toThrow('pairLogprobs: a batch of pairs has an even number of rows (chosen then rejected), got (3,6)');
  });

  it('T = 2 is enough: position 0 predicts label 1', async () => {
    const p = initParams(tiny, C.key(2), { dtype: 'f64', std: 0.5 });
    const got = sequenceLogprobs(tiny, p, i32([[1, 5]]), i32([[-100, 5]]));
    const want = direct(await data(forward(tiny, p, i32([[1, 5]]))), [[-100, 5]], tiny.vocabSize);
    expect(maxAbsDiff(await data(got.logps), want.lp)).toBeLessThan(1e-12);
    expect(Array.from(await data(got.tokens))).toEqual([1]);
  });

  it('its gradient w.r.t. the parameters matches finite differences (f64)', async () => {
    const p = initParams(tiny, C.key(4), { dtype: 'f64', std: 0.4 });
    const dir = C.mapTree(p, (t, i) => C.mul(C.normal(C.key(50 + i), t.shape, 'f64'), 1));
    const f = (q: typeof p) => C.sum(C.mul(sequenceLogprobs(tiny, q, i32(tokens), i32(labels)).logps, f64([1, -0.5, 3])));
    const [, g] = C.valueAndGrad(f)(p);
    const eps = 1e-5;
    const shift = (s: number) => C.zipTrees([p, dir], ([a, b]) => C.add(a!, C.mul(b!, s)));
    const fd = ((await item(f(shift(eps)))) - (await item(f(shift(-eps))))) / (2 * eps);
    let ad = 0;
    const [gl, dl] = [C.leaves(g), C.leaves(dir)];
    for (let i = 0; i < gl.length; i++) {
      const [a, b] = [await data(gl[i]!), await data(dl[i]!)];
      for (let j = 0; j < a.length; j++) ad += a[j]! * b[j]!;
    }
    expect(Math.abs(ad)).toBeGreaterThan(1e-3);
    expect(Math.abs(ad - fd)).toBeLessThan(1e-7 * (1 + Math.abs(fd)));
  });

  const { path: fixtures, have } = fixture('stories260K', 'the DPO check against run.c logits');
  describe.skipIf(!have)('against llama2.c run.c logits (stories260K)', () => {
    let ref: Float32Array, ids: number[];
    beforeAll(async () => {
      const c = (JSON.parse(await readFile(join(fixtures, 'expected.json'), 'utf8')) as { cases: { all_ids: number[]; logits_file: string; logits_shape: [number, number] }[] }).cases[0]!;
      const bytes = await readFile(join(fixtures, c.logits_file));
      ref = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      ids = c.all_ids.slice(0, c.logits_shape[0]);
    });
    it('the log-prob of the greedy continuation given the prompt, within 1e-4 of run.c\'s logits', async () => {
      const { config, params } = right(await loadLlama(join(fixtures, 'hf'))());
      // Train on ids 10…63 (the prefix masked): the reference rows 9…62 predict them.
      const lab = ids.map((t, i) => (i >= 10 ? t : -100));
      const want = direct(ref, [lab], config.vocabSize);
      const got = sequenceLogprobs(config, params, i32([ids]), i32([lab]));
      expect(await item(got.tokens)).toBe(ids.length - 10);
      const err = Math.abs((await item(got.logps)) - want.lp[0]!);
      console.log(`stories260K: Σ log p of ${ids.length - 10} tokens = ${want.lp[0]!.toFixed(4)} (run.c logits), |ours − run.c| = ${err.toExponential(2)}`);
      expect(err).toBeLessThan(1e-4);
    });
  });
});

describe('reference log-probs three ways', () => {
  const cfg: LlamaConfig = { ...tiny, tieEmbeddings: false };
  const base = initParams(cfg, C.key(11), { dtype: 'f64', std: 0.5 });
  // B random (not PEFT's zeros) so the policy differs from the reference.
  const init = lora(base, { r: 2, alpha: 4, key: C.key(12) });
  const adapters: LoraAdapters = { ...init, layers: init.layers.map((l, i) => Object.fromEntries(Object.entries(l).map(([k, p], j) => [k, { A: p!.A, B: C.mul(C.normal(C.key(100 + 10 * i + j), p!.B.shape, 'f64'), 0.3) }]))) };
  const side = (ids: number[], from: number) => ({ ids, labels: ids.map((x, i) => (i < from ? -100 : x)) });
  const pairs: EncodedPair[] = [
    { chosen: side([1, 5, 3, 9, 2], 3), rejected: side([1, 5, 3, 7, 7, 2], 3) },
    { chosen: side([1, 4, 6, 2], 2), rejected: side([1, 4, 8, 8, 2], 2) },
    { chosen: side([1, 10, 3, 3, 2], 2), rejected: side([1, 10, 5, 2], 2) },
  ];
  const [b] = makePrefBatches(pairs, { batchSize: 3, padId: 0 });
  const batch = prefBatchTensors(b!);
  const opts = { beta: 0.5 };
  const copy = async <T>(tree: T): Promise<T> => C.unflatten<T>(C.flatten(tree).def, await Promise.all(C.leaves(tree).map(async (l) => C.fromStorage((await data(l)).slice(), l.shape, l.dtype))));
  const tmp = tempDir('camelid-dpo-ref-');

  it('(a) disabled adapters, (b) a cache, (c) a frozen copy: the same loss, metrics and gradient', async () => {
    const a = dpoLossFn(cfg, loraReference, opts)(adapters, base, batch);
    const frozenCopy = await copy(base);
    const c = dpoLossFn(cfg, frozenReference, opts)(merge(base, adapters), frozenCopy, batch);
    const ref = await computeRefLogps(cfg, base, pairs, { batchSize: 2, padId: 0, padToMultiple: 1 });
    const hit = right(await cachedRefLogps(tmp.path, { model: await hashParams(base), data: hashPairs(pairs), template: 't' }, async () => ref)());
    const bb = dpoLossFn(cfg, cachedReference(loraReference.policy), opts)(adapters, base, { ...batch, ...refBatch(hit.logps, b!.index, 'f64') });
    const la = await item(a.loss);
    expect(Math.abs(la - Math.log(2))).toBeGreaterThan(1e-3); // the policy really differs from the reference
    for (const other of [bb, c]) {
      expect(Math.abs((await item(other.loss)) - la)).toBeLessThan(1e-10);
      for (const k of Object.keys(a.aux) as (keyof DpoMetrics)[]) expect(Math.abs((await item(other.aux[k])) - (await item(a.aux[k])))).toBeLessThan(1e-10);
    }
    // the reference log-probs themselves, against a plain forward of the base
    const want = direct(await data(forward(cfg, base, batch.tokens)), (await C.toArray(batch.labels)) as number[][], cfg.vocabSize);
    expect(maxAbsDiff([...ref.chosen, ...ref.rejected], want.lp)).toBeLessThan(1e-12);
    // gradients w.r.t. the adapters: (a) and (b) agree
    const ga = C.grad((q: LoraAdapters) => (dpoLossFn(cfg, loraReference, opts)(q, base, batch)).loss)(adapters);
    const gb = C.grad((q: LoraAdapters) => (dpoLossFn(cfg, cachedReference(loraReference.policy), opts)(q, base, { ...batch, ...refBatch(hit.logps, b!.index, 'f64') })).loss)(adapters);
    const [la2, lb2] = [C.leaves(ga), C.leaves(gb)];
    expect(la2.length).toBe(28);
    let norm = 0;
    for (let i = 0; i < la2.length; i++) {
      const [x, y] = [await data(la2[i]!), await data(lb2[i]!)];
      expect(maxAbsDiff(x, y)).toBeLessThan(1e-12);
      norm += Array.from(x).reduce((s, v) => s + v * v, 0);
    }
    expect(Math.sqrt(norm)).toBeGreaterThan(1e-3);
  });

  it('the cache is reused for the same model, data and template, and recomputed when any changes', async () => {
    const dir = join(tmp.path, 'inval');
    let computed = 0;
    const compute = async () => { computed++; return computeRefLogps(cfg, base, pairs, { batchSize: 3, padId: 0 }); };
    const parts = { model: await hashParams(base), data: hashPairs(pairs), template: 'tulu hf-legacy max 8192' };
    const first = right(await cachedRefLogps(dir, parts, compute)());
    const again = right(await cachedRefLogps(dir, parts, compute)());
    expect([first.hit, again.hit, computed]).toEqual([false, true, 1]);
    expect(Array.from(again.logps.chosen)).toEqual(Array.from(first.logps.chosen));
    // one weight element changed → another model hash
    const edited = { ...base, norm: C.add(base.norm, C.tensor(Float64Array.from({ length: cfg.dim }, (_, i) => (i === 3 ? 1e-9 : 0)), { dtype: 'f64' })) };
    const otherModel = await hashParams(edited);
    expect(otherModel).not.toBe(parts.model);
    expect(await hashParams(await copy(base))).toBe(parts.model);
    // one label changed → another data hash
    const otherData = hashPairs([pairs[0]!, { ...pairs[1]!, chosen: { ...pairs[1]!.chosen, labels: [-100, -100, -100, 2] } }, pairs[2]!]);
    expect(otherData).not.toBe(parts.data);
    for (const changed of [{ ...parts, model: otherModel }, { ...parts, data: otherData }, { ...parts, template: 'tulu hf max 8192' }]) {
      const r = right(await cachedRefLogps(dir, changed, compute)());
      expect(r.hit).toBe(false);
      expect(r.file).not.toBe(first.file);
    }
    expect(computed).toBe(4);
    // a damaged file is a Left naming it, not silently recomputed or trusted
    await writeFile(first.file, '{"key": 1}');
    expect(leftMessage(await cachedRefLogps(dir, parts, compute)())).toMatch(/not a reference log-prob cache/);
    expect(() => refBatch(first.logps, Int32Array.from([5]))).toThrow(/pair 5 is not in the cache of 3 pairs/);
  });
});

describe('the reference log-prob cache file', () => {
  const tmp = tempDir('camelid-refcache-');
  const parts = { model: 'm1', data: 'd1', template: 't1' };
  const logps = { chosen: Float64Array.from([-1.5, -2]), rejected: Float64Array.from([-3, -4.25]) };

  it('is named by a key of all three parts, in their roles; hashParams reads dtype and shape as well as bytes', async () => {
    const keys = [parts, { ...parts, model: 'm2' }, { ...parts, data: 'd2' }, { ...parts, template: 't2' }, { model: 'd1', data: 'm1', template: 't1' }].map(refCacheKey);
    expect(new Set(keys).size).toBe(5);
    expect(keys.every((k) => /^[0-9a-f]{16}$/.test(k))).toBe(true);
    const flat = C.tensor(Float32Array.from([1, 2, 3, 4]), { dtype: 'f32' });
    const hashes = await Promise.all([flat, C.reshape(flat, [2, 2]), C.tensor(new Int32Array(Float32Array.from([1, 2, 3, 4]).buffer), { dtype: 'i32' })].map((x) => hashParams({ x })));
    expect(new Set(hashes).size).toBe(3); // same bytes, another shape or dtype: another model
    // Shapes whose digits run together alike ((1, 2, 12) and (12, 1, 2)) are still told apart.
    const v24 = C.tensor(Float32Array.from({ length: 24 }, (_, i) => i), { dtype: 'f32' });
    expect(await hashParams({ x: C.reshape(v24, [1, 2, 12]) })).not.toBe(await hashParams({ x: C.reshape(v24, [12, 1, 2]) }));
  });

  it('refuses a file that is not JSON, or that records other parts or unequal sides, naming it', async () => {
    const dir = join(tmp.path, 'c');
    let computed = 0;
    const compute = async () => { computed++; return logps; };
    const first = right(await cachedRefLogps(dir, parts, compute)());
    const stored = JSON.parse(await readFile(first.file, 'utf8')) as Record<string, unknown>;
    expect(stored).toEqual({ key: refCacheKey(parts), parts, chosen: [-1.5, -2], rejected: [-3, -4.25] });
    const other = `${first.file}: records another model, data or template than its name says; delete it to recompute`;
    for (const bad of [{ key: 'x' }, { parts: { ...parts, model: 'm2' } }, { parts: { ...parts, data: 'd2' } }, { parts: { ...parts, template: 't2' } }, { chosen: [-1.5] }]) {
      await writeFile(first.file, JSON.stringify({ ...stored, ...bad }));
      expect(leftMessage(await cachedRefLogps(dir, parts, compute)()), JSON.stringify(bad)).toBe(other);
    }
    await writeFile(first.file, '{"key": ');
    expect(leftMessage(await cachedRefLogps(dir, parts, compute)())).toMatch(new RegExp(`^${first.file.replace(/[.]/g, '\\.')}: not JSON \\(.*\\); delete it to recompute$`));
    expect(computed).toBe(1);
    expect(readdirSync(dir)).toEqual([`${refCacheKey(parts)}.json`]); // no temporary file left
  });

  it('refBatch picks the batch\'s pairs by index, f32 unless asked, and refuses an index outside the cache', async () => {
    const r = refBatch(logps, Int32Array.from([1, 0, 1]));
    expect([r.refChosen.dtype, r.refRejected.dtype]).toEqual(['f32', 'f32']);
    expect(Array.from(await data(r.refChosen))).toEqual([-2, -1.5, -2]);
    expect(Array.from(await data(r.refRejected))).toEqual([-4.25, -3, -4.25]);
    for (const i of [2, -1]) expect(() => refBatch(logps, Int32Array.from([i]))).toThrow(`refBatch: pair ${i} is not in the cache of 2 pairs`);
  });
});

describe('dpoLossFn against log-probs taken from the logits on the host', () => {
  // Two pairs as four rows (chosen rows first); the expected numbers come from `direct` over forward's logits and
  // the formulas (TRL dpo_trainer.py: sigmoid loss and its reward metrics; SimPO eq. 6), not from recipes/dpo.ts.
  const policy = initParams(tiny, C.key(21), { dtype: 'f64', std: 0.5 });
  const reference = initParams(tiny, C.key(22), { dtype: 'f64', std: 0.5 });
  const tokens = [[1, 5, 3, 9, 2], [1, 4, 6, 6, 2], [1, 5, 3, 7, 2], [1, 4, 8, 2, 0]];
  const labels = [[-100, -100, 3, 9, 2], [-100, 4, 6, 6, 2], [-100, -100, 3, 7, 2], [-100, 4, 8, 2, -100]];
  const batch = { tokens: i32(tokens), labels: i32(labels) };
  const host = async (p: typeof policy) => direct(await data(forward(tiny, p, batch.tokens)), labels, tiny.vocabSize);
  const pairs = (xs: number[]) => ({ c: xs.slice(0, 2), r: xs.slice(2) });

  it('sigmoid, frozen reference: the loss and the six metrics under TRL\'s names, each a mean over the pairs', async () => {
    const beta = 0.5;
    const [pol, ref] = [pairs((await host(policy)).lp), pairs((await host(reference)).lp)];
    const rc = pol.c.map((x, i) => beta * (x - ref.c[i]!)), rr = pol.r.map((x, i) => beta * (x - ref.r[i]!));
    const want: Record<keyof DpoMetrics, number> = {
      'rewards/chosen': meanOf(rc), 'rewards/rejected': meanOf(rr),
      'rewards/accuracy': meanOf(rc.map((c, i) => (c > rr[i]! ? 1 : 0))), 'rewards/margin': meanOf(rc.map((c, i) => c - rr[i]!)),
      'logps/chosen': meanOf(pol.c), 'logps/rejected': meanOf(pol.r),
    };
    const { loss, aux } = dpoLossFn(tiny, frozenReference, { beta })(policy, reference, batch);
    expect(await item(loss)).toBeCloseTo(meanOf(rc.map((c, i) => -logSig(c - rr[i]!))), 12);
    expect(Object.keys(aux).sort()).toEqual(Object.keys(want).sort());
    for (const k of Object.keys(want) as (keyof DpoMetrics)[]) expect([k, await item(aux[k])]).toEqual([k, expect.closeTo(want[k], 12)]);
    expect(new Set(Object.values(want).map((v) => v.toFixed(6))).size).toBe(6); // six different numbers: no name can stand for another
  });

  it('simpo never builds the reference: SimPO eq. 6 on the policy\'s token-averaged log-probs', async () => {
    const [beta, gamma] = [2, 0.5];
    const { lp, n } = await host(policy);
    const avg = pairs(lp.map((x, i) => x / n[i]!));
    const model: DpoModel<typeof policy, null> = { policy: (p) => p, reference: () => { throw new Error('the reference was built'); } };
    const { loss, aux } = dpoLossFn(tiny, model, { beta, kind: 'simpo', gamma })(policy, null, batch);
    expect(await item(loss)).toBeCloseTo(meanOf(avg.c.map((c, i) => -logSig(beta * (c - avg.r[i]!) - gamma))), 12);
    expect(await item(aux['rewards/chosen'])).toBeCloseTo(meanOf(avg.c.map((c) => beta * c)), 12);
  });

  it('a model without a reference and a batch without cached log-probs: the sigmoid loss asks for them', () => {
    expect(thrown(() => dpoLossFn(tiny, cachedReference((p: typeof policy) => p), { beta: 0.1 })(policy, null, batch))).toEqual(
      ['ShapeError', "dpoLoss: kind 'sigmoid' needs reference log-probs (only simpo goes without)"],
    );
  });

  it('a batch with one side of the cached reference log-probs is refused, not silently recomputed', () => {
    const lp = C.tensor([-1, -2], { shape: [2], dtype: 'f64' });
    expect(thrown(() => dpoLossFn(tiny, frozenReference, { beta: 0.1 })(policy, reference, { ...batch, refChosen: lp }))).toEqual(
      ['TypeError', 'dpoLossFn: the batch has refChosen but no refRejected: cached reference log-probs come in pairs'],
    );
    expect(thrown(() => dpoLossFn(tiny, frozenReference, { beta: 0.1 })(policy, reference, { ...batch, refRejected: lp }))).toEqual(
      ['TypeError', 'dpoLossFn: the batch has refRejected but no refChosen: cached reference log-probs come in pairs'],
    );
  });
});

describe('a short DPO run raises rewards/accuracy (interpreter)', () => {
  // Synthetic preferences at the token level: the instruction "repeat" (3) then three letters (6…11) and SEP (5);
  // the chosen answer follows it (the letters as given), the rejected one does not (reversed). 270 pairs to train
  // on, 90 held out (different letter triples). A random tiny model, LoRA r 4, reference = the disabled adapters,
  // β 0.1 as Tulu 2, AdamW lr 1e-2, batches of 8 pairs, through trainStep and trainLoop.
  const L = 6;
  const pairOf = (w: number[]): EncodedPair => {
    const prompt = [1, 3, ...w.map((x) => 6 + x), 5];
    const side = (ans: number[]) => { const ids = [...prompt, ...ans.map((x) => 6 + x), 2]; return { ids, labels: ids.map((x, i) => (i < prompt.length ? -100 : x)) }; };
    return { chosen: side(w), rejected: side([...w].reverse()) };
  };
  const all: EncodedPair[] = [];
  for (let a = 0; a < L; a++) for (let b = 0; b < L; b++) for (let c = 0; c < L; c++) if (a !== c) all.push(pairOf([a, b, c]));
  const train = all.filter((_, i) => i % 4 !== 0), held = all.filter((_, i) => i % 4 === 0);
  const cfg: LlamaConfig = { ...tiny, dim: 16, hiddenDim: 32, nLayers: 1, nHeads: 2, nKvHeads: 1, headDim: 8, vocabSize: 12 };
  const base = initParams(cfg, C.key(0), { std: 0.3 });
  const lossFn = dpoLossFn(cfg, loraReference, { beta: 0.1 });
  const N = 8, steps = 150, perEpoch = Math.floor(train.length / N);
  const tmp = tempDir('camelid-dpo-run-');
  const heldAccuracy = async (a: LoraAdapters) => {
    let right = 0;
    for (const b of makePrefBatches(held, { batchSize: 45, padId: 0 })) right += (await item(lossFn(a, base, prefBatchTensors(b)).aux['rewards/accuracy'])) * b.N;
    return right / held.length;
  };

  it(`${steps} steps: training accuracy and held-out accuracy well above 0.5`, async () => {
    const opt = adamw({ lr: 1e-2, weightDecay: 0 });
    const adapters = lora(base, { r: 4, alpha: 8, key: C.key(1) });
    expect(await heldAccuracy(adapters)).toBe(0); // policy = reference: every reward 0, ties count as wrong
    const r = await trainLoop({
      step: trainStep(lossFn, { optimizer: opt }) as never, trainable: adapters, optState: opt.init(adapters), frozen: base,
      batchAt: (i) => prefBatchTensors(makePrefBatches(train, { batchSize: N, padId: 0, seed: 3, epoch: Math.floor(i / perEpoch), keepLast: false })[i % perEpoch]!),
      totalSteps: steps, schedule: () => 1e-2, output: tmp.path, progress: 'none', saveModel: async () => {},
    });
    const metrics = readFileSync(join(tmp.path, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    expect(metrics).toHaveLength(steps);
    for (const k of ['loss', 'lr', 'gradNorm', 'rewards/chosen', 'rewards/rejected', 'rewards/accuracy', 'rewards/margin', 'logps/chosen', 'logps/rejected']) expect(metrics[0]).toHaveProperty([k]);
    expect(metrics[0]!.loss).toBeCloseTo(Math.log(2), 6); // the DPO start
    expect(metrics[0]!['rewards/accuracy']).toBe(0);
    const last = metrics.slice(-20), mean = (k: string) => last.reduce((s, m) => s + m[k]!, 0) / last.length;
    const heldOut = await heldAccuracy(r.trainable as LoraAdapters);
    console.log(`DPO ${steps} steps: training rewards/accuracy (last 20 steps) ${mean('rewards/accuracy').toFixed(3)}, margin ${mean('rewards/margin').toFixed(3)}, loss ${mean('loss').toFixed(3)}; held-out accuracy ${heldOut.toFixed(3)}`);
    // measured (seeded, deterministic): 0.994 training, 0.933 held out, loss 0.327, margin 1.04
    expect(mean('rewards/accuracy')).toBeGreaterThan(0.8);
    expect(mean('rewards/margin')).toBeGreaterThan(0);
    expect(mean('loss')).toBeLessThan(0.5);
    expect(heldOut).toBeGreaterThan(0.75);
  });
});

describe.skipIf(!existsSync(resolve(import.meta.dirname, '../../shared/fixtures/stories260K')))('camelid dpo (stories260K on the interpreter)', () => {
  const fx = resolve(import.meta.dirname, '../../shared/fixtures/stories260K');
  const tmp = tempDir('camelid-dpo-cli-');
  const rows = [
    { prompt: 'Tell a story about a cat.', chosen: 'Once upon a time there was a cat. The cat was happy.', rejected: 'No.' },
    { prompt: 'Who is Lily?', chosen: 'Lily is a little girl who likes to play.', rejected: 'A dog ran.' },
    { chosen: [{ role: 'user', content: 'Say hi.' }, { role: 'assistant', content: 'Hi! How are you?' }], rejected: [{ role: 'user', content: 'Say hi.' }, { role: 'assistant', content: 'Go.' }], score_chosen: 9, score_rejected: 2 },
    { prompt: 'What did Tom see?', chosen: 'Tom saw a big red ball in the park.', rejected: 'Tom.' },
  ];
  const quiet = () => {};
  const ok = <A>(e: E.Either<string, A>): A => { if (E.isLeft(e)) throw new Error(e.left); return e.right; };
  const bad = <A>(e: E.Either<string, A>): string => (E.isLeft(e) ? e.left : 'a Right');
  const settings = async (extra: Record<string, unknown>) => {
    const data = join(tmp.path, 'prefs.jsonl');
    await writeFile(data, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    return ok(resolveDpoConfig([{ model: join(fx, 'hf'), tokenizer: join(fx, 'tok512.model'), data: [data], maxSeqLen: 64, batchSize: 2, steps: 2, lr: 1e-3, padToMultiple: 8, ...extra } as DpoConfigPartial]));
  };
  const metrics = (dir: string) => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);

  it("frozen-copy and cached reference runs give the same losses; the cache is reused by the next run", async () => {
    const frozen = await runDpo(await settings({ output: join(tmp.path, 'frozen'), reference: 'frozen' }), { log: quiet, progress: 'none' });
    const cachedDir = join(tmp.path, 'cache');
    const cached = await runDpo(await settings({ output: cachedDir, reference: 'cache' }), { log: quiet, progress: 'none' });
    expect(frozen.losses).toHaveLength(2);
    expect(frozen.losses[0]).toBeCloseTo(Math.log(2), 6); // policy = reference at the start
    expect(Math.abs(frozen.losses[1]! - Math.log(2))).toBeGreaterThan(1e-4); // it moved
    expect(Math.abs(cached.losses[1]! - frozen.losses[1]!)).toBeLessThan(1e-5);
    expect(cached.refCacheHit).toBe(false);
    const again = await runDpo(await settings({ output: join(tmp.path, 'cache2'), reference: 'cache', refCacheDir: join(cachedDir, 'ref-cache'), steps: 1 }), { log: quiet, progress: 'none' });
    expect(again.refCacheHit).toBe(true);
    const m = metrics(join(tmp.path, 'frozen'));
    for (const k of ['loss', 'lr', 'gradNorm', 'rewards/chosen', 'rewards/rejected', 'rewards/accuracy', 'rewards/margin', 'logps/chosen', 'logps/rejected']) expect(m[1]).toHaveProperty([k]);
    expect(m[1]!['logps/chosen']).toBeLessThan(-1);
    expect(right(await loadLlama(join(tmp.path, 'frozen'))()).config.vocabSize).toBe(512); // the policy saved
  });

  it('LoRA: the reference is the base under disabled adapters (the default), adapters saved as a PEFT folder', async () => {
    const out = join(tmp.path, 'lora');
    const lines: string[] = [];
    const r = await runDpo(await settings({ output: out, lora: { r: 4, alpha: 8 }, lr: 1e-2 }), { log: (s) => lines.push(s), progress: 'none' });
    expect(r.losses[0]).toBeCloseTo(Math.log(2), 6); // B = 0: policy = reference
    expect(r.losses[1]!).toBeLessThan(Math.log(2) - 1e-4);
    expect(lines.join('\n')).toMatch(/reference adapter/);
    expect(readdirSync(out)).toContain('adapter_model.safetensors');
  });

  it('the command: --help, the tulu2-dpo preset, and settings errors named', async () => {
    let out = '', err = '';
    const io = { writeOut: (s: string) => { out += s; }, writeErr: (s: string) => { err += s; } };
    expect(await runCli(['dpo', '--help'], io)).toBe(0);
    for (const flag of ['--beta', '--loss', '--reference', '--lora', '--qlora', '--preset']) expect(out).toContain(flag);
    const cfgFile = join(tmp.path, 'cfg.json');
    await writeFile(cfgFile, JSON.stringify({ preset: 'tulu2-dpo', model: 'm', data: ['d.jsonl'], output: 'o', betta: 0.2 }));
    expect(await runCli(['dpo', '--config', cfgFile], io)).toBe(2);
    expect(err).toMatch(/camelid dpo: .*cfg\.json: unknown key 'betta'/);
    const tulu = ok(resolveDpoConfig([TULU2_DPO, { model: 'm', data: ['d'], output: 'o' }]));
    expect([tulu.beta, tulu.lr, tulu.epochs, tulu.warmupRatio, tulu.batchSize * tulu.gradAccum, tulu.maxSeqLen, tulu.schedule]).toEqual([0.1, 5e-7, 3, 0.1, 32, 8192, 'linear']);
    expect(ok(resolveDpoConfig([{ preset: 'tulu2-dpo', model: 'm', data: ['d'], output: 'o', lr: 1e-6 }])).lr).toBe(1e-6);
    expect(bad(resolveDpoConfig([{ model: 'm', data: ['d'], output: 'o', reference: 'adapter' }]))).toMatch(/reference 'adapter' needs lora or qlora/);
    expect(bad(parseDpoConfig({ loss: 'kto' }, 'x.json'))).toMatch(/x\.json: loss/);
    expect(bad(resolveDpoConfig([{ data: ['d'] }]))).toMatch(/missing model, output/);
  });
});

describe('sequenceLogprobs: what the scheduler stores', () => {
  // The LM head's logits (B·(T−1), V) are one matmul output read by one row kernel (the one-hot select and the
  // logsumexp in one pass over V); the backward stores softmax − one-hot once. No other vocab-wide tensor exists.
  it('one vocab-wide buffer forward (the logits), two with the gradient (the logits and their cotangent)', async () => {
    const cfg: LlamaConfig = { ...tiny, dim: 64, hiddenDim: 172, nLayers: 1, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize: 512, seqLen: 64, tieEmbeddings: true };
    const p = initParams(cfg, C.key(0));
    await C.realize(...C.leaves(p));
    const ids = C.tensor(Int32Array.from({ length: 4 * 64 }, (_, i) => (i * 7919) % 512), { shape: [4, 64], dtype: 'i32' });
    await C.realize(ids);
    const wide = (roots: Tensor[]) => schedule(roots.map((t) => t.node)).flatMap(kernelOuts).filter((n) => n.shape.reduce((a, b) => a * b, 1) >= 4 * 63 * 512);
    const fwd = wide([sequenceLogprobs(cfg, p, ids, ids).logps]);
    expect(fwd.map((n) => n.shape)).toEqual([[252, 512]]);
    const [v, g] = C.valueAndGrad((q: typeof p) => C.sum(sequenceLogprobs(cfg, q, ids, ids).logps))(p);
    expect(wide([v, ...C.leaves(g)])).toHaveLength(2);
  });
});
