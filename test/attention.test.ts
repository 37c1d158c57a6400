// Fused attention (ops/attention.ts): values and gradients against attention composed of matmul, mask and softmax
// (autodiff through ordinary ops, f64 on the interpreter), then its three WebGPU kernels against the interpreter, in
// both key/value layouts, with and without vec4 heads, a cache offset (number or tensor), per-row start slots and RoPE
// applied on load.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { numel } from '../core/shape.js';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import { interpret } from '../core/interp.js';
import { runGraph } from '../core/runtime.js';
import { schedule } from '../core/schedule/index.js';
import { causalAttention, rope, ropeTable } from '../ops/nn.js';
import { attentionOp } from '../ops/attention.js';
import { apply } from '../core/tensor.js';
import { gpuDevice } from './gpu.js';
import { fillValues } from './optable.js';
import './setup.js';
import { maxRelDiff } from './helpers.js';

/** The unfused meaning: scores (B, Hkv, g, T, S), masked, softmax, times V. */
const composed = (q: Tensor, k: Tensor, v: Tensor, offset: number, start: Tensor | null): Tensor => {
  const [B, T, H, D] = q.shape as [number, number, number, number];
  const [, S, Hkv] = k.shape as [number, number, number];
  const g = H / Hkv;
  const qh = C.permute(C.reshape(q, [B, T, Hkv, g, D]), [0, 2, 3, 1, 4]);
  const kh = C.expandDims(C.permute(k, [0, 2, 1, 3]), 2);
  const vh = C.expandDims(C.permute(v, [0, 2, 1, 3]), 2);
  const scores = C.mul(C.matmul(qh, C.swapAxes(kh, -1, -2)), 1 / Math.sqrt(D));
  const kSlot = C.reshape(C.iota(S), [1, S]);
  const qSlot = C.reshape(C.add(C.iota(T), offset), [T, 1]);
  let masked = C.where(C.lessEqual(kSlot, qSlot), scores, -Infinity);
  if (start) masked = C.where(C.less(kSlot, C.minimum(C.reshape(start, [B, 1, 1, 1, 1]), qSlot)), -Infinity, masked);
  const out = C.matmul(C.softmax(masked, -1), vh);
  return C.reshape(C.permute(out, [0, 3, 1, 2, 4]), [B, T, H, D]);
};

const caseArb = fc.record({
  B: fc.integer({ min: 1, max: 2 }), T: fc.integer({ min: 1, max: 5 }), extra: fc.nat(3), Hkv: fc.integer({ min: 1, max: 2 }),
  g: fc.integer({ min: 1, max: 3 }), D: fc.constantFrom(2, 3, 8, 20), padded: fc.boolean(), headMajor: fc.boolean(), seed: fc.integer({ min: 1, max: 2 ** 30 }),
  packed: fc.boolean(), rope: fc.boolean(), ropeRows: fc.boolean(),
}).map((c) => (c.packed ? { ...c, headMajor: false, extra: 0 } : c)) // packed: one (B, T, ·) buffer holds k and v too
  // RoPE (queries and keys at the same positions: S = T, an even head): on load, or by `rope` where attention cannot
  // (head-major keys, start slots, a head of 4·odd).
  .map((c) => (c.rope && c.D % 2 === 0 ? { ...c, extra: 0 } : { ...c, rope: false }));
type Case = typeof caseArb extends fc.Arbitrary<infer X> ? X : never;

/**
 * Inputs of a case in `dtype`: q, k, v (k, v optionally stored head-major; or, `packed`, all three
 * slices of one (B, T, (H + 2·Hkv)·D) buffer, as a fused projection gives them), a cotangent, start slots.
 */
const inputs = (c: Case, dtype: 'f32' | 'f64') => {
  const S = c.T + c.extra, H = c.Hkv * c.g;
  const t = (shape: number[], i: number) => C.tensor(Float64Array.from(fillValues(numel(shape), 'any', c.seed + 101 * i)), { shape, dtype });
  const kvShape = c.headMajor ? [c.B, c.Hkv, S, c.D] : [c.B, S, c.Hkv, c.D];
  const asBshd = (x: Tensor) => (c.headMajor ? C.permute(x, [0, 2, 1, 3]) : x);
  const start = c.padded ? C.tensor(Array.from({ length: c.B }, (_, i) => Math.min(i + 1, S - 1)), { dtype: 'i32' }) : null;
  const w = t([c.B, c.T, H, c.D], 3);
  const positions = c.ropeRows ? C.tensor(Array.from({ length: c.B }, (_, b) => Array.from({ length: c.T }, (_, j) => 5 * b + 2 * j)), { dtype: 'i32' }) : C.iota(c.T);
  const table = c.rope ? ropeTable(positions, c.D, 500, dtype) : null;
  if (c.packed) {
    const all = t([c.B, c.T, (H + 2 * c.Hkv) * c.D], 0);
    const part = (lo: number, n: number) => C.reshape(C.slice(all, [0, 0, lo * c.D], [c.B, c.T, (lo + n) * c.D]), [c.B, c.T, n, c.D]);
    return { q: part(0, H), k: part(H, c.Hkv), v: part(H + c.Hkv, c.Hkv), w, asBshd, start, table };
  }
  return { q: t([c.B, c.T, H, c.D], 0), k: t(kvShape, 1), v: t(kvShape, 2), w, asBshd, start, table };
};

