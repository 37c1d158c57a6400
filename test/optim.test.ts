// AdamW, clipping and schedules against values worked out here from the published formulas (scalar math, written
// independently of recipes/): PyTorch AdamW docs (torch/optim/adamw.py algorithm box), torch clip_grad_norm_,
// transformers get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup, open-instruct's floor warmup.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, setBackend, type Tensor } from '../index.js';
import { adamw, clipByGlobalNorm, globalNorm, leafPaths, type AdamState, type AdamwOpts } from '../recipes/optim.js';
import { constant, cosineWarmupDecay, linearWarmupDecay, makeSchedule, warmupFromRatio } from '../recipes/schedule.js';
import { sgdStep } from '../recipes/sgd.js';
import './setup.js';

setBackend('cpu');

const f64 = (vals: number[], shape: number[]) => C.tensor(Float64Array.from(vals), { shape, dtype: 'f64' });
const arr = async (t: Tensor) => Array.from(await data(t));

/** The PyTorch AdamW algorithm, one scalar parameter, written as in its documentation (m̂, v̂ form). */
const torchAdamw = (theta0: number, grads: number[], lrs: number[], o: { b1: number; b2: number; eps: number; wd: number }): number[] => {
  let theta = theta0, m = 0, v = 0;
  const out: number[] = [];
  grads.forEach((g, i) => {
    const t = i + 1, lr = lrs[i]!;
    theta = theta - lr * o.wd * theta;
    m = o.b1 * m + (1 - o.b1) * g;
    v = o.b2 * v + (1 - o.b2) * g * g;
    const mHat = m / (1 - o.b1 ** t), vHat = v / (1 - o.b2 ** t);
    theta = theta - (lr * mHat) / (Math.sqrt(vHat) + o.eps);
    out.push(theta);
  });
  return out;
};

