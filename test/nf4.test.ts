// NF4 (bitsandbytes rules, RECIPES-FACTS §6.2): the code books, packing order (element 2k in the high nibble), the
// nearest-code and tie rule, short last blocks and double quantisation against vectors worked by hand from the
// rules; the per-block error bound as a property; and the NF4 matmul (forward and input gradient) on the
// interpreter against a plain matmul of the dequantised weight, and on WebGPU against the interpreter; bitsandbytes'
// 4-bit safetensors layout read and written.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, setBackend, type Tensor } from '../index.js';
import { interpret } from '../core/interp.js';
import { schedule } from '../core/schedule/index.js';
import { join } from 'node:path';
import { absmaxOf, dequantizeNf4, DYNAMIC_MAP, NF4_CODE, nf4Weight, quantizeBase, quantizeNf4, type Nf4Quantized } from '../models/nf4.js';
import { loadBnb4bit, readBnb, saveBnb4bit } from '../models/bnb.js';
import { forward, initParams } from '../models/llama.js';
import { openCheckpoint, writeSafetensors } from '../models/safetensors.js';
import { nf4Dense, nf4Linear } from '../ops/nf4.js';
import { linear } from '../ops/nn.js';
import { gpuDevice } from './gpu.js';
import { fillValues } from './optable.js';
import './setup.js';
import { leftMessage, maxAbsDiff, maxRelDiff, right, tempDir, tinyLlama } from './helpers.js';

setBackend('cpu');
const f = Math.fround;
const indices = (q: Nf4Quantized): number[] => Array.from({ length: q.shape.reduce((a, b) => a * b, 1) }, (_, e) => (e & 1 ? q.packed[e >> 1]! & 15 : q.packed[e >> 1]! >> 4));

describe('code books', () => {
  it('NF4: the 16 values of get_4bit_type("nf4"), as f32', () => {
    expect(NF4_CODE).toEqual([
      -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
      -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
      0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ].map(f));
  });

  it('dynamic map: 127 negatives, 0, 127 positives, 1; ends and decades as worked from linspace midpoints', () => {
    expect(DYNAMIC_MAP).toHaveLength(256);
    expect([...DYNAMIC_MAP].sort((a, b) => a - b)).toEqual(DYNAMIC_MAP);
    expect(DYNAMIC_MAP[127]).toBe(0);
    expect(DYNAMIC_MAP[255]).toBe(1);
    // i = 6: linspace(0.1, 1, 65) steps by 0.0140625; the last midpoint is 1 − 0.0140625/2 = 0.99296875.
    expect(DYNAMIC_MAP[254]).toBeCloseTo(0.99296875, 7);
    expect(DYNAMIC_MAP[0]).toBeCloseTo(-0.99296875, 7);
    // i = 0: linspace(0.1, 1, 2) = [0.1, 1], midpoint 0.55, times 10⁻⁶.
    expect(DYNAMIC_MAP[128]! / 5.5e-7).toBeCloseTo(1, 6);
    expect(DYNAMIC_MAP[126]! / -5.5e-7).toBeCloseTo(1, 6);
    // i = 1: linspace(0.1, 1, 3) = [0.1, 0.55, 1], midpoints 0.325 and 0.775, times 10⁻⁵.
    expect(DYNAMIC_MAP[129]! / 3.25e-6).toBeCloseTo(1, 6);
    expect(DYNAMIC_MAP[130]! / 7.75e-6).toBeCloseTo(1, 6);
    // 2^i values per decade [10^(i−6)·0.1, 10^(i−6)): 1, 2, 4, …, 64 positives.
    const decade = (i: number) => DYNAMIC_MAP.filter((v) => v > 10 ** (i - 6) * 0.1 && v < 10 ** (i - 6)).length;
    expect([0, 1, 2, 3, 4, 5, 6].map(decade)).toEqual([1, 2, 4, 8, 16, 32, 64]);
  });
});

