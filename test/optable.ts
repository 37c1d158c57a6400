// The one op table: every exported differentiable op with its input shapes, domain and tolerances.
// It drives the finite-difference gradient property (f64, interpreter) and the WebGPU differential tests (f32).

import fc from 'fast-check';
import * as C from '../index.js';
import type { Tensor } from '../index.js';
import type { FloatDType } from '../core/dtype.js';
import * as NN from '../ops/nn.js';

export type Shape = readonly number[];
/** any: (-2, 2) away from 0; pos: (0.2, 2.5); unit: (-0.9, 0.9) */
export type Domain = 'any' | 'pos' | 'unit';

export interface Case {
  readonly shapes: readonly Shape[];
  readonly domains: readonly Domain[];
  readonly f: (...xs: Tensor[]) => Tensor;
  readonly desc: string;
}
export interface OpEntry {
  readonly name: string;
  readonly cases: fc.Arbitrary<Case>;
  /** Absolute+relative tolerance for WebGPU f32 vs interpreter. */
  readonly tol32?: number;
}

const dim = fc.integer({ min: 1, max: 4 });
export const shapeArb = (minRank = 0, maxRank = 3): fc.Arbitrary<number[]> => fc.array(dim, { minLength: minRank, maxLength: maxRank });

/** A shape and a second one broadcast-compatible with it (some dims set to 1, some leading dims dropped). */
export const broadcastPair: fc.Arbitrary<[number[], number[]]> = shapeArb(0, 3).chain((s) =>
  fc.tuple(fc.constant(s), fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }), fc.integer({ min: 0, max: s.length }))
    .chain(([a, ones, drop]) => {
      const b = a.map((d, i) => (ones[i] ? 1 : d)).slice(drop);
      return fc.boolean().map((swap): [number[], number[]] => (swap ? [b, a] : [a, b]));
    }),
);

const unaryOp = (name: string, f: (x: Tensor) => Tensor, domain: Domain = 'any', tol32 = 2e-5): OpEntry => ({
  name, tol32, cases: shapeArb().map((s) => ({ shapes: [s], domains: [domain], f, desc: `${name}${JSON.stringify(s)}` })),
});
const binaryOp = (name: string, f: (a: Tensor, b: Tensor) => Tensor, domains: [Domain, Domain] = ['any', 'any'], tol32 = 2e-5): OpEntry => ({
  name, tol32, cases: broadcastPair.map(([a, b]) => ({ shapes: [a, b], domains, f, desc: `${name}${JSON.stringify([a, b])}` })),
});

/** A shape of rank ≥ 1 with a valid axis and keepDims flag. */
const axisCase = (minRank = 1) => shapeArb(minRank, 3).chain((s) =>
  fc.tuple(fc.constant(s), fc.integer({ min: -s.length, max: s.length - 1 }), fc.boolean()));
const axesCase = shapeArb(1, 3).chain((s) =>
  fc.tuple(fc.constant(s), fc.subarray([...s.keys()], { minLength: 1 }), fc.boolean()));

const reduceOp = (name: string, f: (x: Tensor, axes: number[], keepDims: boolean) => Tensor, domain: Domain = 'any', tol32 = 5e-5): OpEntry => ({
  name, tol32, cases: axesCase.map(([s, axes, k]) => ({ shapes: [s], domains: [domain], f: (x) => f(x, axes, k), desc: `${name}${JSON.stringify(s)} axes ${axes} keep ${k}` })),
});
const axisOp = (name: string, f: (x: Tensor, axis: number) => Tensor, tol32 = 5e-5): OpEntry => ({
  name, tol32, cases: axisCase().map(([s, a]) => ({ shapes: [s], domains: ['any'], f: (x) => f(x, a), desc: `${name}${JSON.stringify(s)} axis ${a}` })),
});

const perm = (n: number) => fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n });

