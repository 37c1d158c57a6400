// LoRA on the interpreter: PEFT's init (A ~ U(±1/√in), B = 0, so the adapted model starts as the base, exactly),
// merged == adapted forward, gradients for the adapters only (no base weight gradient in the graph) against
// finite differences in f64, keyed dropout on the adapter input only, disable == base, mismatch errors, and PEFT
// adapter folders (round trip, a folder laid out as PEFT writes it, mismatches naming the key).

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, setBackend, type Tensor } from '../index.js';
import { toposort } from '../core/node.js';
import { forward, initParams, type LlamaParams } from '../models/llama.js';
import { checkAdapters, disable, lora, LORA_TARGETS, loraScale, merge, withLora, type LoraAdapters } from '../models/lora.js';
import { crossEntropy, linear, type LoraWeight } from '../ops/nn.js';
import { loadAdapters, saveAdapters } from '../models/peft.js';
import { openSafetensors, writeSafetensors, bf16ToF32, f32ToBf16 } from '../models/safetensors.js';
import { fillValues } from './optable.js';
import './setup.js';
import { leftMessage, maxAbsDiff, right, tempDir, tinyLlama } from './helpers.js';

setBackend('cpu');

const tiny = tinyLlama();
const i32 = (x: C.NestedArray) => C.tensor(x, { dtype: 'i32' });
const tokens = i32([[1, 5, 3, 9, 2], [4, 4, 10, 0, 7]]);
const targets = i32([[5, 3, 9, 2, -100], [4, 10, 0, 7, 6]]);
const f64 = (t: Tensor, seed: number) => C.tensor(Float64Array.from(fillValues(t.size, 'unit', seed)), { shape: t.shape, dtype: 'f64' });
/** Adapters with B drawn too (B = 0 would hide every mistake in the adapter branch). */
const randomB = (a: LoraAdapters, seed: number): LoraAdapters => ({
  ...a, layers: a.layers.map((l, i) => Object.fromEntries(Object.entries(l).map(([t, p], j) => [t, { A: p!.A, B: f64(p!.B, seed + 10 * i + j) }]))),
});