describe('adamw', () => {
  it('one step by hand: decay first, then a step of lr·sign(g) (m̂ = g, v̂ = g²)', async () => {
    const opt = adamw({ lr: 0.1, weightDecay: 0.1, decay: () => true });
    const p = { w: f64([1, -2], [2]) };
    const [np, st] = opt.update({ w: f64([0.5, -0.25], [2]) }, opt.init(p), p);
    // 1 → 1 − 0.1·0.1·1 = 0.99 → 0.99 − 0.1·0.5/(0.5 + 1e-8); −2 → −1.98 → −1.98 + 0.1·0.25/(0.25 + 1e-8)
    const got = await arr((np as typeof p).w);
    expect(got[0]).toBeCloseTo(0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 14);
    expect(got[1]).toBeCloseTo(-1.98 + 0.1 * 0.25 / (0.25 + 1e-8), 14);
    expect(await arr(st.count)).toEqual([1]);
  });

  it('five steps with a warmup schedule (lr 0 first), decay and no-decay leaves, non-default betas', async () => {
    const o = { b1: 0.8, b2: 0.95, eps: 1e-3, wd: 0.3 };
    const opt = adamw({ lr: 1, b1: o.b1, b2: o.b2, eps: o.eps, weightDecay: o.wd }); // default: rank ≥ 2 decays
    const lrs = [0, 0.05, 0.1, 0.075, 0.05];
    const w0 = [0.5, -1, 2, 0.25], b0 = [1, -0.5];
    const gw = [[0.1, -0.2, 0.3, 0.05], [-0.4, 0.1, 0.2, 0.0], [0.3, 0.3, -0.1, 1.5], [0.0, -0.6, 0.2, -0.2], [0.9, 0.1, 0.0, 0.4]];
    const gb = [[1, -2], [0.5, 0.5], [-3, 0.1], [0.2, 0.2], [-0.1, 4]];
    let params = { norm: f64(b0, [2]), w: f64(w0, [2, 2]) };
    let state: AdamState = opt.init(params);
    for (let s = 0; s < 5; s++) {
      const [np, ns] = opt.update({ norm: f64(gb[s]!, [2]), w: f64(gw[s]!, [2, 2]) }, state, params, f64([lrs[s]!], []));
      params = np as typeof params;
      state = ns;
    }
    const wantW = w0.map((x, j) => torchAdamw(x, gw.map((g) => g[j]!), lrs, o)[4]!);
    const wantB = b0.map((x, j) => torchAdamw(x, gb.map((g) => g[j]!), lrs, { ...o, wd: 0 })[4]!);
    const [gotW, gotB] = [await arr(params.w), await arr(params.norm)];
    gotW.forEach((x, j) => expect(x).toBeCloseTo(wantW[j]!, 12));
    gotB.forEach((x, j) => expect(x).toBeCloseTo(wantB[j]!, 12));
    // The vector leaf did not decay: with decay it would differ.
    const decayedB = torchAdamw(b0[0]!, gb.map((g) => g[0]!), lrs, o)[4]!;
    expect(Math.abs(gotB[0]! - decayedB)).toBeGreaterThan(1e-4);
    expect(await arr(state.count)).toEqual([5]);
  });

  it('the first warmup update (lr 0) leaves parameters unchanged but advances the moments', async () => {
    const opt = adamw({ lr: 0, weightDecay: 0.5, decay: () => true });
    const p = { w: f64([3], [1]) };
    const [np, st] = opt.update({ w: f64([2], [1]) }, opt.init(p), p);
    expect(await arr((np as typeof p).w)).toEqual([3]);
    expect((await arr((st.mu as { w: Tensor }).w))[0]).toBeCloseTo(0.1 * 2, 15);
    expect((await arr((st.nu as { w: Tensor }).w))[0]).toBeCloseTo(0.001 * 4, 15);
  });

  it('decay predicate sees dotted leaf paths in tree order', () => {
    const t = f64([1], [1]);
    expect(leafPaths({ layers: [{ wq: t, attnNorm: t }], norm: t, tokEmb: t })).toEqual(['layers.0.attnNorm', 'layers.0.wq', 'norm', 'tokEmb']);
  });

  it('leaf paths: a root array numbers its entries, arrays keep numeric order past 10, non-tensor leaves have none', () => {
    const t = f64([1], [1]);
    expect(leafPaths([t, { b: t, a: null, c: 3, name: 'lora' }])).toEqual(['0', '1.b']);
    // flatten walks layers 0…11 in order, so the decay predicate must see them in that order too (not '10' after '1')
    const paths = leafPaths({ layers: Array.from({ length: 12 }, () => ({ wq: t })) });
    expect(paths).toEqual(Array.from({ length: 12 }, (_, i) => `layers.${i}.wq`));
  });

  it('init: zero moments of each leaf\'s dtype; the count takes the first leaf\'s float dtype, else f32', async () => {
    const opt = adamw({ lr: 0.1 });
    const st = opt.init({ w: f64([1, 2], [2]) });
    expect([st.count.dtype, await arr(st.count)]).toEqual(['f64', [0]]);
    expect(await arr((st.mu as { w: Tensor }).w)).toEqual([0, 0]);
    expect(await arr((st.nu as { w: Tensor }).w)).toEqual([0, 0]);
    const half = opt.init({ w: C.tensor([1], { dtype: 'f16' }) });
    expect([half.count.dtype, (half.mu as { w: Tensor }).w.dtype]).toEqual(['f16', 'f16']);
    // an integer leaf first in tree order (a mask carried with the parameters) does not make the count an integer
    expect(opt.init({ a: C.tensor([1], { dtype: 'i32' }), w: f64([1], [1]) }).count.dtype).toBe('f32');
    const empty = opt.init({});
    expect([empty.count.dtype, empty.mu, empty.nu]).toEqual(['f32', {}, {}]);
  });

  it('a run-time lr tensor of another dtype is cast to each leaf\'s: f32 parameters stay f32', async () => {
    // PyTorch AdamW, one step with m̂ = g, v̂ = g²: θ − lr·g/(|g| + ε), here 1 − 0.5·0.25/(0.25 + 1e-8)
    const opt = adamw({ lr: 1 });
    const p = { w: C.tensor(Float32Array.from([1]), { shape: [1, 1], dtype: 'f32' }) };
    const [np] = opt.update({ w: C.tensor(Float32Array.from([0.25]), { shape: [1, 1], dtype: 'f32' }) }, opt.init(p), p, f64([0.5], []));
    expect((np as typeof p).w.dtype).toBe('f32');
    // to 5e-5: the f32 count's 1 − β2^t = 1 − 0.999 loses 3 of f32's 7 digits to cancellation
    expect((await arr((np as typeof p).w))[0]).toBeCloseTo(1 - (0.5 * 0.25) / (0.25 + 1e-8), 4);
  });

  it('update refuses gradients or moments whose trees do not match the parameters, counting each', () => {
    const opt = adamw({ lr: 0.1 });
    const p = { a: f64([1], [1]), b: f64([2], [1]) };
    const err = (f: () => unknown) => { try { f(); } catch (e) { return [(e as Error).name, (e as Error).message]; } return ['no error']; };
    expect(err(() => opt.update<unknown>({ a: f64([1], [1]) }, opt.init(p), p))).toEqual(['TypeError', 'adamw: 2 parameters, 1 gradients, 2 moments (trees must match)']);
    expect(err(() => opt.update(p, opt.init({ a: p.a }), p))).toEqual(['TypeError', 'adamw: 2 parameters, 2 gradients, 1 moments (trees must match)']);
  });
});

