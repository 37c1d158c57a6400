// ops/nn.ts against direct loops in float64 (the meaning of each composition), plus its shape errors.
// Gradients are covered by the op table (test/optable.ts).

import { describe, expect, it } from 'vitest';
import { toposort } from '../core/node.js';
import { numel } from '../core/shape.js';
import * as C from '../index.js';
import { data, setBackend, type Tensor } from '../index.js';
import { causalAttention, crossEntropy, embedding, linear, linears, rmsNorm, rope, ropeTable, swiglu } from '../ops/nn.js';
import { fillValues } from './optable.js';
import './setup.js';
import { maxAbsDiff } from './helpers.js';

setBackend('cpu');

const f64 = (shape: number[], seed: number) => C.tensor(Float64Array.from(fillValues(numel(shape), 'any', seed)), { shape, dtype: 'f64' });
const i32 = (x: C.NestedArray) => C.tensor(x, { dtype: 'i32' });
const vals = async (t: Tensor) => Array.from(await data(t));

describe('rmsNorm', () => {
  it('is x / sqrt(mean(x²) + eps) · w over the last axis', async () => {
    const [x, w] = [f64([2, 3, 5], 1), f64([5], 2)];
    const [xv, wv] = [await vals(x), await vals(w)];
    const want = xv.map((_, i) => {
      const row = Math.floor(i / 5) * 5;
      const ms = xv.slice(row, row + 5).reduce((a, b) => a + b * b, 0) / 5;
      return (xv[i]! / Math.sqrt(ms + 1e-5)) * wv[i % 5]!;
    });
    expect(maxAbsDiff(await vals(rmsNorm(x, w, 1e-5)), want)).toBeLessThan(1e-14);
  });

  it('rejects a weight that does not match the last axis', () => {
    expect(() => rmsNorm(f64([2, 4], 1), f64([3], 2), 1e-5)).toThrow(/rmsNorm: weight \(3,\) does not match the last axis of \(2,4\)/);
  });
});

