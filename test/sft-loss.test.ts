// sftLoss: the causal shift, the two reductions against values computed here from the logits (open-instruct's
// per-example mean; EasyLM's token mean), and its gradient against finite differences in f64 on the interpreter.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, forward, initParams, key, leaves, mapTree, setBackend, valueAndGrad, type LlamaParams, type Tensor } from '../index.js';
import { reduceNll, sftLoss, shiftLabels } from '../recipes/loss.js';
import './setup.js';
import { tinyLlama } from './helpers.js';

setBackend('cpu');

const cfg = tinyLlama({ nLayers: 1 });
const i32 = (rows: number[][]) => C.tensor(rows, { dtype: 'i32' });
const tokens = i32([[1, 5, 6, 7, 2, 0], [1, 3, 9, 4, 8, 2]]);
// Row 0 trains 3 targets (7, 2 and one mid-row), row 1 trains 2; the first label is never a target (shift).
const labels = i32([[-100, -100, 6, 7, 2, -100], [-100, -100, -100, -100, 8, 2]]);

describe('sftLoss', () => {
  it('shifts labels left, the last column ignored', async () => {
    expect(Array.from(await data(shiftLabels(labels)))).toEqual([-100, 6, 7, 2, -100, -100, -100, -100, -100, 8, 2, -100]);
  });

  it('reductions by hand: mean of per-example means vs trained-token mean', async () => {
    const nll = C.tensor([[1, 2, 0], [3, 0, 0]], { dtype: 'f64' });
    const mask = C.tensor([[1, 1, 0], [1, 0, 0]], { dtype: 'f64' });
    expect(Array.from(await data(reduceNll(nll, mask, 'mean')))[0]).toBeCloseTo((1.5 + 3) / 2, 15);
    expect(Array.from(await data(reduceNll(nll, mask, 'sum')))[0]).toBeCloseTo(6 / 3, 15);
  });

  it('equals the cross-entropy computed from the logits by hand, both reductions', async () => {
    const params = initParams(cfg, key(3), { dtype: 'f64', std: 0.5 });
    const lg = Array.from(await data(forward(cfg, params, tokens))); // (2, 6, 11)
    const lb = [[-100, -100, 6, 7, 2, -100], [-100, -100, -100, -100, 8, 2]];
    const rowLosses: number[][] = [[], []];
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t + 1 < 6; t++) {
        const y = lb[b]![t + 1]!;
        if (y === -100) continue;
        const row = lg.slice((b * 6 + t) * 11, (b * 6 + t + 1) * 11);
        const m = Math.max(...row);
        const lse = m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
        rowLosses[b]!.push(lse - row[y]!);
      }
    }
    const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const wantMean = (meanOf(rowLosses[0]!) + meanOf(rowLosses[1]!)) / 2;
    const wantSum = meanOf([...rowLosses[0]!, ...rowLosses[1]!]);
    expect(rowLosses.map((r) => r.length)).toEqual([3, 2]);
    expect((await data(sftLoss(cfg, params, tokens, labels, { reduction: 'mean' })))[0]).toBeCloseTo(wantMean, 12);
    expect((await data(sftLoss(cfg, params, tokens, labels, { reduction: 'sum' })))[0]).toBeCloseTo(wantSum, 12);
    expect(Math.abs(wantMean - wantSum)).toBeGreaterThan(1e-6);
    // the default is open-instruct's default, 'mean'
    expect((await data(sftLoss(cfg, params, tokens, labels)))[0]).toBeCloseTo(wantMean, 12);
  });

  it('refuses labels that are not i32, and tokens and labels that are not both (B, T), with their shapes', () => {
    const params = initParams(cfg, key(3), { dtype: 'f64', std: 0.5 });
    const caught = (f: () => unknown) => { try { f(); return 'no error'; } catch (e) { return `${(e as Error).name}: ${(e as Error).message}`; } };
    expect(caught(() => sftLoss(cfg, params, tokens, C.cast(labels, 'f32')))).toBe('DTypeError: sftLoss: labels must be i32, got f32(2,6)');
    const shape = (t: string, l: string) => `ShapeError: sftLoss: tokens ${t} and labels ${l} must both be (B, T)`;
    // each condition alone: rank of labels, rank of tokens, B, T
    expect(caught(() => sftLoss(cfg, params, tokens, C.reshape(labels, [2, 6, 1])))).toBe(shape('(2,6)', '(2,6,1)'));
    expect(caught(() => sftLoss(cfg, params, C.reshape(tokens, [2, 6, 1]), labels))).toBe(shape('(2,6,1)', '(2,6)'));
    expect(caught(() => sftLoss(cfg, params, C.slice(tokens, [0, 0], [1, 6]), labels))).toBe(shape('(1,6)', '(2,6)'));
    expect(caught(() => sftLoss(cfg, params, C.slice(tokens, [0, 0], [2, 5]), labels))).toBe(shape('(2,5)', '(2,6)'));
  });

  for (const reduction of ['mean', 'sum'] as const) {
    it(`gradient matches finite differences (f64, ${reduction}, −100 ignored)`, async () => {
      const params = initParams(cfg, key(7), { dtype: 'f64', std: 0.5 });
      const dirs = initParams(cfg, key(8), { dtype: 'f64', std: 1 }); // a random direction for every leaf
      const loss = (p: LlamaParams) => sftLoss(cfg, p, tokens, labels, { reduction });
      const [, g] = valueAndGrad(loss)(params);
      const gl = leaves(g), dl = leaves(dirs);
      let ad = 0;
      for (let i = 0; i < gl.length; i++) {
        const [a, b] = [await data(gl[i]!), await data(dl[i]!)];
        for (let j = 0; j < a.length; j++) ad += a[j]! * b[j]!;
      }
      const eps = 1e-5;
      const at = async (s: number) => (await data(loss(mapTree(params, (t: Tensor, i: number) => C.add(t, C.mul(dl[i]!, s))))))[0]!;
      const fd = ((await at(eps)) - (await at(-eps))) / (2 * eps);
      expect(Math.abs(ad)).toBeGreaterThan(1e-3);
      expect(Math.abs(fd - ad)).toBeLessThan(1e-7 + 1e-6 * Math.abs(ad));
    });
  }

  it('a batch with no trained target has loss 0 (not NaN)', async () => {
    const params = initParams(cfg, key(9), { dtype: 'f64', std: 0.5 });
    const none = await data(sftLoss(cfg, params, tokens, i32([[-100, -100, -100, -100, -100, -100], [-100, -100, -100, -100, -100, -100]])));
    expect(none[0]).toBe(0);
  });
});