describe('optimizer settings out of range (torch.optim.AdamW\'s checks; NaN is never in range)', () => {
  it('adamw refuses each setting by name, and takes the edges torch takes (0 for lr, b1, b2, eps, weight decay)', () => {
    const cases: [Partial<AdamwOpts>, string][] = [
      [{ lr: -1e-3 }, 'lr must satisfy lr ≥ 0, got -0.001'], [{ lr: NaN }, 'lr must satisfy lr ≥ 0, got NaN'], [{ lr: Infinity }, 'lr must satisfy lr ≥ 0, got Infinity'],
      [{ b1: 1 }, 'b1 must satisfy 0 ≤ b1 < 1, got 1'], [{ b1: -0.1 }, 'b1 must satisfy 0 ≤ b1 < 1, got -0.1'],
      [{ b2: 1 }, 'b2 must satisfy 0 ≤ b2 < 1, got 1'], [{ b2: NaN }, 'b2 must satisfy 0 ≤ b2 < 1, got NaN'],
      [{ eps: -1e-8 }, 'eps must satisfy eps ≥ 0, got -1e-8'], [{ weightDecay: -0.01 }, 'weightDecay must satisfy weightDecay ≥ 0, got -0.01'],
    ];
    for (const [o, msg] of cases) expect(() => adamw({ lr: 1e-3, ...o }), JSON.stringify(o)).toThrow(new RangeError(`adamw: ${msg}`));
    expect(() => adamw({ lr: 0, b1: 0, b2: 0, eps: 0, weightDecay: 0 })).not.toThrow();
    expect(() => adamw({ lr: 1e-3, b1: 0.999999, b2: 0.999999 })).not.toThrow();
    expect(() => adamw({ lr: C.tensor([-1]) })).not.toThrow(); // a tensor lr is the schedule's: never read on the host
  });
  it('clipByGlobalNorm refuses a max norm that is not positive and finite', () => {
    for (const m of [0, -1, NaN, Infinity]) expect(() => clipByGlobalNorm({ a: f64([1], [1]) }, m), String(m)).toThrow(`clipByGlobalNorm: maxNorm must be a positive finite number, got ${m}`);
  });
});

describe('sgdStep', () => {
  it('p − lr·g on every leaf of a tree, lr a number or a scalar tensor', async () => {
    const params = { a: C.tensor([1, 2]), b: { c: C.tensor([[3, -4]]) } };
    const grads = { a: C.tensor([0.5, -1]), b: { c: C.tensor([[2, 0]]) } };
    const byNumber = sgdStep(params, grads, 0.5);
    expect(Array.from(await data(byNumber.a))).toEqual([0.75, 2.5]);
    expect(Array.from(await data(byNumber.b.c))).toEqual([2, -4]);
    expect(byNumber.b.c.shape).toEqual([1, 2]);
    expect(Array.from(await data(sgdStep(params, grads, C.tensor(2)).b.c))).toEqual([-1, -4]);
  });
});