describe('rope', () => {
  // Hugging Face: out = x·cos + rotate_half(x)·sin, rotate_half(x) = [−x₂, x₁], angle_i = pos·θ^(−2i/D).
  const naive = (x: number[], [B, T, H, D]: [number, number, number, number], pos: (b: number, t: number) => number, theta: number) => x.map((_, idx) => {
    const d = idx % D, h = Math.floor(idx / D) % H, t = Math.floor(idx / (D * H)) % T, b = Math.floor(idx / (D * H * T));
    const half = D / 2, i = d % half;
    const a = pos(b, t) * theta ** (-2 * i / D);
    const at = (dd: number) => x[((b * T + t) * H + h) * D + dd]!;
    return d < half ? at(d) * Math.cos(a) - at(d + half) * Math.sin(a) : at(d) * Math.cos(a) + at(d - half) * Math.sin(a);
  });

  it('matches rotate_half with (T,) positions', async () => {
    const s: [number, number, number, number] = [2, 5, 3, 8];
    const x = f64(s, 3);
    const got = await vals(rope(x, C.add(C.iota(5), 7), 10000));
    expect(maxAbsDiff(got, naive(await vals(x), s, (_b, t) => t + 7, 10000))).toBeLessThan(1e-13);
  });

  it('matches rotate_half with (B, T) positions and another theta', async () => {
    const s: [number, number, number, number] = [2, 3, 2, 4];
    const x = f64(s, 4);
    const pos = [[0, 1, 2], [10, 11, 30]];
    const got = await vals(rope(x, i32(pos), 1e6));
    expect(maxAbsDiff(got, naive(await vals(x), s, (b, t) => pos[b]![t]!, 1e6))).toBeLessThan(1e-12);
  });

  it('makes q·k depend only on the distance between positions', async () => {
    const [q, k] = [f64([1, 1, 1, 8], 5), f64([1, 1, 1, 8], 6)];
    const dot = async (pq: number, pk: number) => (await vals(C.sum(C.mul(rope(q, i32([pq]), 10000), rope(k, i32([pk]), 10000)))))[0]!;
    expect(await dot(9, 4)).toBeCloseTo(await dot(105, 100), 10);
  });

  it('is accurate in f32 at large angles (cos is not taken as sin(x + π/2))', async () => {
    const x = C.tensor(new Float32Array([1, 0]), { shape: [1, 1, 1, 2] });
    const [c, s] = await vals(rope(x, i32([4000]), 10000));
    expect(Math.abs(c! - Math.cos(4000))).toBeLessThan(1e-6);
    expect(Math.abs(s! - Math.sin(4000))).toBeLessThan(1e-6);
  });

  it('rejects odd head sizes and mismatched positions', () => {
    expect(() => rope(f64([1, 2, 1, 3], 1), C.iota(2), 1e4)).toThrow(/rope: head dimension must be even/);
    expect(() => rope(f64([1, 2, 1, 4], 1), C.iota(3), 1e4)).toThrow(/rope: positions \(3,\) do not match T = 2/);
    expect(() => rope(f64([1, 2, 1, 4], 1), C.tensor([0, 1]), 1e4)).toThrow(/rope: table f32\(2,\) must be f64 \(…, T, 1, headDim\)/);
    expect(() => rope(f64([1, 2, 1, 4], 1), C.iota(2))).toThrow(/rope: integer positions need theta/);
    expect(() => rope(f64([1, 2, 1, 4], 1), ropeTable(C.iota(2), 6, 1e4, 'f64'))).toThrow(/rope: table f64\(2,1,6\) must be/);
    expect(() => ropeTable(C.tensor([0, 1]), 4, 1e4)).toThrow(/ropeTable: positions must be i32/);
    expect(() => ropeTable(C.iota(2), 5, 1e4)).toThrow(/ropeTable: head dimension must be even/);
  });

  it('takes a ropeTable built once for every layer, with the same values as from positions', async () => {
    const s: [number, number, number, number] = [2, 3, 2, 4];
    const pos = [[0, 1, 2], [10, 11, 30]];
    const table = ropeTable(i32(pos), 4, 1e6, 'f64'); // (2, 3, 1, 4)
    for (const seed of [4, 5]) {
      const x = f64(s, seed);
      expect(maxAbsDiff(await vals(rope(x, table)), naive(await vals(x), s, (b, t) => pos[b]![t]!, 1e6))).toBeLessThan(1e-12);
    }
    const [c, sn] = [await vals(C.slice(table, [1, 2, 0, 1], [2, 3, 1, 2])), await vals(C.slice(table, [1, 2, 0, 3], [2, 3, 1, 4]))];
    expect(Math.abs(c[0]! - Math.cos(30 * 1e6 ** -0.5))).toBeLessThan(1e-14);
    expect(Math.abs(sn[0]! - Math.sin(30 * 1e6 ** -0.5))).toBeLessThan(1e-14);
  });
});