/** Output and the gradients of sum(out · w) with respect to q, k, v. */
const outAndGrads = (c: Case, dtype: 'f32' | 'f64', attend: 'fused' | 'composed', offsetTensor = false): Tensor[] => {
  const { q, k, v, w, asBshd, start, table } = inputs(c, dtype);
  const turned = (x: Tensor) => (table ? rope(x, table) : x);
  const f = (qq: Tensor, kk: Tensor, vv: Tensor) => attend === 'fused'
    ? causalAttention(qq, asBshd(kk), asBshd(vv), { offset: offsetTensor ? C.tensor(c.extra, { dtype: 'i32' }) : c.extra, ...(start ? { start } : {}), ...(table ? { rope: table } : {}) })
    : composed(turned(qq), turned(asBshd(kk)), asBshd(vv), c.extra, start);
  const [[, out], grads] = C.valueAndGrad(([qq, kk, vv]: Tensor[]) => {
    const o = f(qq!, kk!, vv!);
    return [C.sum(C.mul(o, w)), o] as const;
  }, { hasAux: true })([q, k, v]);
  return [out, ...grads];
};

describe('fused attention', () => {
  it('equals attention composed of matmul, mask and softmax, values and gradients (f64, interpreter)', () => {
    fc.assert(fc.property(caseArb, (c) => {
      const want = interpret(outAndGrads(c, 'f64', 'composed').map((t) => t.node));
      const got = interpret(outAndGrads(c, 'f64', 'fused').map((t) => t.node));
      got.forEach((g, i) => expect(maxRelDiff(g, want[i]!), `${JSON.stringify(c)} output ${i}`).toBeLessThan(1e-12));
    }), { numRuns: 40, examples: [...ropeOnLoad, ...layouts].map((c) => [c]) });
  });

  it('forward and backward are 3 kernels: out, dq, dkv — no (T, S) scores in memory', () => {
    const c: Case = { B: 2, T: 16, extra: 0, Hkv: 2, g: 2, D: 8, padded: false, headMajor: false, packed: false, seed: 1, rope: false, ropeRows: false };
    const ks = schedule(outAndGrads(c, 'f32', 'fused').map((t) => t.node));
    const att = ks.filter((k) => k.kind === 'attention');
    expect(att.map((k) => (k.out.arg as { part: string }).part).sort()).toEqual(['dkv', 'dq', 'out']);
    expect(ks.every((k) => numel(k.out.shape) < 16 * 16 * 2 * 4)).toBe(true);
  });

  it('RoPE on load adds no kernel but the table\'s (the rotated q and k are never stored), forward or backward', () => {
    for (const D of [8, 2] as const) {
      const c: Case = { B: 2, T: 16, extra: 0, Hkv: 2, g: 2, D, padded: false, headMajor: false, packed: true, seed: 1, rope: true, ropeRows: false };
      const table = inputs(c, 'f32').table!;
      const count = (x: Case) => schedule(outAndGrads(x, 'f32', 'fused').map((t) => t.node)).length;
      expect(count(c), `D ${D}`).toBe(count({ ...c, rope: false }) + schedule([table.node]).length);
    }
  });

  it('second derivatives are refused with a clear error', () => {
    const c: Case = { B: 1, T: 2, extra: 0, Hkv: 1, g: 1, D: 2, padded: false, headMajor: false, packed: false, seed: 1, rope: false, ropeRows: false };
    const { q, k, v } = inputs(c, 'f64');
    const g = C.grad((qq: Tensor) => C.sum(C.grad((x: Tensor) => C.sum(causalAttention(x, k, v)))(qq)));
    expect(() => g(q)).toThrow(/attention\(dq\): second derivatives through fused attention are not supported/);
  });

  it('the primitive refuses RoPE on load where its kernels cannot rotate, naming why; causalAttention falls back to rope', () => {
    const ask = (D: number, T: number, S: number, table: Tensor) => () => apply(attentionOp, [
      C.zeros([1, T, 2, D]), C.zeros([1, S, 1, D]), C.zeros([1, S, 1, D]), table,
    ], { part: 'out', kv: 'bshd', offset: 0, start: false, rope: true });
    expect(ask(4, 3, 3, ropeTable(C.iota(3), 4, 100, 'f32'))).toThrow(/attention\(out\): RoPE on load needs a head size divisible by 8 or not by 4, got 4/);
    expect(ask(8, 3, 5, ropeTable(C.iota(3), 8, 100, 'f32'))).toThrow(/self-attention from slot 0/);
    expect(ask(8, 3, 3, ropeTable(C.iota(4), 8, 100, 'f32'))).toThrow(/the RoPE table f32\(4,1,8\) must be f32 \(T, 1, D\)/);
    const q = C.zeros([1, 3, 2, 4]), k = C.zeros([1, 3, 1, 4]);
    const ks = schedule([causalAttention(q, k, k, { rope: ropeTable(C.iota(3), 4, 100, 'f32') }).node]);
    expect(ks.filter((x) => x.kind === 'attention').every((x) => !(x.out.arg as { rope?: boolean }).rope)).toBe(true);
  });
});