describe('LoRA adapters (PEFT init and scaling)', () => {
  const base = initParams(tiny, C.key(1), { dtype: 'f64', std: 0.3 });

  it('A ~ U(±1/√in) per target, B = 0, one adapter per layer and target; α/r or α/√r', async () => {
    const a = lora(base, { r: 4, alpha: 16, dropout: 0.1, key: C.key(2) });
    expect(a.targets).toEqual(LORA_TARGETS);
    expect(loraScale(a)).toBe(4);
    expect(loraScale({ ...a, rslora: true })).toBe(8);
    const firsts = new Set<number>();
    for (const l of a.layers) {
      for (const t of LORA_TARGETS) {
        const { A, B } = l[t]!;
        const inn = t === 'w2' ? tiny.hiddenDim : tiny.dim;
        const out = { wq: 8, wk: 4, wv: 4, wo: 8, w1: 12, w2: 8, w3: 12 }[t];
        expect(A.shape).toEqual([4, inn]);
        expect(B.shape).toEqual([out, 4]);
        const av = await data(A);
        expect(Math.max(...av.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(inn));
        expect(Math.max(...av.map(Math.abs))).toBeGreaterThan(0.5 / Math.sqrt(inn)); // spread over the range
        expect([...(await data(B))].every((v) => v === 0)).toBe(true);
        firsts.add(av[0]!);
      }
    }
    expect(firsts.size).toBe(2 * LORA_TARGETS.length); // every adapter drawn from its own key
  });

  it('B = 0 at init gives the base model\'s logits exactly (with and without dropout)', async () => {
    const a = lora(base, { r: 2, alpha: 8, dropout: 0.25, key: C.key(3) });
    const ref = await data(forward(tiny, base, tokens));
    expect([...(await data(forward(tiny, withLora(base, a), tokens)))]).toEqual([...ref]);
    expect([...(await data(forward(tiny, withLora(base, a, { dropoutKey: C.key(4) }), tokens)))]).toEqual([...ref]);
  });

  it('merged dense weights W + s·B·A give the adapted forward; disable gives the base exactly', async () => {
    const a = randomB(lora(base, { r: 3, alpha: 5, targets: ['wq', 'wv', 'w2', 'w3'], key: C.key(5) }), 300);
    const adapted = await data(forward(tiny, withLora(base, a), tokens));
    const merged = merge(base, a);
    expect(maxAbsDiff(await data(forward(tiny, merged, tokens)), adapted)).toBeLessThan(1e-12);
    // merge is W + s·B·A element by element (s = 5/3), checked on one weight by hand.
    const [w, A, B] = await Promise.all([data(base.layers[1]!.w2), data(a.layers[1]!.w2!.A), data(a.layers[1]!.w2!.B)]);
    const m = await data(merged.layers[1]!.w2);
    const [out, inn] = [tiny.dim, tiny.hiddenDim];
    let err = 0;
    for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) {
      let ba = 0;
      for (let k = 0; k < 3; k++) ba += B[o * 3 + k]! * A[k * inn + i]!;
      err = Math.max(err, Math.abs(m[o * inn + i]! - (w[o * inn + i]! + (5 / 3) * ba)));
    }
    expect(err).toBeLessThan(1e-14);
    expect(merged.layers[0]!.wk).toBe(base.layers[0]!.wk); // untargeted weights are the base's own
    expect(maxAbsDiff(adapted, await data(forward(tiny, base, tokens)))).toBeGreaterThan(1e-3); // the adapters matter
    expect([...(await data(forward(tiny, disable(withLora(base, a)), tokens)))]).toEqual([...(await data(forward(tiny, base, tokens)))]);
  });
});

describe('LoRA gradients (f64, finite differences)', () => {
  const base = initParams(tiny, C.key(6), { dtype: 'f64', std: 0.4 });
  const adapters = randomB(lora(base, { r: 2, alpha: 3, key: C.key(7) }), 500);
  const loss = (a: LoraAdapters, p: LlamaParams = base) => crossEntropy(forward(tiny, withLora(p, a), tokens), targets);

  it('the gradient tree is the adapters\' and matches a central difference along a random direction', async () => {
    const [, g] = C.valueAndGrad((a: LoraAdapters) => loss(a))(adapters);
    expect(g.r).toBe(2);
    expect(C.leaves(g).map((t) => t.shape)).toEqual(C.leaves(adapters).map((t) => t.shape));
    const dir = C.mapTree(adapters, (t, i) => f64(t, 900 + i));
    const eps = 1e-5;
    const step = (s: number) => C.zipTrees([adapters, dir], ([p, d]) => C.add(p!, C.mul(d!, s)));
    const fd = ((await C.item(loss(step(eps)))) - (await C.item(loss(step(-eps))))) / (2 * eps);
    let ad = 0;
    const gl = C.leaves(g), dl = C.leaves(dir);
    for (let i = 0; i < gl.length; i++) {
      const [x, y] = [await data(gl[i]!), await data(dl[i]!)];
      for (let j = 0; j < x.length; j++) ad += x[j]! * y[j]!;
    }
    console.log(`LoRA gradient: directional derivative ${ad.toExponential(6)}, finite difference ${fd.toExponential(6)}`);
    expect(Math.abs(ad)).toBeGreaterThan(1e-3);
    expect(Math.abs(fd - ad)).toBeLessThan(1e-7 * (1 + Math.abs(fd)));
  });

  it('the backward graph has no base weight gradient: no matmul shaped like a projection', () => {
    const [, g] = C.valueAndGrad((a: LoraAdapters) => loss(a))(adapters);
    const shapes = new Set(['8,8', '4,8', '8,4', '12,8', '8,12']);
    const matmuls = toposort(C.leaves(g).map((t) => t.node)).filter((n) => n.op.name === 'matmul');
    expect(matmuls.length).toBeGreaterThan(0);
    expect(matmuls.filter((n) => shapes.has(n.shape.join(','))).map((n) => n.shape)).toEqual([]);
    // The same loss differentiated with respect to the base does make them: the check above can fail.
    const [, gb] = C.valueAndGrad((p: LlamaParams) => loss(adapters, p))(base);
    expect(toposort(C.leaves(gb).map((t) => t.node)).some((n) => n.op.name === 'matmul' && shapes.has(n.shape.join(',')))).toBe(true);
  });

  it('with B = 0, A\'s gradient is 0 and B\'s is not (∂L/∂A carries a factor B)', async () => {
    const a0 = lora(base, { r: 2, alpha: 3, targets: ['wo'], key: C.key(8) });
    const [, g] = C.valueAndGrad((a: LoraAdapters) => loss(a))(a0);
    const gA = await data(g.layers[0]!.wo!.A), gB = await data(g.layers[0]!.wo!.B);
    expect([...gA].every((v) => v === 0)).toBe(true);
    expect(Math.max(...[...gB].map(Math.abs))).toBeGreaterThan(1e-6);
  });
});