describe('causalAttention', () => {
  // Direct loops: query t (slot offset + t) attends slots s ≤ offset + t with s ≥ start[b]; head h reads kv head h / g.
  const naive = (q: number[], k: number[], v: number[], [B, T, H, D]: [number, number, number, number], S: number, Hkv: number, offset: number, start: number[]) => {
    const out = new Array<number>(B * T * H * D).fill(0);
    const g = H / Hkv;
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / g);
      const allowed = [...Array(S).keys()].filter((s) => s <= offset + t && s >= start[b]!);
      const sc = allowed.map((s) => {
        let d = 0;
        for (let i = 0; i < D; i++) d += q[((b * T + t) * H + h) * D + i]! * k[((b * S + s) * Hkv + kh) * D + i]!;
        return d / Math.sqrt(D);
      });
      const m = Math.max(...sc);
      const e = sc.map((x) => Math.exp(x - m));
      const z = e.reduce((a, c) => a + c, 0);
      allowed.forEach((s, j) => {
        for (let i = 0; i < D; i++) out[((b * T + t) * H + h) * D + i]! += (e[j]! / z) * v[((b * S + s) * Hkv + kh) * D + i]!;
      });
    }
    return out;
  };

  it('plain causal self-attention (T = S, one kv head per head)', async () => {
    const [q, k, v] = [f64([2, 4, 2, 3], 1), f64([2, 4, 2, 3], 2), f64([2, 4, 2, 3], 3)];
    const got = await vals(causalAttention(q, k, v));
    expect(maxAbsDiff(got, naive(await vals(q), await vals(k), await vals(v), [2, 4, 2, 3], 4, 2, 0, [0, 0]))).toBeLessThan(1e-14);
  });

  it('grouped-query heads, a cache offset and per-row start slots', async () => {
    const [B, T, H, D, S, Hkv, offset] = [2, 2, 6, 4, 7, 2, 5];
    const [q, k, v] = [f64([B, T, H, D], 4), f64([B, S, Hkv, D], 5), f64([B, S, Hkv, D], 6)];
    const got = await vals(causalAttention(q, k, v, { offset, start: i32([0, 3]) }));
    expect(maxAbsDiff(got, naive(await vals(q), await vals(k), await vals(v), [B, T, H, D], S, Hkv, offset, [0, 3]))).toBeLessThan(1e-14);
  });

  it('the first query attends only the first key: its output is v[0]', async () => {
    const [q, k, v] = [f64([1, 3, 1, 2], 7), f64([1, 3, 1, 2], 8), f64([1, 3, 1, 2], 9)];
    const out = await vals(causalAttention(q, k, v));
    expect(out.slice(0, 2)).toEqual((await vals(v)).slice(0, 2));
  });

  it('a padding query (slot before its row\'s start) attends only itself, so nothing becomes NaN', async () => {
    const [q, k, v] = [f64([1, 3, 1, 2], 7), f64([1, 3, 1, 2], 8), f64([1, 3, 1, 2], 9)];
    const out = await vals(causalAttention(q, k, v, { start: i32([2]) }));
    expect(out.every(Number.isFinite)).toBe(true);
    expect(out).toEqual(await vals(v)); // slots 0, 1 see themselves; slot 2 sees only slot 2
  });

  it('rejects heads that do not group and mismatched shapes', () => {
    expect(() => causalAttention(f64([1, 2, 3, 4], 1), f64([1, 2, 2, 4], 1), f64([1, 2, 2, 4], 1))).toThrow(/causalAttention: q \(1,2,3,4\), k \(1,2,2,4\)/);
    expect(() => causalAttention(f64([1, 2, 2, 4], 1), f64([1, 2, 2, 4], 1), f64([1, 3, 2, 4], 1))).toThrow(/causalAttention/);
  });
});