export const OPS: readonly OpEntry[] = [
  unaryOp('neg', C.neg),
  unaryOp('exp', C.exp),
  unaryOp('exp2', C.exp2),
  unaryOp('log', C.log, 'pos'),
  unaryOp('log2', C.log2, 'pos'),
  unaryOp('sin', C.sin),
  unaryOp('cos', C.cos),
  unaryOp('sqrt', C.sqrt, 'pos'),
  unaryOp('rsqrt', C.rsqrt, 'pos'),
  unaryOp('recip', C.recip, 'pos'),
  unaryOp('square', C.square),
  unaryOp('abs', C.abs),
  unaryOp('relu', C.relu),
  unaryOp('sigmoid', C.sigmoid),
  unaryOp('tanh', C.tanh),
  unaryOp('silu', C.silu),
  unaryOp('gelu', C.gelu),
  unaryOp('gelu (exact)', (x) => C.gelu(x, { approximate: false })),
  unaryOp('erf', C.erf),
  unaryOp('softplus', C.softplus),
  unaryOp('logSigmoid', C.logSigmoid),
  unaryOp('sign·x', (x) => C.mul(C.sign(x), C.square(x))),
  unaryOp('clamp', (x) => C.clamp(x, -0.5, 0.7)),
  unaryOp('pow(x, 2.5)', (x) => C.pow(x, 2.5), 'pos'),
  unaryOp('pow(x, 3)', (x) => C.pow(x, 3)),
  unaryOp('pow(x, 13)', (x) => C.pow(x, 13), 'unit', 1e-4),
  unaryOp('pow(x, −2)', (x) => C.pow(x, -2)),
  binaryOp('add', C.add),
  binaryOp('sub', C.sub),
  binaryOp('mul', C.mul),
  binaryOp('div', C.div, ['any', 'pos']),
  binaryOp('maximum', C.maximum),
  binaryOp('minimum', C.minimum),
  binaryOp('pow', C.pow, ['pos', 'unit']),
  binaryOp('where', (a, b) => C.where(C.less(a, C.mul(b, 0.5)), a, b)),
  reduceOp('sum', (x, a, k) => C.sum(x, a, { keepDims: k })),
  reduceOp('max', (x, a, k) => C.max(x, a, { keepDims: k })),
  reduceOp('min', (x, a, k) => C.min(x, a, { keepDims: k })),
  reduceOp('mean', (x, a, k) => C.mean(x, a, { keepDims: k })),
  reduceOp('variance', (x, a, k) => C.variance(x, a, { keepDims: k })),
  reduceOp('logsumexp', (x, a, k) => C.logsumexp(x, a, { keepDims: k })),
  axisOp('softmax', C.softmax),
  axisOp('logSoftmax', C.logSoftmax),
  {
    name: 'reshape', cases: shapeArb(1, 3).chain((s) => fc.constantFrom([s.reduce((a, b) => a * b, 1)], [...s].reverse(), [1, ...s, 1], [-1])
      .map((t) => ({ shapes: [s], domains: ['any'] as Domain[], f: (x: Tensor) => C.reshape(x, t), desc: `reshape ${JSON.stringify(s)} → ${JSON.stringify(t)}` }))),
  },
  { name: 'permute', cases: shapeArb(1, 4).chain((s) => perm(s.length).map((p) => ({ shapes: [s], domains: ['any'] as Domain[], f: (x: Tensor) => C.permute(x, p), desc: `permute ${JSON.stringify(s)} ${p}` }))) },
  { name: 'transpose', cases: shapeArb(0, 3).map((s) => ({ shapes: [s], domains: ['any'] as Domain[], f: (x: Tensor) => C.transpose(x), desc: `transpose ${JSON.stringify(s)}` })) },
  { name: 'swapAxes', cases: shapeArb(2, 3).map((s) => ({ shapes: [s], domains: ['any'] as Domain[], f: (x: Tensor) => C.swapAxes(x), desc: `swapAxes ${JSON.stringify(s)}` })) },
  {
    name: 'pad', cases: shapeArb(1, 3).chain((s) => fc.array(fc.tuple(fc.nat(2), fc.nat(2)), { minLength: s.length, maxLength: s.length })
      .map((p) => ({ shapes: [s], domains: ['any'] as Domain[], f: (x: Tensor) => C.pad(x, p), desc: `pad ${JSON.stringify(s)} ${JSON.stringify(p)}` }))),
  },
  {
    name: 'slice', cases: shapeArb(1, 3).chain((s) => fc.tuple(...s.map((d) => fc.tuple(fc.nat(d - 1), fc.nat(d - 1)).map(([a, b]) => [Math.min(a, b), Math.max(a, b) + 1] as const)))
      .map((bs) => ({ shapes: [s], domains: ['any'] as Domain[], f: (x: Tensor) => C.slice(x, bs.map((b) => b[0]), bs.map((b) => b[1])), desc: `slice ${JSON.stringify(s)} ${JSON.stringify(bs)}` }))),
  },
  {
    name: 'shrink∘pad', cases: shapeArb(1, 3).map((s) => ({
      shapes: [s], domains: ['any'] as Domain[], f: (x: Tensor) => C.shrink(C.pad(x, s.map(() => [1, 2] as const)), s.map((d) => [0, d + 1] as const)), desc: `shrink∘pad ${JSON.stringify(s)}`,
    })),
  },
  { name: 'broadcastTo', cases: broadcastPair.map(([a, b]) => { const t = a.length >= b.length ? a : b; const s = t === a ? b : a; return ({ shapes: [s.map((d, i) => (d === t[t.length - s.length + i] ? d : 1))], domains: ['any'] as Domain[], f: (x: Tensor) => C.broadcastTo(x, t), desc: `broadcastTo ${JSON.stringify(t)}` }); }) },
  { name: 'squeeze', cases: shapeArb(0, 3).map((s) => ({ shapes: [[1, ...s, 1]], domains: ['any'] as Domain[], f: (x: Tensor) => C.squeeze(x), desc: `squeeze ${JSON.stringify(s)}` })) },
  { name: 'expandDims', cases: axisCase(1).map(([s, a]) => ({ shapes: [s], domains: ['any'] as Domain[], f: (x: Tensor) => C.expandDims(x, a), desc: `expandDims ${JSON.stringify(s)} ${a}` })) },
  {
    name: 'concat', cases: axisCase().chain(([s, a]) => fc.integer({ min: 1, max: 3 }).map((k) => {
      const ax = a < 0 ? a + s.length : a;
      const t = s.map((d, i) => (i === ax ? k : d));
      return { shapes: [s, t], domains: ['any', 'any'] as Domain[], f: (x: Tensor, y: Tensor) => C.concat([x, y, x], a), desc: `concat ${JSON.stringify([s, t])} axis ${a}` };
    })),
  },
  { name: 'stack', cases: axisCase().map(([s, a]) => ({ shapes: [s, s], domains: ['any', 'any'] as Domain[], f: (x: Tensor, y: Tensor) => C.stack([x, y], a), desc: `stack ${JSON.stringify(s)} ${a}` })) },
  {
    name: 'matmul', tol32: 1e-4, cases: fc.tuple(shapeArb(0, 2), shapeArb(0, 0), dim, dim, dim, fc.boolean()).map(([batch, , m, k, n, bcast]) => ({
      shapes: [[...batch, m, k], bcast ? [k, n] : [...batch, k, n]], domains: ['any', 'any'] as Domain[], f: C.matmul, desc: `matmul ${JSON.stringify([batch, m, k, n, bcast])}`,
    })),
  },
  {
    // x̄ = ḡ·deq(W) (the packed weight is a constant); odd element counts leave a padded nibble and a short block.
    name: 'nf4Linear', tol32: 1e-4, cases: fc.tuple(shapeArb(0, 1), dim, dim).map(([lead, k, n]) => ({
      shapes: [[...lead, k]], domains: ['any'] as Domain[], desc: `nf4Linear ${JSON.stringify([lead, k, n])}`,
      f: (x: Tensor) => C.nf4Linear(x, C.nf4Weight(C.quantizeNf4(fillValues(n * k, 'unit', 7 * n + k), [n, k], { blockSize: 32 }))),
    })),
  },
  { name: 'matmul (vectors)', tol32: 1e-4, cases: fc.tuple(dim, dim).map(([k, n]) => ({ shapes: [[k], [k, n]], domains: ['any', 'any'] as Domain[], f: C.matmul, desc: `vecmat ${k} ${n}` })) },
  {
    name: 'gather', cases: fc.tuple(dim, dim, fc.array(fc.nat(3), { minLength: 1, maxLength: 6 })).map(([v, d, ids]) => ({
      shapes: [[v + 3, d]], domains: ['any'] as Domain[], f: (t: Tensor) => C.gather(t, C.tensor(ids, { dtype: 'i32' })), desc: `gather ${v + 3}x${d} ${ids}`,
    })),
  },
  {
    name: 'scatterAdd', cases: fc.tuple(dim, fc.array(fc.nat(3), { minLength: 1, maxLength: 6 })).map(([d, ids]) => ({
      shapes: [[ids.length, d]], domains: ['any'] as Domain[], f: (u: Tensor) => C.scatterAdd(u, C.tensor(ids, { dtype: 'i32' }), 4), desc: `scatterAdd ${ids} x ${d}`,
    })),
  },
  // Neural-network compositions (ops/nn.ts).
  {
    name: 'linear', tol32: 1e-4, cases: fc.tuple(shapeArb(0, 2), dim, dim).map(([lead, k, n]) => ({
      shapes: [[...lead, k], [n, k]], domains: ['any', 'any'] as Domain[], f: NN.linear, desc: `linear ${JSON.stringify([lead, k, n])}`,
    })),
  },
  {
    name: 'rmsNorm', tol32: 1e-4, cases: shapeArb(1, 3).map((s) => ({
      shapes: [s, [s[s.length - 1]!]], domains: ['any', 'any'] as Domain[], f: (x: Tensor, w: Tensor) => NN.rmsNorm(x, w, 1e-5), desc: `rmsNorm ${JSON.stringify(s)}`,
    })),
  },
  {
    name: 'rope', tol32: 1e-4, cases: fc.tuple(dim, dim, dim, fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.nat(40)).map(([b, t, h, d2, perRow, p0]) => {
      const pos = perRow ? C.tensor(Array.from({ length: b }, (_, i) => Array.from({ length: t }, (_, j) => p0 + 3 * i + j)), { dtype: 'i32' }) : C.add(C.iota(t), p0);
      return { shapes: [[b, t, h, 2 * d2]], domains: ['any'] as Domain[], f: (x: Tensor) => NN.rope(x, pos, 10000), desc: `rope ${JSON.stringify([b, t, h, 2 * d2])} from ${p0}${perRow ? ' per row' : ''}` };
    }),
  },
  {
    // With `rope` (self-attention, an even head): q and k rotated inside the kernels, or by `rope` where they cannot.
    name: 'causalAttention', tol32: 1e-4, cases: fc.tuple(fc.integer({ min: 1, max: 2 }), dim, fc.nat(2), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.boolean())
      .map(([b, t, extra0, hkv, g, d0, padded, turned]) => {
        const d = turned ? 2 * d0 : d0, extra = turned ? 0 : extra0, s = t + extra;
        const start = padded ? { start: C.tensor(Array.from({ length: b }, (_, i) => Math.min(i, extra)), { dtype: 'i32' }) } : {};
        const rope = (q: Tensor) => (turned ? { rope: NN.ropeTable(C.iota(t), d, 100, q.dtype as FloatDType) } : {});
        return {
          shapes: [[b, t, hkv * g, d], [b, s, hkv, d], [b, s, hkv, d]], domains: ['any', 'any', 'any'] as Domain[],
          f: (q: Tensor, k: Tensor, v: Tensor) => NN.causalAttention(q, k, v, { offset: extra, ...start, ...rope(q) }),
          desc: `causalAttention B${b} T${t} S${s} Hkv${hkv} g${g} D${d}${padded ? ' start' : ''}${turned ? ' rope' : ''}`,
        };
      }),
  },
  {
    name: 'linears', tol32: 1e-4, cases: fc.tuple(shapeArb(0, 2), dim, dim, dim).map(([lead, d, o1, o2]) => ({
      shapes: [[...lead, d], [o1, d], [o2, d]], domains: ['any', 'any', 'any'] as Domain[],
      f: (x: Tensor, w1: Tensor, w2: Tensor) => C.concat(NN.linears(x, [w1, w2]), -1), desc: `linears ${JSON.stringify([lead, d, o1, o2])}`,
    })),
  },
  {
    name: 'swiglu', tol32: 1e-4, cases: fc.tuple(shapeArb(0, 2), dim, dim).map(([lead, d, h]) => ({
      shapes: [[...lead, d], [h, d], [h, d], [d, h]], domains: ['any', 'any', 'any', 'any'] as Domain[], f: NN.swiglu, desc: `swiglu ${JSON.stringify([lead, d, h])}`,
    })),
  },
  {
    name: 'crossEntropy', tol32: 1e-4, cases: fc.tuple(shapeArb(1, 2), fc.integer({ min: 2, max: 5 }), fc.integer({ min: 1, max: 1000 })).map(([lead, v, seed]) => {
      const n = lead.reduce((a, b) => a * b, 1);
      const ids = fillValues(n, 'unit', seed).map((u, i) => (i % 3 === 2 ? -100 : Math.floor(((u + 0.9) / 1.8) * v)));
      const targets = C.tensor(ids, { dtype: 'i32', shape: lead });
      return { shapes: [[...lead, v]], domains: ['any'] as Domain[], f: (l: Tensor) => NN.crossEntropy(l, targets), desc: `crossEntropy ${JSON.stringify(lead)} V${v} targets ${ids}` };
    }),
  },
  {
    name: 'embedding', cases: fc.tuple(dim, dim, fc.array(fc.nat(3), { minLength: 1, maxLength: 6 })).map(([v, d, ids]) => ({
      shapes: [[v + 3, d]], domains: ['any'] as Domain[], f: (t: Tensor) => NN.embedding(t, C.tensor(ids, { dtype: 'i32' })), desc: `embedding ${v + 3}x${d} ${ids}`,
    })),
  },
  {
    name: 'writeAt', cases: fc.tuple(dim, dim, dim, fc.nat(3)).map(([a, T, c, p]) => {
      const L = 1 + (p % 2), TT = T + L + 1, pos = p % (TT - L + 1);
      return { shapes: [[a, TT, c], [a, L, c]], domains: ['any', 'any'] as Domain[], f: (d: Tensor, x: Tensor) => C.writeAt(d, x, C.tensor(pos, { dtype: 'i32' }), 1), desc: `writeAt ${a}x${TT}x${c} ← ${L} at ${pos}` };
    }),
  },
];