describe('quantizeNf4 / dequantizeNf4 against hand-worked vectors', () => {
  it('packing: element 2k in the high nibble ([-1, 1, 0, code 8] → indices 0, 15, 7, 8 → bytes 0x0F, 0x78)', () => {
    const q = quantizeNf4([-1, 1, 0, 0.07958029955625534], [2, 2], { doubleQuant: false });
    expect([...q.packed]).toEqual([0x0f, 0x78]);
    expect([...q.absmax!]).toEqual([1]);
    expect([...dequantizeNf4(q)]).toEqual([-1, 1, 0, f(0.07958029955625534)]);
  });

  it('nearest code; a value on a midpoint takes the lower code (torch.bucketize, right=False); odd length pads a low nibble 0', () => {
    const mid = f(f(0.07958029955625534) / 2); // between codes 7 (0) and 8
    const above = new Float32Array(new Uint32Array([new Uint32Array(Float32Array.of(mid).buffer)[0]! + 1]).buffer)[0]!;
    // 0.5 lies below the 12|13 midpoint 0.50166; −0.5 below the 2|3 midpoint −0.45999; 0.9 above the 14|15 one 0.86148.
    const q = quantizeNf4([1, mid, above, 0.5, -0.5, 0.9, 0.16093020141124725], [7, 1], { doubleQuant: false });
    expect(indices(q)).toEqual([15, 7, 8, 12, 2, 15, 9]);
    expect([...q.packed]).toEqual([0xf7, 0x8c, 0x2f, 0x90]);
  });

  it('a short last block keeps its own absmax (70 elements, blocks of 64)', () => {
    const w = new Float32Array(70);
    w[0] = 2; w[1] = -2; w[2] = 1; // block 0: absmax 2, scaled 1, −1, 0.5
    w.set([0.25, -0.25, 0.125], 64); // block 1 (6 elements): absmax 0.25, scaled 1, −1, 0.5
    const q = quantizeNf4(w, [7, 10], { doubleQuant: false });
    expect([...q.absmax!]).toEqual([2, 0.25]);
    const idx = indices(q);
    expect(idx.slice(0, 4)).toEqual([15, 0, 12, 7]);
    expect(idx.slice(64)).toEqual([15, 0, 12, 7, 7, 7]);
    const d = dequantizeNf4(q);
    expect([d[2], d[66], d[69]]).toEqual([f(f(0.44070982933044434) * 2), f(f(0.44070982933044434) * 0.25), 0]);
  });

  it('double quantisation: absmaxes 1 and 3 → offset 2, centred −1 and 1, codes 0 (−0.99296875) and 255 (1), nested absmax 1', () => {
    const w = new Float32Array(64);
    w[0] = 1; w[32] = 3; w[33] = -1.5;
    const q = quantizeNf4(w, [8, 8], { blockSize: 32 });
    expect(q.absmax).toBeUndefined();
    const n = q.nested!;
    expect(n.offset).toBe(2);
    expect([...n.codes]).toEqual([0, 255]);
    expect([...n.absmax]).toEqual([1]);
    expect(n.blockSize).toBe(256);
    const am = absmaxOf(q);
    expect([...am]).toEqual([f(DYNAMIC_MAP[0]! + 2), 3]); // 1.00703125 and 3
    expect(am[0]).toBeCloseTo(1.00703125, 6);
    const d = dequantizeNf4(q);
    expect([d[0], d[32], d[33]]).toEqual([am[0], 3, f(f(-0.5250730514526367) * 3)]); // −1.5/3 = −0.5 → code 2
  });

  it('rejects bad block sizes and lengths', () => {
    expect(() => quantizeNf4([1, 2], [2], { blockSize: 48 })).toThrow(/blockSize must be one of/);
    expect(() => quantizeNf4([1, 2, 3], [2, 2])).toThrow(/3 values for shape \(2, 2\)/);
  });
});

describe('error bound (property)', () => {
  const halfGap = Math.max(...NF4_CODE.slice(1).map((c, i) => c - NF4_CODE[i]!)) / 2; // (1 − 0.6962)/2 ≈ 0.152
  const values = fc.integer({ min: 1, max: 300 }).chain((n) => fc.tuple(
    fc.array(fc.float({ min: Math.fround(-8), max: Math.fround(8), noNaN: true }), { minLength: n, maxLength: n }),
    fc.constantFrom(32, 64, 128)));

  it('|w − deq| ≤ half the largest code gap × the block absmax, and each element takes a nearest code', () => {
    fc.assert(fc.property(values, ([w, blockSize]) => {
      const q = quantizeNf4(w, [w.length], { blockSize, doubleQuant: false });
      const d = dequantizeNf4(q), idx = indices(q);
      w.forEach((x, e) => {
        const a = q.absmax![Math.floor(e / blockSize)]!;
        expect(Math.abs(x - d[e]!)).toBeLessThanOrEqual(halfGap * a * (1 + 1e-6));
        if (a > 0) {
          const s = f(x / a);
          const best = Math.min(...NF4_CODE.map((c) => Math.abs(s - c)));
          expect(Math.abs(s - NF4_CODE[idx[e]!]!)).toBeLessThanOrEqual(best + 1e-7);
        }
      });
    }));
  });

  it('double quantisation: each absmax within half the dynamic map\'s widest gap (0.00703125) of its nested scale', () => {
    fc.assert(fc.property(fc.array(fc.float({ min: Math.fround(0.01), max: Math.fround(4), noNaN: true }), { minLength: 1, maxLength: 600 }), (am) => {
      // One element of each block sets its absmax.
      const w = new Float32Array(am.length * 32);
      am.forEach((a, b) => { w[b * 32 + (b % 32)] = b % 2 ? -a : a; });
      const q = quantizeNf4(w, [w.length], { blockSize: 32 });
      const got = absmaxOf(q);
      am.forEach((a, b) => expect(Math.abs(got[b]! - a)).toBeLessThanOrEqual(0.00703125 * q.nested!.absmax[b >> 8]! * (1 + 1e-5) + 1e-6));
    }), { numRuns: 15 });
  });
});