describe('LoRA dropout (adapter input only, keyed)', () => {
  const x = C.tensor(Float64Array.from(fillValues(6 * 8, 'unit', 40)), { shape: [6, 8], dtype: 'f64' });
  const W = C.tensor(Float64Array.from(fillValues(5 * 8, 'unit', 41)), { shape: [5, 8], dtype: 'f64' });
  const A = C.tensor(Float64Array.from(fillValues(3 * 8, 'unit', 42)), { shape: [3, 8], dtype: 'f64' });
  const B = C.tensor(Float64Array.from(fillValues(5 * 3, 'unit', 43)), { shape: [5, 3], dtype: 'f64' });
  const w = (key?: Tensor): LoraWeight => ({ kind: 'lora', base: W, A, B, scale: 0.5, dropout: 0.4, ...(key ? { key } : {}) });

  it('y = x·Wᵀ + s·((x ⊙ m / (1 − p))·Aᵀ)·Bᵀ with the keyed keep-mask m; reproducible; no key = no dropout', async () => {
    const k = C.key(11);
    const m = await data(C.bernoulli(k, 0.6, [6, 8]));
    const [xv, wv, av, bv] = await Promise.all([data(x), data(W), data(A), data(B)]);
    const want = new Float64Array(6 * 5);
    for (let r = 0; r < 6; r++) for (let o = 0; o < 5; o++) {
      let base = 0, delta = 0;
      for (let i = 0; i < 8; i++) base += xv[r * 8 + i]! * wv[o * 8 + i]!;
      for (let j = 0; j < 3; j++) {
        let h = 0;
        for (let i = 0; i < 8; i++) h += (m[r * 8 + i] ? xv[r * 8 + i]! / 0.6 : 0) * av[j * 8 + i]!;
        delta += h * bv[o * 3 + j]!;
      }
      want[r * 5 + o] = base + 0.5 * delta;
    }
    const got = await data(linear(x, w(k)));
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-12);
    expect([...(await data(linear(x, w(k))))]).toEqual([...got]);
    expect([...m].some((v) => !v) && [...m].some((v) => v)).toBe(true);
    expect(maxAbsDiff(await data(linear(x, w(C.key(12)))), got)).toBeGreaterThan(1e-6);
    const noDrop = await data(C.add(linear(x, W), linear(C.mul(linear(x, A), 0.5), B)));
    expect(maxAbsDiff(await data(linear(x, w())), noDrop)).toBeLessThan(1e-12);
  });
});