describe('clipByGlobalNorm (torch clip_grad_norm_: coef = max_norm / (total + 1e-6), clamped to 1)', () => {
  const g = () => ({ a: f64([3, 4], [2]), b: f64([12], [1]) }); // total = √(9 + 16 + 144) = 13
  it('clipped', async () => {
    const { grads, norm } = clipByGlobalNorm(g(), 1);
    expect(await arr(norm)).toEqual([13]);
    const coef = 1 / (13 + 1e-6);
    const [a, b] = [await arr(grads.a), await arr(grads.b)];
    [3, 4].forEach((x, i) => expect(a[i]).toBeCloseTo(x * coef, 15));
    expect(b[0]).toBeCloseTo(12 * coef, 15);
  });
  it('unclipped (coefficient above 1 is clamped)', async () => {
    const { grads, norm } = clipByGlobalNorm(g(), 20);
    expect(await arr(norm)).toEqual([13]);
    expect(await arr(grads.a)).toEqual([3, 4]);
    expect(await arr(grads.b)).toEqual([12]);
  });
  it('global norm of several leaves', async () => {
    expect((await arr(globalNorm({ x: f64([1, 2], [2]), y: [f64([2], [1])] })))[0]).toBeCloseTo(3, 15);
  });
  it('an empty tree has norm 0 (f32) and clips to itself (torch: clip_grad_norm_ of no gradients returns tensor(0.))', async () => {
    const n = globalNorm({ layers: [] });
    expect([n.dtype, n.shape, await arr(n)]).toEqual(['f32', [], [0]]);
    const { grads, norm } = clipByGlobalNorm({ layers: [] }, 1);
    expect([grads, await arr(norm)]).toEqual([{ layers: [] }, [0]]);
  });
});

describe('schedules', () => {
  it('makeSchedule picks each by name: at step 6 of 10 after 2 warmup steps, linear 0.5, cosine ½(1 + cos(π/2)) = 0.5, constant 1', () => {
    const o = { peak: 1, warmupSteps: 2, totalSteps: 10 };
    // p = (6 − 2)/(10 − 2) = 0.5: linear 1 − p, cosine ½(1 + cos πp); step 8: linear 0.25, cosine ½(1 + cos(3π/4)) ≈ 0.1464
    expect([6, 8].map(makeSchedule('linear', o))).toEqual([0.5, 0.25]);
    expect(makeSchedule('cosine', o)(8)).toBeCloseTo(0.5 * (1 + Math.cos((3 * Math.PI) / 4)), 12);
    expect([1, 8].map(makeSchedule('constant', o))).toEqual([0.5, 1]);
  });

  it('linear warmup then linear decay (HF): lr 0 at the first update', () => {
    const f = linearWarmupDecay({ peak: 1, warmupSteps: 2, totalSteps: 10 });
    // s < W: s/W; else (T − s)/(T − W)
    expect([0, 1, 2, 3, 6, 10, 11].map(f)).toEqual([0, 0.5, 1, 7 / 8, 4 / 8, 0, 0]);
    // No warmup: the first update already has the peak.
    expect(linearWarmupDecay({ peak: 2e-5, warmupSteps: 0, totalSteps: 4 })(0)).toBe(2e-5);
  });
  it('cosine warmup decay (HF, half cycle)', () => {
    const f = cosineWarmupDecay({ peak: 2, warmupSteps: 1, totalSteps: 5 });
    expect(f(0)).toBe(0);
    expect(f(1)).toBeCloseTo(2, 15);
    expect(f(2)).toBeCloseTo(2 * 0.5 * (1 + Math.cos(Math.PI / 4)), 15);
    expect(f(3)).toBeCloseTo(1, 15);
    expect(f(5)).toBeCloseTo(0, 15);
    // Several warmup steps (HF: lr·s/W while s < W), then the half cosine from W: W = 4, T = 8.
    const g = cosineWarmupDecay({ peak: 1, warmupSteps: 4, totalSteps: 8 });
    expect([0, 1, 3, 4].map(g)).toEqual([0, 0.25, 0.75, 1]);
    expect(g(6)).toBeCloseTo(0.5, 15);
  });
  it('constant, with and without warmup', () => {
    expect([0, 5].map(constant({ peak: 3 }))).toEqual([3, 3]);
    expect([0, 1, 2, 9].map(constant({ peak: 3, warmupSteps: 2 }))).toEqual([0, 1.5, 3, 3]);
  });
  it('warmup steps from a ratio are floor(T·ratio) (open-instruct)', () => {
    expect(warmupFromRatio(100, 0.03)).toBe(3);
    expect(warmupFromRatio(33, 0.03)).toBe(0);
    expect(warmupFromRatio(2548, 0.03)).toBe(76);
  });
});