/** A quantised (out, in) weight from deterministic values, its leaf, and the dequantised values as a tensor. */
const case_ = (out: number, inn: number, blockSize: number, doubleQuant: boolean, seed: number) => {
  const q = quantizeNf4(fillValues(out * inn, 'unit', seed), [out, inn], { blockSize, doubleQuant });
  return { q, w: nf4Weight(q), dense: C.tensor(dequantizeNf4(q), { shape: [out, inn], dtype: 'f32' }) };
};

describe('NF4 matmul on the interpreter', () => {
  it('forward and input gradient equal a plain matmul of the dequantised weight (f64 input, odd tails, nested)', async () => {
    for (const [M, out, inn, bs, dq] of [[3, 7, 5, 32, true], [1, 6, 12, 64, false], [4, 20, 33, 32, true]] as const) {
      const { w, dense } = case_(out, inn, bs, dq, out * inn);
      const x = C.tensor(Float64Array.from(fillValues(M * inn, 'unit', 3)), { shape: [M, inn], dtype: 'f64' });
      const g = C.tensor(Float64Array.from(fillValues(M * out, 'unit', 4)), { shape: [M, out], dtype: 'f64' });
      const d64 = C.cast(dense, 'f64');
      expect(maxAbsDiff(await data(nf4Linear(x, w)), await data(linear(x, d64)))).toBeLessThan(1e-12);
      const [, back] = C.vjp((xx: Tensor) => nf4Linear(xx, w), x);
      const [, backRef] = C.vjp((xx: Tensor) => linear(xx, d64), x);
      expect(maxAbsDiff(await data(back(g)), await data(backRef(g)))).toBeLessThan(1e-12);
      expect([...(await data(nf4Dense(w)))]).toEqual([...(await data(dense))]);
    }
  });

  it('leaves: ~0.516 byte per parameter with double quantisation (codes, 8-bit absmax codes, scales)', () => {
    const { w } = case_(64, 256, 64, true, 1);
    const bytes = C.leaves(w).reduce((s, t) => s + t.size * 4, 0) - (16 + 256) * 4; // less the two code books
    expect(bytes / (64 * 256)).toBeLessThan(0.52);
    expect(bytes / (64 * 256)).toBeGreaterThan(0.5);
  });
});

describe.skipIf(!gpuDevice)('NF4 matmul on WebGPU', () => {
  it('forward and input gradient equal the interpreter (GEMV and tiled, odd block tails, plain and nested absmax)', async () => {
    // GEMV (one row), small tiles, and a product spanning several tiles with ragged edges (70 × 72 by 40).
    const cases = [[1, 7, 5, 32, true], [9, 20, 33, 32, true], [70, 72, 40, 64, false]] as const;
    const build = (c: (typeof cases)[number]) => {
      const [M, out, inn, bs, dq] = c;
      const { w } = case_(out, inn, bs, dq, out + inn);
      const x = C.tensor(Float32Array.from(fillValues(M * inn, 'unit', 7)), { shape: [M, inn] });
      const g = C.tensor(Float32Array.from(fillValues(M * out, 'unit', 8)), { shape: [M, out] });
      const [y, back] = C.vjp((xx: Tensor) => nf4Linear(xx, w), x);
      return [y, back(g)];
    };
    const want = cases.map((c) => interpret(build(c).map((t) => t.node)));
    setBackend('webgpu');
    try {
      for (const [i, c] of cases.entries()) {
        const got = build(c);
        // Two NF4 kernels (forward, input gradient) and no kernel that stores the (out, in) weight.
        const ks = schedule(got.map((t) => t.node));
        expect(ks.filter((k) => k.kind === 'nf4')).toHaveLength(2);
        expect(ks.filter((k) => k.out.shape.join() === [c[1], c[2]].join())).toEqual([]);
        for (const [j, t] of got.entries()) expect(maxRelDiff(await data(t), want[i]![j]!), `${c} output ${j}`).toBeLessThan(1e-5);
      }
    } finally {
      setBackend('cpu');
    }
  });
});