describe('linear, swiglu, embedding', () => {
  it('linear is x·Wᵀ with W as (out, in)', async () => {
    const [x, w] = [f64([3, 4], 1), f64([2, 4], 2)];
    const [xv, wv] = [await vals(x), await vals(w)];
    const want = [...Array(6).keys()].map((i) => { const [r, o] = [Math.floor(i / 2), i % 2]; let s = 0; for (let j = 0; j < 4; j++) s += xv[r * 4 + j]! * wv[o * 4 + j]!; return s; });
    expect(maxAbsDiff(await vals(linear(x, w)), want)).toBeLessThan(1e-14);
  });

  it('swiglu is W2(silu(W1 x) ⊙ W3 x)', async () => {
    const [x, w1, w3, w2] = [f64([2, 3], 1), f64([5, 3], 2), f64([5, 3], 3), f64([3, 5], 4)];
    const want = C.matmul(C.mul(C.silu(C.matmul(x, C.transpose(w1))), C.matmul(x, C.transpose(w3))), C.transpose(w2));
    expect(maxAbsDiff(await vals(swiglu(x, w1, w3, w2)), await vals(want))).toBeLessThan(1e-14);
  });

  it('linears equals separate linears, values and gradients, with (≥ 64 rows) and without its weight concatenation', async () => {
    for (const rows of [5, 70]) {
      const [x, w1, w2, r] = [f64([rows, 3], 1), f64([4, 3], 2), f64([2, 3], 3), f64([rows, 6], 4)];
      const loss = (ys: Tensor[]) => C.sum(C.mul(C.concat(ys, -1), r));
      const [a, ga] = C.valueAndGrad(([xx, u, v]: Tensor[]) => loss(linears(xx!, [u!, v!])))([x, w1, w2]);
      const [b, gb] = C.valueAndGrad(([xx, u, v]: Tensor[]) => loss([linear(xx!, u!), linear(xx!, v!)]))([x, w1, w2]);
      expect(Math.abs((await C.item(a)) - (await C.item(b)))).toBeLessThan(1e-12);
      for (let i = 0; i < 3; i++) expect(maxAbsDiff(await vals(ga[i]!), await vals(gb[i]!)), `rows ${rows} grad ${i}`).toBeLessThan(1e-12);
    }
  });

  it('a list entry of linears is one output, x times the concatenated weights; with few rows no weight is concatenated', async () => {
    for (const rows of [5, 70]) {
      const [x, wq, wk, wv] = [f64([rows, 3], 1), f64([4, 3], 2), f64([2, 3], 3), f64([5, 3], 5)];
      const [qk, v] = linears(x, [[wq, wk], wv]);
      expect(qk!.shape).toEqual([rows, 6]);
      // With few rows (a decode step) the weights are read where they are: no node has a concatenation's shape.
      const weightConcat = toposort([qk!.node]).some((n) => n.shape.length === 2 && [6, 11].includes(n.shape[0]!) && n.shape[1] === 3); // [wq; wk] or all three
      expect(weightConcat, `rows ${rows}`).toBe(rows >= 64);
      expect(maxAbsDiff(await vals(qk!), await vals(C.concat([linear(x, wq), linear(x, wk)], -1))), `rows ${rows}`).toBeLessThan(1e-12);
      expect(maxAbsDiff(await vals(v!), await vals(linear(x, wv))), `rows ${rows}`).toBeLessThan(1e-12);
    }
  });

  it('embedding picks rows', async () => {
    const table = C.tensor([[0, 1], [2, 3], [4, 5]]);
    expect(await C.toArray(embedding(table, i32([[2, 0], [1, 1]])))).toEqual([[[4, 5], [0, 1]], [[2, 3], [2, 3]]]);
  });
});

describe('crossEntropy', () => {
  it('is the mean of logsumexp − picked logit over counted targets', async () => {
    const logits = f64([2, 3, 4], 1);
    const targets = [[1, -100, 3], [0, 2, -100]];
    const lv = await vals(logits);
    let total = 0, n = 0;
    targets.flat().forEach((t, r) => {
      if (t === -100) return;
      const row = lv.slice(r * 4, r * 4 + 4);
      total += Math.log(row.reduce((a, x) => a + Math.exp(x), 0)) - row[t]!;
      n++;
    });
    expect((await vals(crossEntropy(logits, i32(targets))))[0]).toBeCloseTo(total / n, 13);
  });

  it('honours another ignoreIndex, and gives 0 when nothing counts', async () => {
    const logits = f64([3, 4], 2);
    expect((await vals(crossEntropy(logits, i32([7, 7, 7]), { ignoreIndex: 7 })))[0]).toBe(0);
    const a = await vals(crossEntropy(logits, i32([1, 0, 0]), { ignoreIndex: 0 }));
    const b = await vals(crossEntropy(C.slice(logits, [0], [1]), i32([1])));
    expect(a[0]).toBeCloseTo(b[0]!, 14);
  });

  it('rejects float targets and mismatched shapes', () => {
    expect(() => crossEntropy(f64([2, 3], 1), C.tensor([0, 1]))).toThrow(/crossEntropy: targets must be i32/);
    expect(() => crossEntropy(f64([2, 3], 1), i32([0, 1, 2]))).toThrow(/crossEntropy: logits \(2,3\) must be targets \(3,\) plus a class axis/);
  });
});