describe('LoRA mismatches are errors naming the adapter', () => {
  const base = initParams(tiny, C.key(1), { dtype: 'f32' });
  const a = lora(base, { r: 2, alpha: 4, key: C.key(2) });
  it('layer count, shape, unknown target, bad options', () => {
    expect(() => checkAdapters(base, { ...a, layers: a.layers.slice(1) })).toThrow(/adapters have 1 layers, the base has 2/);
    const bad = { ...a, layers: [a.layers[0]!, { ...a.layers[1]!, wv: { A: a.layers[1]!.wq!.A, B: a.layers[1]!.wq!.B } }] };
    expect(() => checkAdapters(base, bad)).toThrow(/layers\[1\]\.wv\.B is \(8,2\), expected \(4,2\)/);
    expect(() => withLora(base, { ...a, layers: [a.layers[0]!, { ...a.layers[1]!, wz: a.layers[1]!.wq } as never] })).toThrow(/layers\[1\]\.wz: unknown target/);
    expect(() => lora(base, { r: 0, alpha: 1, key: C.key(0) })).toThrow(/r must be a positive integer/);
    expect(() => lora(base, { r: 2, alpha: 1, targets: ['q_proj' as never], key: C.key(0) })).toThrow(/unknown target 'q_proj'/);
  });
});