/**
 * Cases every run checks whatever the seed draws: head-major keys with two kv heads (with one, the two layouts index
 * alike), start slots past a query's own slot, a cache offset with a grouped head.
 */
const layouts: Case[] = [
  { B: 2, T: 3, extra: 2, Hkv: 2, g: 2, D: 3, padded: true, headMajor: true, packed: false, seed: 9, rope: false, ropeRows: false },
  { B: 2, T: 4, extra: 0, Hkv: 2, g: 1, D: 2, padded: false, headMajor: true, packed: false, seed: 10, rope: false, ropeRows: false },
  { B: 2, T: 2, extra: 3, Hkv: 1, g: 2, D: 8, padded: true, headMajor: false, packed: false, seed: 11, rope: false, ropeRows: false },
];

/** RoPE rotated inside the kernels: vec4 and scalar heads, one table or one per batch row, q/k/v packed or apart. */
const ropeOnLoad: Case[] = [
  { B: 2, T: 5, extra: 0, Hkv: 2, g: 2, D: 8, padded: false, headMajor: false, packed: true, seed: 3, rope: true, ropeRows: true },
  { B: 1, T: 4, extra: 0, Hkv: 1, g: 3, D: 2, padded: false, headMajor: false, packed: false, seed: 4, rope: true, ropeRows: false },
];

/**
 * Sequences longer than an invocation's rows (8 queries; 16 keys for dkv at head size 8): the stretch of keys
 * (queries) every row attends runs unchecked, the diagonal and the start slots checked.
 */
const longRows: Case[] = [
  { B: 1, T: 37, extra: 0, Hkv: 2, g: 2, D: 8, padded: true, headMajor: false, packed: true, seed: 5, rope: false, ropeRows: false },
  { B: 2, T: 37, extra: 0, Hkv: 1, g: 2, D: 8, padded: false, headMajor: false, packed: true, seed: 6, rope: true, ropeRows: false },
  { B: 1, T: 19, extra: 3, Hkv: 1, g: 1, D: 3, padded: false, headMajor: true, packed: false, seed: 7, rope: false, ropeRows: false },
  // Enough query rows (B·H·T/16 ≥ 8 workgroups) for the forward kernel to take 16 per invocation.
  { B: 2, T: 464, extra: 0, Hkv: 2, g: 4, D: 8, padded: false, headMajor: false, packed: true, seed: 8, rope: true, ropeRows: false },
];

describe.skipIf(!gpuDevice)('fused attention on WebGPU', () => {
  it('all three kernels equal the interpreter (both layouts, vec4 and scalar heads, offset as number or tensor, start slots)', async () => {
    C.setBackend('webgpu');
    await fc.assert(fc.asyncProperty(caseArb, fc.boolean(), async (c, offsetTensor) => {
      const want = interpret(outAndGrads(c, 'f32', 'fused', offsetTensor).map((t) => t.node));
      const outs = outAndGrads(c, 'f32', 'fused', offsetTensor);
      // Packed q, k, v are read in place: no kernel copies them out.
      if (c.packed) expect(schedule(outs.map((t) => t.node)).filter((k) => k.kind === 'attention').every((k) => k.kind === 'attention' && k.views?.length === k.inputs.length)).toBe(true);
      await runGraph(gpuDevice!, outs.map((t) => t.node));
      for (const [i, t] of outs.entries()) {
        expect(maxRelDiff(await C.data(t), want[i]!), `${JSON.stringify(c)} offset ${offsetTensor ? 'tensor' : 'number'}: output ${i}`).toBeLessThan(2e-5);
        t.dispose();
      }
    }), { numRuns: 10, examples: [...ropeOnLoad, ...longRows].map((c) => [c, false] as [Case, boolean]) });
  });

  it('the quick first-tier kernels (4 rows per invocation, core/device/tiers.ts) equal the interpreter too', async () => {
    C.setBackend('webgpu');
    const before = process.env.CAMELID_FIRST_TIER;
    process.env.CAMELID_FIRST_TIER = 'fast';
    try {
      for (const c of [...ropeOnLoad, ...longRows.slice(0, 3)]) {
        const want = interpret(outAndGrads(c, 'f32', 'fused').map((t) => t.node));
        const outs = outAndGrads(c, 'f32', 'fused');
        await runGraph(gpuDevice!, outs.map((t) => t.node));
        for (const [i, t] of outs.entries()) {
          expect(maxRelDiff(await C.data(t), want[i]!), `${JSON.stringify(c)}: output ${i}`).toBeLessThan(2e-5);
          t.dispose();
        }
      }
    } finally {
      process.env.CAMELID_FIRST_TIER = before;
    }
  });
});