/**
 * Exported functions that are not differentiable ops (constructors, comparisons, integer results, random,
 * the autodiff API itself, realisation), each with why. Every other export must appear in OPS.
 */
export const NOT_DIFFERENTIABLE: Readonly<Record<string, string>> = {
  tensor: 'constructor', fromStorage: 'constructor', full: 'constructor', zeros: 'constructor', ones: 'constructor',
  zerosLike: 'constructor', onesLike: 'constructor', arange: 'constructor', iota: 'integer constructor', scalar: 'constructor',
  less: 'bool result', greater: 'bool result', equal: 'bool result', lessEqual: 'bool result', greaterEqual: 'bool result', logicalNot: 'bool result',
  argmax: 'integer result', oneHot: 'integer input', sign: 'piecewise constant (tested as sign·x)',
  stopGradient: 'zero gradient by definition (tested in composite.test)', cast: 'crosses dtypes (tested in composite.test)',
  key: 'random', split: 'random', uniform: 'random', normal: 'random', bernoulli: 'random',
  vjp: 'autodiff API', grad: 'autodiff API', valueAndGrad: 'autodiff API',
  orThrow: 'I/O edge', loadTokenizer: 'I/O', tokenizerFromModelProto: 'I/O', tokenizerFromJson: 'I/O',
  setBackend: 'runtime', getBackend: 'runtime', jit: 'runtime (tested in jit.test)', deviceCounters: 'runtime', scope: 'runtime', realize: 'runtime', data: 'runtime', toArray: 'runtime', item: 'runtime',
  flatten: 'pytree', unflatten: 'pytree', leaves: 'pytree', mapTree: 'pytree', zipTrees: 'pytree',
  ropeTable: 'integer input (the rope row differentiates through the table it builds; values in nn.test)',
  shrink: 'tested as slice and shrink∘pad', clamp: 'in table', pow: 'in table',
  forward: 'a model, not an op (whole-model gradient checked in llama.test)', cacheWrite: 'KV-cache update (compared with the uncached path in llama.test)',
  initParams: 'random', emptyCache: 'constructor', checkParams: 'validation', layerShapes: 'config arithmetic', topShapes: 'config arithmetic',
  parseLlamaConfig: 'config', loadLlamaConfig: 'I/O', toHfConfig: 'config', loadLlama: 'I/O', saveLlama: 'I/O', toHfTensors: 'naming',
  generate: 'sampling', generateIds: 'sampling', sampleRow: 'sampling (host)',
  weightShape: 'shape arithmetic', nf4Dense: 'dequantisation of a constant weight (nf4.test)',
  lora: 'random init (lora.test)', withLora: 'parameter transformation (its linear: lora.test FD)', merge: 'parameter transformation (lora.test)',
  disable: 'parameter transformation (lora.test)', checkAdapters: 'validation', loraScale: 'hyperparameter arithmetic',
  saveAdapters: 'I/O', loadAdapters: 'I/O', peftKey: 'naming', quantizeNf4: 'quantisation (host; nf4.test)', dequantizeNf4: 'quantisation (host; nf4.test)',
  absmaxOf: 'quantisation (host)', nf4Weight: 'constructor', quantizeBase: 'quantisation (host)', projectionBytes: 'memory report',
  loadBnb4bit: 'I/O', saveBnb4bit: 'I/O', bnbTensors: 'I/O', readBnb: 'I/O', nf4FromWeight: 'I/O (reads a weight back)',
};