describe('bitsandbytes 4-bit safetensors', () => {
  const tmp = tempDir('camelid-bnb-');
  const tinyCfg = tinyLlama();

  it('round trip of a quantised model: every NF4 tensor bit-identical, the same logits', async () => {
    const base = await quantizeBase(initParams(tinyCfg, C.key(1), { std: 0.3 }), { blockSize: 32 });
    const dir = join(tmp.path, 'rt');
    right(await saveBnb4bit(dir, tinyCfg, base)());
    const f = right(await openCheckpoint(dir)());
    const names = f.tensors.map((t) => t.name);
    expect(names).toContain('model.layers.1.mlp.down_proj.weight.quant_state.bitsandbytes__nf4');
    expect(f.info('model.layers.1.mlp.down_proj.weight')).toEqual({ name: 'model.layers.1.mlp.down_proj.weight', dtype: 'U8', shape: [48, 1] });
    expect(f.info('model.layers.1.mlp.down_proj.weight.absmax')?.dtype).toBe('U8');
    await f.close();
    const { config, params } = right(await loadBnb4bit(dir)());
    expect(config).toEqual(tinyCfg);
    expect(C.leaves(params).length).toBe(C.leaves(base).length);
    for (const [a, b] of C.leaves(params).map((t, i) => [t, C.leaves(base)[i]!] as const)) expect([...(await data(a))]).toEqual([...(await data(b))]);
    const tokens = C.tensor([[1, 5, 3, 9]], { dtype: 'i32' });
    expect([...(await data(forward(tinyCfg, params, tokens)))]).toEqual([...(await data(forward(tinyCfg, base, tokens)))]);
  });

  /** One weight written as bitsandbytes writes it: json.dumps blob, U8 codes (n/2, 1), nested statistics. */
  const bnbFile = async (name: string, state: string, packedLen = 32) => {
    const path = join(tmp.path, `${name}.safetensors`);
    const w = 'model.layers.0.self_attn.q_proj.weight';
    right(await writeSafetensors(path, [
      { name: w, dtype: 'U8', shape: [packedLen, 1], data: new Uint8Array(packedLen).fill(0xf7) },
      { name: `${w}.absmax`, dtype: 'U8', shape: [1], data: Uint8Array.of(255) },
      { name: `${w}.quant_map`, dtype: 'F32', shape: [16], data: Float32Array.from(NF4_CODE) },
      { name: `${w}.nested_absmax`, dtype: 'F32', shape: [1], data: Float32Array.of(0.5) },
      { name: `${w}.nested_quant_map`, dtype: 'F32', shape: [256], data: Float32Array.from(DYNAMIC_MAP) },
      { name: `${w}.quant_state.bitsandbytes__nf4`, dtype: 'U8', shape: [state.length], data: new TextEncoder().encode(state) },
    ])());
    return { ck: right(await openCheckpoint(path)()), w };
  };

  it('reads a weight laid out as bitsandbytes writes it: bytes 0xF7 → codes 15, 7; absmax = map[255]·0.5 + 0.25 = 0.75', async () => {
    const { ck, w } = await bnbFile('hand', '{"quant_type": "nf4", "absmax_dtype": "float32", "blocksize": 64, "dtype": "bfloat16", "shape": [8, 8], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.25}');
    const q = right(await readBnb(ck, w, [8, 8]));
    await ck.close();
    const dense = await data(nf4Dense(nf4Weight(q)));
    expect([...dense]).toEqual(Array.from({ length: 64 }, (_, e) => (e % 2 ? 0 : 0.75)));
  });

  it('mismatches name the tensor: shape against the model, packed length, quant type', async () => {
    const state = (shape: string, type = 'nf4') => `{"quant_type": "${type}", "blocksize": 64, "dtype": "bfloat16", "shape": ${shape}, "nested_blocksize": 256, "nested_offset": 0.25}`;
    const a = await bnbFile('shape', state('[8, 8]'));
    expect(leftMessage(await readBnb(a.ck, a.w, [4, 8]))).toMatch(/q_proj\.weight\.quant_state\.bitsandbytes__nf4.*quant state shape \(8,8\), the model expects \(4,8\)|quant state shape \(8,8\), the model expects \(4,8\).*q_proj/);
    await a.ck.close();
    const b = await bnbFile('packed', state('[8, 8]'), 30);
    expect(leftMessage(await readBnb(b.ck, b.w, [8, 8]))).toMatch(/30 packed bytes, \(8,8\) needs 32/);
    await b.ck.close();
    const c = await bnbFile('fp4', state('[8, 8]', 'fp4'));
    expect(leftMessage(await readBnb(c.ck, c.w, [8, 8]))).toMatch(/quant_type "nf4"/);
    await c.ck.close();
  });
});