describe('PEFT adapter folders', () => {
  const tmp = tempDir('camelid-peft-');
  const base = initParams(tiny, C.key(1), { dtype: 'f32' });
  const f32 = (t: Tensor, seed: number) => C.tensor(Float32Array.from(fillValues(t.size, 'unit', seed)), { shape: t.shape, dtype: 'f32' });

  it('round trip: config fields and every adapter bit-identical', async () => {
    const a0 = lora(base, { r: 3, alpha: 6, dropout: 0.05, targets: ['wq', 'wv', 'w2'], key: C.key(9), rslora: true });
    const a = { ...a0, layers: a0.layers.map((l, i) => Object.fromEntries(Object.entries(l).map(([t, p], j) => [t, { A: p!.A, B: f32(p!.B, 70 + 10 * i + j) }]))) };
    const dir = join(tmp.path, 'rt');
    right(await saveAdapters(dir, a, { baseModel: 'tiny' })());
    const cfg = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg).toMatchObject({ r: 3, lora_alpha: 6, lora_dropout: 0.05, target_modules: ['q_proj', 'v_proj', 'down_proj'], bias: 'none', task_type: 'CAUSAL_LM', use_rslora: true, peft_type: 'LORA' });
    const back = right(await loadAdapters(dir, base)());
    expect({ ...back, layers: null }).toEqual({ ...a, layers: null });
    for (let i = 0; i < 2; i++) for (const t of ['wq', 'wv', 'w2'] as const) for (const m of ['A', 'B'] as const) {
      expect([...(await data(back.layers[i]![t]![m]))]).toEqual([...(await data(a.layers[i]![t]![m]))]);
    }
    const f = right(await openSafetensors(join(dir, 'adapter_model.safetensors'))());
    expect(f.tensors.map((t) => t.name).sort()).toContain('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight');
    expect(f.info('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight')?.shape).toEqual([3, 8]);
    await f.close();
  });

  /** A folder laid out as PEFT's save_pretrained writes one (bf16 weights, its own config fields, set-ordered targets). */
  const peftFolder = async (name: string, tensors: { name: string; shape: number[]; seed: number }[], cfg: Record<string, unknown> = {}) => {
    const dir = join(tmp.path, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({
      alpha_pattern: {}, auto_mapping: null, base_model_name_or_path: 'meta-llama/Llama-2-7b-hf', bias: 'none', fan_in_fan_out: false,
      inference_mode: true, init_lora_weights: true, layers_pattern: null, layers_to_transform: null, loftq_config: {}, lora_alpha: 16,
      lora_dropout: 0.1, megatron_config: null, megatron_core: 'megatron.core', modules_to_save: null, peft_type: 'LORA', r: 2,
      rank_pattern: {}, revision: null, target_modules: ['v_proj', 'q_proj'], task_type: 'CAUSAL_LM', use_dora: false, use_rslora: false, ...cfg,
    }));
    right(await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors.map((t) => ({
      name: t.name, dtype: 'BF16' as const, shape: t.shape, data: Float32Array.from(fillValues(t.shape[0]! * t.shape[1]!, 'unit', t.seed)),
    })))());
    return dir;
  };
  const key = (i: number, m: string, ab: string) => `base_model.model.model.layers.${i}.self_attn.${m}.lora_${ab}.weight`;
  const qv = (i: number) => [
    { name: key(i, 'q_proj', 'A'), shape: [2, 8], seed: 10 * i + 1 }, { name: key(i, 'q_proj', 'B'), shape: [8, 2], seed: 10 * i + 2 },
    { name: key(i, 'v_proj', 'A'), shape: [2, 8], seed: 10 * i + 3 }, { name: key(i, 'v_proj', 'B'), shape: [4, 2], seed: 10 * i + 4 },
  ];

  it('reads a folder written the way PEFT writes it (bf16, q/v targets, α 16, r 2)', async () => {
    const dir = await peftFolder('peft', [...qv(0), ...qv(1)]);
    const a = right(await loadAdapters(dir, base)());
    expect({ r: a.r, alpha: a.alpha, dropout: a.dropout, rslora: a.rslora, targets: a.targets }).toEqual({ r: 2, alpha: 16, dropout: 0.1, rslora: false, targets: ['wq', 'wv'] });
    expect(loraScale(a)).toBe(8);
    // bf16 of fillValues(…, seed 13): the file holds the top 16 bits (round to nearest even) of each f32.
    const want = Float32Array.from(fillValues(16, 'unit', 13)).map((v) => bf16ToF32(f32ToBf16(v)));
    expect([...(await data(a.layers[1]!.wv!.A))]).toEqual([...want]);
    expect(a.layers[0]!.w1).toBeUndefined();
  });

  it('mismatches are Lefts naming the key: shape, layer count, unknown target, missing adapter', async () => {
    const shape = await peftFolder('shape', [...qv(0), ...qv(1).slice(0, 3), { name: key(1, 'v_proj', 'B'), shape: [8, 2], seed: 9 }]);
    expect(leftMessage(await loadAdapters(shape, base)())).toMatch(/layers\.1\.self_attn\.v_proj\.lora_B\.weight.*expected \(4,2\).*file has \(8,2\)|expected \(4,2\).*file has \(8,2\).*v_proj\.lora_B/);
    const deep = await peftFolder('deep', [...qv(0), ...qv(1), ...qv(2)]);
    expect(leftMessage(await loadAdapters(deep, base)())).toMatch(/layers\.2\.self_attn\.q_proj\.lora_A\.weight|layer 2 does not exist/);
    expect(leftMessage(await loadAdapters(deep, base)())).toMatch(/base model has 2 layers/);
    const head = await peftFolder('head', [...qv(0), ...qv(1)], { target_modules: ['q_proj', 'v_proj', 'lm_head'] });
    expect(leftMessage(await loadAdapters(head, base)())).toMatch(/target_modules.*"lm_head"/);
    const stray = await peftFolder('stray', [...qv(0), ...qv(1), { name: key(0, 'k_proj', 'A'), shape: [2, 8], seed: 5 }]);
    expect(leftMessage(await loadAdapters(stray, base)())).toMatch(/k_proj\.lora_A\.weight.*not in the config's target_modules|not in the config's target_modules.*k_proj/);
    const missing = await peftFolder('missing', [...qv(0), ...qv(1).slice(1)]);
    expect(leftMessage(await loadAdapters(missing, base)())).toMatch(/layers\.1\.self_attn\.q_proj\.lora_A\.weight/);
    const fanIn = await peftFolder('fan', [...qv(0), ...qv(1)], { fan_in_fan_out: true });
    expect(leftMessage(await loadAdapters(fanIn, base)())).toMatch(/fan_in_fan_out/);
  });
});