/** Inputs where numerics break: zeros of both signs, tiny, the f32 saturation points of exp/sigmoid/tanh (±20…±100),
 * huge, infinite, NaN. Finite differences are invalid at kinks and meaningless at ±inf, so these feed the
 * edge properties in grad.test (exact ties, f32 against f64, no NaN gradient at a finite input), not the FD check. */
export const EDGE_VALUES: readonly number[] = [
  0, -0, 1e-20, -1e-20, 1, -1, 3.9, -3.9, 20, -20, 50, -50, 88, -88, 89, -89, 90, -90, 100, -100, 1e30, -1e30, Infinity, -Infinity, NaN,
];
/** An edge value half of the time, else a double in [−120, 120] (exact in f32 after Math.fround). */
export const edgeValue: fc.Arbitrary<number> = fc.oneof(fc.constantFrom(...EDGE_VALUES), fc.double({ min: -120, max: 120, noNaN: true }).map(Math.fround));

/** Deterministic values in a domain from a seed (fast-check draws the seed). */
export const fillValues = (n: number, domain: Domain, seed: number): number[] => {
  let s = (seed >>> 0) || 1;
  const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 2 ** 32; };
  return Array.from({ length: n }, () => {
    const u = next();
    if (domain === 'pos') return 0.2 + 2.3 * u;
    if (domain === 'unit') return -0.9 + 1.8 * u;
    const m = 0.1 + 1.9 * next();
    return u < 0.5 ? -m : m;
  });
};
