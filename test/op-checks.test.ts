// Every check an op makes of its inputs, one bad input each: the error's class and its whole message (the op, what
// it needed, and the shapes and dtypes it got), and the nearest good input passing the same check — so a check that
// is dropped, loosened or tightened, or a message that loses the op's name or the shapes, fails here.
// (errors.test holds the first of these; this table covers the rest of ops/.)

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { DTypeError, GradError, ShapeError, setBackend } from '../index.js';
import { apply } from '../core/tensor.js';
import { addOp, iota } from '../ops/elementwise.js';
import { matmulOp } from '../ops/matmul.js';
import { expandOp, padOp, permuteOp } from '../ops/movement.js';
import { attentionOp, ropeOnLoadRefusal } from '../ops/attention.js';
import { nf4MatmulOp } from '../ops/nf4.js';
import { nf4Weight, quantizeNf4 } from '../models/nf4.js';
import { gpuDevice } from './gpu.js';

setBackend('cpu');

/** The error `f` throws (fails the test if it throws none). */
const thrown = (f: () => unknown): Error => {
  try { f(); } catch (e) { return e as Error; }
  throw new Error('expected a throw');
};
const check = (f: () => unknown, cls: new (...a: never[]) => Error, message: string) => {
  const e = thrown(f);
  expect(e.message).toBe(message);
  expect(e).toBeInstanceOf(cls);
  expect(e.name).toBe(cls.name); // what a stack trace and the CLI print before the message
};

const f32 = (...s: number[]) => C.zeros(s);
const i32 = (...s: number[]) => C.zeros(s, 'i32');
const u32 = (...s: number[]) => C.zeros(s, 'u32');

describe('elementwise checks', () => {
  it('unary float ops name themselves and the integer input; float inputs pass', () => {
    const ops: [string, (x: C.Tensor) => C.Tensor][] = [
      ['exp2', C.exp2], ['log2', C.log2], ['sin', C.sin], ['sqrt', C.sqrt], ['recip', C.recip], ['relu', C.relu],
      ['sigmoid', C.sigmoid], ['tanh', C.tanh], ['erf', C.erf], ['softplus', C.softplus], ['exp', C.exp], ['cos', C.cos],
    ];
    for (const [name, op] of ops) {
      check(() => op(i32(2)), DTypeError, `${name}: needs a float dtype, got i32(2,)`);
      expect(op(f32(2)).shape).toEqual([2]);
    }
  });

  it("a binary op record's own rule: operands of one dtype (lift casts numbers; two tensors must agree)", () => {
    check(() => apply(addOp, [i32(2), f32(2)]), DTypeError, 'add: dtype mismatch: i32(2,) vs f32(2,)');
    check(() => apply(addOp, [f32(2), f32(2), i32(2)]), DTypeError, 'add: dtype mismatch: f32(2,) vs f32(2,) vs i32(2,)');
    check(() => C.add(i32(2), f32(2)), DTypeError, 'add: dtype mismatch: i32(2,) vs f32(2,) (cast one operand first)');
    expect(apply(addOp, [i32(2), i32(2)]).dtype).toBe('i32');
  });

  it('where: a bool condition and branches of one dtype', () => {
    const cond = C.less(f32(2), 1);
    check(() => C.where(f32(2), f32(2), f32(2)), DTypeError, 'where: condition must be bool, got f32(2,)');
    check(() => C.where(cond, i32(2), f32(2)), DTypeError, 'where: dtype mismatch: i32(2,) vs f32(2,) (cast one operand first)');
    expect(C.where(cond, i32(2), i32(2)).dtype).toBe('i32');
  });

  it('iota: a length that is a non-negative integer (0 is one)', () => {
    check(() => iota(-1), DTypeError, 'iota: length must be a non-negative integer, got -1');
    check(() => iota(1.5), DTypeError, 'iota: length must be a non-negative integer, got 1.5');
    expect(iota(0).shape).toEqual([0]);
  });
});

describe('creation', () => {
  it('arange: stop alone counts from 0; steps up, down and fractional; the dtype asked for', async () => {
    expect(await C.toArray(C.arange(4))).toEqual([0, 1, 2, 3]);
    expect(await C.toArray(C.arange(2, 8, 2))).toEqual([2, 4, 6]);
    expect(await C.toArray(C.arange(2, 9, 2))).toEqual([2, 4, 6, 8]);
    expect(await C.toArray(C.arange(5, 0, -2))).toEqual([5, 3, 1]);
    expect(await C.toArray(C.arange(0, 1, 0.25))).toEqual([0, 0.25, 0.5, 0.75]);
    expect(C.arange(3, 1).shape).toEqual([0]);
    const i = C.arange(1, 4, 1, 'i32');
    expect([i.dtype, await C.toArray(i)]).toEqual(['i32', [1, 2, 3]]);
    expect([C.ones([2]).dtype, C.full([2], 3).dtype, C.arange(2).dtype]).toEqual(['f32', 'f32', 'f32']);
  });

  it('tensor: a typed array gives its dtype; an empty list is (0,); each bad element is named', () => {
    const typed: [ArrayLike<number>, string][] = [[new Float64Array(2), 'f64'], [new Int32Array(2), 'i32'], [new Uint32Array(2), 'u32'], [new Uint8Array(2), 'bool'], [new Float32Array(2), 'f32']];
    for (const [d, dtype] of typed) expect(C.tensor(d as never).dtype).toBe(dtype);
    expect(C.tensor([]).shape).toEqual([0]);
    check(() => C.tensor('x' as never), ShapeError, 'tensor: element at top is string, not a number');
    check(() => C.tensor([[1, null as never]]), ShapeError, 'tensor: element at [0][1] is object, not a number');
  });
});

describe('creation checks', () => {
  it('arange refuses step 0; tensor checks values against shapes', () => {
    check(() => C.arange(0, 3, 0), ShapeError, 'arange: step must not be 0');
    check(() => C.tensor([[1, 2], [3, 4]], { shape: [3] }), ShapeError, 'tensor: data of shape (2,2) does not fit shape (3,)');
    expect(C.tensor([[1, 2], [3, 4]], { shape: [4] }).shape).toEqual([4]);
    check(() => C.fromStorage(new Float32Array(3), [2, 2], 'f32'), ShapeError, 'tensor: 3 values do not fill shape (2,2) (4 elements)');
    check(() => C.tensor([[1], [true, 2] as never]), ShapeError, 'tensor: ragged nested array: [1] has shape (2,) but [0] has (1,)');
    expect(thrown(() => C.fromStorage(new Float32Array(2), [2, -1], 'f32')).message).toMatch(/^tensor: /);
    expect(thrown(() => C.tensor(Float32Array.from([1, 2]), { shape: [-2] })).message).toMatch(/^tensor: /);
  });
  it('zerosLike and onesLike keep shape and dtype', async () => {
    const x = C.tensor([[1, 2, 3]], { dtype: 'i32' });
    for (const [f, v] of [[C.zerosLike, 0], [C.onesLike, 1]] as const) {
      const y = f(x);
      expect([y.shape, y.dtype, Array.from(await C.data(y))]).toEqual([[1, 3], 'i32', [v, v, v]]);
    }
  });
  it('writeAt names itself for an axis out of range', () => {
    check(() => C.writeAt(f32(4), f32(1), C.tensor(0, { dtype: 'i32' }), 3), ShapeError, 'writeAt: axis 3 out of range for rank 1');
  });
});

describe('matmul checks', () => {
  it('rank ≥ 2, two float operands of one dtype, matching inner dimensions', () => {
    // The op itself takes matrices; matmul() lifts vectors as NumPy does (below).
    check(() => apply(matmulOp, [f32(3), f32(3, 2)]), ShapeError, 'matmul: operands must have rank ≥ 2, got (3,) and (3,2)');
    check(() => apply(matmulOp, [f32(2, 3), f32(3)]), ShapeError, 'matmul: operands must have rank ≥ 2, got (2,3) and (3,)');
    check(() => C.matmul(f32(2, 3), C.zeros([3, 2], 'f64')), DTypeError, 'matmul: needs two float operands of one dtype, got f32(2,3) and f64(3,2)');
    check(() => C.matmul(i32(2, 3), i32(3, 2)), DTypeError, 'matmul: needs two float operands of one dtype, got i32(2,3) and i32(3,2)');
    expect(C.matmul(C.zeros([2, 3], 'f64'), C.zeros([3, 2], 'f64')).shape).toEqual([2, 2]);
  });

  it('vectors as NumPy takes them: (k)·(k, n) → (n), (m, k)·(k) → (m), (k)·(k) → (), batches kept', async () => {
    const m = C.tensor([[1, 2], [3, 4], [5, 6]]); // (3, 2)
    expect(await C.toArray(C.matmul(C.tensor([1, 0, 2]), m))).toEqual([11, 14]);
    expect(await C.toArray(C.matmul(m, C.tensor([1, -1])))).toEqual([-1, -1, -1]);
    expect(await C.toArray(C.matmul(C.tensor([1, 2, 3]), C.tensor([4, 5, 6])))).toEqual(32);
    const batch = C.tensor([[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]]); // (2, 2, 3)
    expect(await C.toArray(C.matmul(batch, m))).toEqual([[[1, 2], [3, 4]], [[5, 6], [9, 12]]]);
    expect(await C.toArray(C.matmul(batch, C.tensor([1, 2, 3])))).toEqual([[1, 2], [3, 6]]);
    expect(await C.toArray(C.matmul(C.tensor([1, 1]), C.reshape(C.arange(0, 12), [2, 2, 3])))).toEqual([[3, 5, 7], [15, 17, 19]]);
  });
});

describe('movement checks', () => {
  it('pad, expand, reshape with -1, concat and stack of nothing', () => {
    check(() => C.pad(f32(2, 3), [[0, 1], [-1, 0]]), ShapeError, 'pad: [[0,1],[-1,0]] must give [before, after] ≥ 0 for each axis of (2,3)');
    check(() => C.pad(f32(2, 3), [[0, 1]]), ShapeError, 'pad: [[0,1]] must give [before, after] ≥ 0 for each axis of (2,3)');
    expect(C.pad(f32(2, 3), [[0, 0], [0, 0]]).shape).toEqual([2, 3]);
    check(() => C.reshape(f32(0, 3), [-1, 0]), ShapeError, 'reshape: cannot infer -1 in (-1,0) for (0,3)');
    check(() => C.reshape(f32(2, 3), [-1, 4]), ShapeError, 'reshape: cannot infer -1 in (-1,4) for (2,3)');
    expect(C.reshape(f32(2, 3), [-1, 2]).shape).toEqual([3, 2]);
    check(() => C.concat([], 0), ShapeError, 'concat: no tensors');
    check(() => C.stack([], 0), ShapeError, 'stack: no tensors');
    check(() => C.broadcastTo(f32(2, 1), [3]), ShapeError, 'broadcastTo: cannot broadcast (2,1) to (3,)');
  });
  it('each refusal names the function called, not the op it is built from', () => {
    check(() => C.swapAxes(f32(2, 3), 0, 5), ShapeError, 'swapAxes: axis 5 out of range for rank 2');
    check(() => C.swapAxes(f32(2, 3), 5, 0), ShapeError, 'swapAxes: axis 5 out of range for rank 2');
    check(() => C.squeeze(f32(2, 3), 0), ShapeError, 'squeeze: axis 0 of (2,3) has size 2, not 1');
    check(() => C.squeeze(f32(2, 3), 4), ShapeError, 'squeeze: axis 4 out of range for rank 2');
    check(() => C.expandDims(f32(2, 3), 5), ShapeError, 'expandDims: axis 5 out of range for rank 3');
    check(() => C.concat([f32(2, 3), f32(2, 3)], 4), ShapeError, 'concat: axis 4 out of range for rank 2');
    check(() => C.reshape(f32(2, 3), [4]), ShapeError, 'reshape: cannot reshape (2,3) (6 elements) to (4,) (4 elements)');
    check(() => C.matmul(f32(2, 3), f32(4, 2)), ShapeError, 'matmul: cannot contract (2,3) with (4,2): inner dimensions 3 and 4 differ');
    check(() => C.matmul(f32(2, 3), C.zeros([3, 2], 'f64')), DTypeError, 'matmul: needs two float operands of one dtype, got f32(2,3) and f64(3,2)');
    check(() => C.gelu(i32(2)), DTypeError, 'gelu: needs a float dtype, got i32(2,)');
    check(() => C.argmax(f32(2, 3), 4), ShapeError, 'argmax: axis 4 out of range for rank 2');
    for (const [name, f] of [['mean', C.mean], ['variance', C.variance], ['logsumexp', C.logsumexp], ['softmax', C.softmax], ['logSoftmax', C.logSoftmax]] as const) {
      check(() => f(f32(2, 3), 4), ShapeError, `${name}: axis 4 out of range for rank 2`);
      check(() => f(C.zeros([2], 'bool') as never, 0), ShapeError, `${name}: cannot reduce a bool tensor (2,); cast it first`);
    }
    check(() => C.mean(f32(2, 3), [1, -1]), ShapeError, 'mean: repeated axis in [1,-1]');
  });
});

describe('nf4 checks', () => {
  const q = quantizeNf4(Array.from({ length: 64 * 2 }, (_, i) => Math.sin(i)), [2, 64], { blockSize: 64, doubleQuant: true });
  const w = nf4Weight(q);
  const single = nf4Weight(quantizeNf4(Array.from({ length: 128 }, (_, i) => Math.cos(i)), [2, 64], { blockSize: 64, doubleQuant: false }));

  it('an input whose last axis is the weight\'s in; the op takes float (M, K) and the statistics of its kind', () => {
    check(() => C.nf4Linear(f32(3, 32), w), ShapeError, 'linear: input (3,32) does not match an NF4 weight (2,64)');
    expect(C.nf4Linear(f32(4, 3, 64), w).shape).toEqual([4, 3, 2]);
    expect(C.nf4Linear(f32(3, 64), single).shape).toEqual([3, 2]);
    const stats = [w.quantMap, w.absmaxCodes!, w.absmax2!, w.offset!, w.nestedMap!];
    const arg = { transpose: false, out: 2, in: 64, blockSize: 64, double: true };
    check(() => apply(nf4MatmulOp, [f32(3, 32), w.codes, ...stats], arg), ShapeError, 'nf4Matmul: input must be float (M, 64) for an NF4 weight (2, 64), got f32(3,32)');
    check(() => apply(nf4MatmulOp, [f32(1, 3, 64), w.codes, ...stats], arg), ShapeError, 'nf4Matmul: input must be float (M, 64) for an NF4 weight (2, 64), got f32(1,3,64)');
    check(() => apply(nf4MatmulOp, [i32(3, 64), w.codes, ...stats], arg), ShapeError, 'nf4Matmul: input must be float (M, 64) for an NF4 weight (2, 64), got i32(3,64)');
    check(() => apply(nf4MatmulOp, [f32(3, 64), w.codes, ...stats], { ...arg, transpose: true }), ShapeError, 'nf4Matmul: input must be float (M, 2) for an NF4 weight (2, 64) read transposed, got f32(3,64)');
    expect(apply(nf4MatmulOp, [f32(3, 2), w.codes, ...stats], { ...arg, transpose: true }).shape).toEqual([3, 64]);
    check(() => apply(nf4MatmulOp, [f32(3, 64), w.codes, ...stats.slice(0, 4)], arg), ShapeError, 'nf4Matmul: expected 6 statistics tensors, got 5');
    check(() => apply(nf4MatmulOp, [f32(3, 64), w.codes, ...stats, f32(1)], arg), ShapeError, 'nf4Matmul: expected 6 statistics tensors, got 7');
    check(() => apply(nf4MatmulOp, [f32(3, 64), w.codes, ...stats], { ...arg, double: false }), ShapeError, 'nf4Matmul: expected 3 statistics tensors, got 6');
    const swap = (i: number, t: C.Tensor) => stats.map((s, j) => (j === i ? t : s));
    const msg = (what: string, got: string) => `nf4Matmul: ${what} for a weight (2, 64) in blocks of 64, got ${got}`;
    check(() => apply(nf4MatmulOp, [f32(3, 64), w.codes, ...swap(2, u32(1))], arg), DTypeError, msg('absmax2 must be f32(1,)', 'u32(1,)'));
    check(() => apply(nf4MatmulOp, [f32(3, 64), w.codes, ...swap(1, u32(2))], arg), DTypeError, msg('absmaxCodes must be u32(1,)', 'u32(2,)'));
    check(() => apply(nf4MatmulOp, [f32(3, 64), w.codes, ...swap(4, f32(1, 256))], arg), DTypeError, msg('nestedMap must be f32(256,)', 'f32(1,256)'));
    check(() => apply(nf4MatmulOp, [f32(3, 64), u32(8), ...stats], arg), DTypeError, msg('codes must be u32(16,)', 'u32(8,)'));
    check(() => apply(nf4MatmulOp, [f32(3, 64), single.codes, single.quantMap, f32(3)], { ...arg, double: false }), DTypeError, msg('absmax must be f32(2,)', 'f32(3,)'));
    check(() => C.nf4Dense({ ...w, absmax2: undefined }), ShapeError, 'nf4: weight (2,64) has neither absmax nor double-quantised statistics');
    check(() => C.nf4Linear(f32(3, 64), { ...w, nestedMap: undefined }), ShapeError, 'nf4: weight (2,64) has neither absmax nor double-quantised statistics');
  });
});

describe('movement rules and shortcuts', () => {
  it('the movement op records check their arguments (the wrappers lift or shortcut some of them)', () => {
    const x = f32(2, 1);
    check(() => C.permute(f32(2, 3), [0]), ShapeError, 'permute: [0] is not a permutation of the axes of (2,3)');
    check(() => C.permute(f32(2, 3), [1, 2]), ShapeError, 'permute: axis 2 out of range for rank 2');
    check(() => apply(permuteOp, [f32(2, 3)], { perm: [1, 1] }), ShapeError, 'permute: [1,1] is not a permutation of the axes of (2,3)');
    check(() => apply(expandOp, [x], { shape: [2, 3, 1] }), ShapeError, 'expand: cannot expand (2,1) to (2,3,1)');
    check(() => apply(expandOp, [x], { shape: [3, 3] }), ShapeError, 'expand: cannot expand (2,1) to (3,3)');
    expect(apply(expandOp, [x], { shape: [2, 3] }).shape).toEqual([2, 3]);
    for (const pads of [[[0, 0]], [[0, 0], [-1, 0]], [[0, 0.5], [0, 0]], [[0, 0], [0, -2]], [[1.5, 0], [0, 0]]]) {
      check(() => apply(padOp, [x], { pads }), ShapeError, `pad: ${JSON.stringify(pads)} must give [before, after] ≥ 0 for each axis of (2,1)`);
    }
    expect(apply(padOp, [x], { pads: [[1, 0], [0, 2]] }).shape).toEqual([3, 3]);
    for (const bounds of [[[0, 2]], [[-1, 1], [0, 1]], [[1, 0], [0, 1]], [[0, 3], [0, 1]], [[0, 1.5], [0, 1]], [[0.5, 1], [0, 1]]]) {
      check(() => C.shrink(x, bounds as never), ShapeError, `slice: bounds ${JSON.stringify(bounds)} do not fit (2,1)`);
    }
    expect(C.shrink(x, [[1, 1], [0, 1]]).shape).toEqual([0, 1]);
    check(() => C.concat([f32(2, 3), f32(2, 3, 1)], 0), ShapeError, 'concat: shapes (2,3), (2,3,1) differ off axis 0');
    expect(C.concat([f32(2, 3), f32(4, 3)], 0).shape).toEqual([6, 3]);
  });

  it('no-op movements give back the tensor itself (a list too short for the rank is no no-op); a slice of a pad that is its source is the source', () => {
    const x = f32(2, 3);
    expect(C.reshape(x, [2, 3])).toBe(x);
    expect(C.reshape(x, [-1, 3])).toBe(x);
    expect(C.permute(x, [0, 1])).toBe(x);
    expect(C.permute(x, [1, 0]).shape).toEqual([3, 2]);
    expect(C.pad(x, [[0, 0], [0, 0]])).toBe(x);
    check(() => C.pad(x, [[0, 0]]), ShapeError, 'pad: [[0,0]] must give [before, after] ≥ 0 for each axis of (2,3)'); // not a no-op: too few axes
    check(() => C.shrink(x, [[0, 2]]), ShapeError, 'slice: bounds [[0,2]] do not fit (2,3)');
    expect(C.pad(x, [[0, 0], [0, 1]]).shape).toEqual([2, 4]);
    expect(C.shrink(x, [[0, 2], [0, 3]])).toBe(x);
    const padded = C.pad(x, [[1, 2], [0, 1]]); // (5, 4)
    expect(C.shrink(padded, [[1, 3], [0, 3]]).node).toBe(x.node);
    for (const other of [[[0, 2], [0, 3]], [[1, 3], [1, 4]], [[1, 3], [0, 2]]] as const) expect(C.shrink(padded, other).node).not.toBe(x.node);
  });

  it('squeeze takes every size-1 axis unless told; stack takes negative axes from the end of the result', () => {
    expect(C.squeeze(f32(1, 3, 1)).shape).toEqual([3]);
    expect(C.squeeze(f32(1, 3, 1), -1).shape).toEqual([1, 3]);
    expect(C.stack([f32(2, 3), f32(2, 3)], -1).shape).toEqual([2, 3, 2]);
    expect(C.stack([f32(2, 3), f32(2, 3)], -3).shape).toEqual([2, 2, 3]);
    expect(C.stack([f32(2, 3), f32(2, 3)], 1).shape).toEqual([2, 2, 3]);
  });
});

describe('gather and scatter checks', () => {
  it('a table of rank ≥ 1; updates that start with the index shape', () => {
    check(() => C.gather(C.tensor(1), i32(2)), ShapeError, 'gather: table must have rank ≥ 1, got ()');
    check(() => C.scatterAdd(f32(3, 4), i32(2), 5), ShapeError, 'scatterAdd: updates (3,4) must start with the index shape (2,)');
    check(() => C.scatterAdd(f32(2, 4), f32(2), 5), DTypeError, 'scatterAdd: indices must be i32 or u32, got f32(2,)');
    expect(C.scatterAdd(f32(2, 4), u32(2), 5).shape).toEqual([5, 4]);
  });
});

describe('grad checks', () => {
  it('vjp: a cotangent of the output tree, leaf for leaf in shape and dtype', () => {
    const [, back] = C.vjp((x: C.Tensor) => [C.mul(x, 2), C.sum(x)], f32(3));
    check(() => back([f32(3)]), GradError, 'vjp: cotangent has 1 leaves, output has 2');
    check(() => back([f32(3), f32(2)]), ShapeError, 'vjp: cotangent 1 is f32(2,), output is f32()');
    check(() => back([C.zeros([3], 'f64'), f32()]), ShapeError, 'vjp: cotangent 0 is f64(3,), output is f32(3,)');
    expect(back([f32(3), f32()]).shape).toEqual([3]);
  });

  it('grad and valueAndGrad: a scalar value; with hasAux a [value, aux] pair', () => {
    check(() => C.grad(() => 3 as never)(f32(2)), GradError, 'grad: the function must return a scalar tensor');
    check(() => C.grad((x: C.Tensor) => x)(f32(2)), GradError, 'grad: the function must return a scalar tensor, got (2,)');
    check(() => C.valueAndGrad((x: C.Tensor) => x)(f32(2)), GradError, 'valueAndGrad: the function must return a scalar tensor, got (2,)');
    check(() => C.valueAndGrad((x: C.Tensor) => C.sum(x) as never, { hasAux: true })(f32(2)), GradError, 'valueAndGrad: with hasAux the function must return [value, aux]');
    check(() => C.valueAndGrad((x: C.Tensor) => [C.sum(x)] as never, { hasAux: true })(f32(2)), GradError, 'valueAndGrad: with hasAux the function must return [value, aux]');
    expect(C.grad((x: C.Tensor) => C.sum(x))(f32(1, 1)).shape).toEqual([1, 1]);
  });
});

describe('nn checks', () => {
  it('linear: an (out, in) weight; LoRA factors (r, in) and (out, r); dropout below 1', () => {
    check(() => C.linear(f32(2, 3), f32(3)), ShapeError, 'linear: weight must be (out, in), got (3,)');
    const lora = (A: C.Tensor, B: C.Tensor, dropout = 0): C.LoraWeight => ({ kind: 'lora', base: f32(4, 3), A, B, scale: 1, dropout, key: C.key(1) });
    const msg = (a: string, b: string) => `linear: LoRA A ${a} and B ${b} must be (r, in) and (out, r) for a weight (4,3)`;
    check(() => C.linear(f32(2, 3), lora(f32(2, 4), f32(4, 2))), ShapeError, msg('(2,4)', '(4,2)'));
    check(() => C.linear(f32(2, 3), lora(f32(2, 3), f32(5, 2))), ShapeError, msg('(2,3)', '(5,2)'));
    check(() => C.linear(f32(2, 3), lora(f32(2, 3), f32(4, 1))), ShapeError, msg('(2,3)', '(4,1)'));
    check(() => C.linear(f32(2, 3), lora(f32(6), f32(4, 2))), ShapeError, msg('(6,)', '(4,2)'));
    check(() => C.linear(f32(2, 3), lora(f32(2, 3), f32(8))), ShapeError, msg('(2,3)', '(8,)'));
    // A trailing axis of 1 keeps every length right: only the ranks tell.
    check(() => C.linear(f32(2, 3), lora(f32(2, 3, 1), f32(4, 2))), ShapeError, msg('(2,3,1)', '(4,2)'));
    check(() => C.linear(f32(2, 3), lora(f32(2, 3), f32(4, 2, 1))), ShapeError, msg('(2,3)', '(4,2,1)'));
    check(() => C.linear(f32(2, 3), lora(f32(2, 3), f32(4, 2), 1)), RangeError, 'linear: LoRA dropout must be in [0, 1), got 1');
    expect(C.linear(f32(2, 3), lora(f32(2, 3), f32(4, 2), 0.5)).shape).toEqual([2, 4]);
  });

  it('rmsNorm: a weight the length of the last axis', () => {
    check(() => C.rmsNorm(f32(2, 3), f32(2), 1e-5), ShapeError, 'rmsNorm: weight (2,) does not match the last axis of (2,3)');
    check(() => C.rmsNorm(f32(2, 3), f32(1, 3), 1e-5), ShapeError, 'rmsNorm: weight (1,3) does not match the last axis of (2,3)');
    check(() => C.rmsNorm(f32(2, 3), f32(3, 1), 1e-5), ShapeError, 'rmsNorm: weight (3,1) does not match the last axis of (2,3)');
  });

  it('ropeTable: integer positions (T,) or (B, T) and an even head dimension', () => {
    check(() => C.ropeTable(f32(4), 8, 1e4), DTypeError, 'ropeTable: positions must be i32 or u32, got f32(4,)');
    check(() => C.ropeTable(i32(), 8, 1e4), ShapeError, 'ropeTable: positions must be (T,) or (B, T), got ()');
    check(() => C.ropeTable(i32(1, 2, 4), 8, 1e4), ShapeError, 'ropeTable: positions must be (T,) or (B, T), got (1,2,4)');
    for (const d of [7, 0, -2, 2.5]) check(() => C.ropeTable(i32(4), d, 1e4), ShapeError, `ropeTable: head dimension must be even, got ${d}`);
    expect(C.ropeTable(u32(2, 4), 2, 1e4).shape).toEqual([2, 4, 1, 2]);
  });

  it('rope: x (…, T, H, even headDim) of floats, and positions or a table that match it', () => {
    check(() => C.rope(f32(4, 8), i32(4), 1e4), ShapeError, 'rope: x must be (…, T, H, headDim), got (4,8)');
    check(() => C.rope(f32(4, 2, 7), i32(4), 1e4), ShapeError, 'rope: head dimension must be even, got (4,2,7)');
    check(() => C.rope(f32(4, 2, 8), i32(5), 1e4), ShapeError, 'rope: positions (5,) do not match T = 4 of (4,2,8)');
    check(() => C.rope(f32(4, 2, 8), i32(4)), RangeError, 'rope: integer positions need theta (or pass a ropeTable)');
    check(() => C.rope(i32(4, 2, 8), i32(4), 1e4), DTypeError, 'rope: x must be a float tensor, got i32(4,2,8)');
    const table = C.ropeTable(i32(4), 8, 1e4); // (4, 1, 8)
    const bad = (t: C.Tensor) => `rope: table ${t.dtype}${`(${t.shape.join(',')}${t.shape.length === 1 ? ',' : ''})`} must be f32 (…, T, 1, headDim) for x f32(4,2,8)`;
    for (const t of [f32(1, 8), f32(4, 1, 6), f32(4, 2, 8), f32(5, 1, 8), C.cast(table, 'f64')]) check(() => C.rope(f32(4, 2, 8), t), ShapeError, bad(t));
    expect(C.rope(f32(4, 2, 8), table).shape).toEqual([4, 2, 8]);
  });

  it('causalAttention: (B, T, H, D) queries, keys and values of matching heads, an i32 scalar offset, (B,) i32 starts', () => {
    const q = f32(2, 3, 4, 8), k = f32(2, 5, 2, 8);
    const bad = (qs: string, ks: string, vs: string) => `causalAttention: q ${qs}, k ${ks}, v ${vs} must be (B, T, H, D), (B, S, Hkv, D), (B, S, Hkv, D) with Hkv dividing H`;
    check(() => C.causalAttention(f32(3, 4, 8), k, k), ShapeError, bad('(3,4,8)', '(2,5,2,8)', '(2,5,2,8)'));
    check(() => C.causalAttention(q, f32(5, 2, 8), k), ShapeError, bad('(2,3,4,8)', '(5,2,8)', '(2,5,2,8)'));
    check(() => C.causalAttention(q, k, f32(5, 2, 8)), ShapeError, bad('(2,3,4,8)', '(2,5,2,8)', '(5,2,8)'));
    check(() => C.causalAttention(q, f32(1, 5, 2, 8), f32(1, 5, 2, 8)), ShapeError, bad('(2,3,4,8)', '(1,5,2,8)', '(1,5,2,8)'));
    check(() => C.causalAttention(q, f32(2, 5, 2, 4), f32(2, 5, 2, 4)), ShapeError, bad('(2,3,4,8)', '(2,5,2,4)', '(2,5,2,4)'));
    check(() => C.causalAttention(q, f32(2, 5, 3, 8), f32(2, 5, 3, 8)), ShapeError, bad('(2,3,4,8)', '(2,5,3,8)', '(2,5,3,8)'));
    check(() => C.causalAttention(q, k, f32(2, 5, 2, 4)), ShapeError, bad('(2,3,4,8)', '(2,5,2,8)', '(2,5,2,4)'));
    // Extra or missing trailing axes that every other check lets through: only the ranks tell.
    check(() => C.causalAttention(f32(2, 3, 4, 8, 1), k, k), ShapeError, bad('(2,3,4,8,1)', '(2,5,2,8)', '(2,5,2,8)'));
    check(() => C.causalAttention(q, f32(2, 5, 2, 8, 1), f32(2, 5, 2, 8, 1)), ShapeError, bad('(2,3,4,8)', '(2,5,2,8,1)', '(2,5,2,8,1)'));
    check(() => C.causalAttention(q, k, f32(2, 5, 2)), ShapeError, bad('(2,3,4,8)', '(2,5,2,8)', '(2,5,2)'));
    check(() => C.causalAttention(q, k, k, { offset: f32() }), DTypeError, 'causalAttention: a tensor offset must be an i32 scalar, got f32()');
    check(() => C.causalAttention(q, k, k, { offset: i32(1) }), DTypeError, 'causalAttention: a tensor offset must be an i32 scalar, got i32(1,)');
    check(() => C.causalAttention(q, k, k, { start: i32(3) }), ShapeError, 'causalAttention: start must be (B,) = (2,) i32, got i32(3,)');
    check(() => C.causalAttention(q, k, k, { start: i32(2, 1) }), ShapeError, 'causalAttention: start must be (B,) = (2,) i32, got i32(2,1)');
    check(() => C.causalAttention(q, k, k, { start: u32(2) }), ShapeError, 'causalAttention: start must be (B,) = (2,) i32, got u32(2,)');
    expect(C.causalAttention(q, k, k, { offset: C.tensor(2, { dtype: 'i32' }), start: i32(2) }).shape).toEqual([2, 3, 4, 8]);
  });

  it('RoPE on load only for self-attention from slot 0, with a table of q\'s dtype and shape, and heads of whole vec4 halves', () => {
    const g = { B: 1, T: 4, H: 2, Hkv: 2, D: 8, S: 4 };
    const why = 'RoPE on load is for self-attention from slot 0 (S = T, offset 0, no start)';
    const table = C.ropeTable(i32(4), 8, 1e4);
    expect(ropeOnLoadRefusal(g as never, { kv: 'bshd', offset: 0, start: false }, table, 'f32')).toBeNull();
    expect(ropeOnLoadRefusal(g as never, { kv: 'bhsd', offset: 0, start: false }, table, 'f32')).toBe(why);
    expect(ropeOnLoadRefusal({ ...g, S: 6 } as never, { kv: 'bshd', offset: 0, start: false }, table, 'f32')).toBe(why);
    expect(ropeOnLoadRefusal(g as never, { kv: 'bshd', offset: 2, start: false }, table, 'f32')).toBe(why);
    expect(ropeOnLoadRefusal(g as never, { kv: 'bshd', offset: null, start: false }, table, 'f32')).toBe(why);
    expect(ropeOnLoadRefusal(g as never, { kv: 'bshd', offset: 0, start: true }, table, 'f32')).toBe(why);
    const shaped = (s: number[], dtype = 'f32') => ropeOnLoadRefusal(g as never, { kv: 'bshd', offset: 0, start: false }, { shape: s, dtype }, 'f32');
    const wrong = (s: string, dtype = 'f32') => `the RoPE table ${dtype}${s} must be f32 (T, 1, D) or (B, T, 1, D)`;
    expect(shaped([1, 4, 1, 8])).toBeNull();
    expect([shaped([4, 1, 8], 'f64'), shaped([2, 4, 1, 8]), shaped([4, 8]), shaped([5, 1, 8]), shaped([4, 2, 8]), shaped([4, 1, 6]), shaped([1, 1, 4, 1, 8])])
      .toEqual([wrong('(4,1,8)', 'f64'), wrong('(2,4,1,8)'), wrong('(4,8)'), wrong('(5,1,8)'), wrong('(4,2,8)'), wrong('(4,1,6)'), wrong('(1,1,4,1,8)')]);
    const d4 = { ...g, D: 12 };
    expect(ropeOnLoadRefusal(d4 as never, { kv: 'bshd', offset: 0, start: false }, { shape: [4, 1, 12], dtype: 'f32' }, 'f32')).toBe('RoPE on load needs a head size divisible by 8 or not by 4, got 12');
    expect(ropeOnLoadRefusal({ ...g, D: 6 } as never, { kv: 'bshd', offset: 0, start: false }, { shape: [4, 1, 6], dtype: 'f32' }, 'f32')).toBeNull();
  });

  it('crossEntropy: integer targets, logits = targets plus a class axis; u32 targets cannot be −100, so none is ignored', async () => {
    check(() => C.crossEntropy(f32(2, 5), f32(2)), DTypeError, 'crossEntropy: targets must be i32 or u32, got f32(2,)');
    check(() => C.crossEntropy(f32(2, 5), i32(3)), ShapeError, 'crossEntropy: logits (2,5) must be targets (3,) plus a class axis');
    check(() => C.crossEntropy(f32(2, 5), i32(2, 1)), ShapeError, 'crossEntropy: logits (2,5) must be targets (2,1) plus a class axis');
    expect(await C.toArray(C.crossEntropy(f32(2, 5), u32(2)))).toBeCloseTo(Math.log(5), 6);
    expect(await C.toArray(C.crossEntropy(f32(2, 5), C.tensor([0, 3], { dtype: 'u32' }), { ignoreIndex: 3 }))).toBeCloseTo(Math.log(5), 6);
    // Logits that tell the rows apart: an ignore index u32 targets can hold (0 or 3) drops exactly its rows.
    const lg = C.tensor([[0, 0, 0, 0, 0], [1, 0, 0, 5, 0]]);
    const lse2 = Math.log(Math.exp(1) + 3 + Math.exp(5));
    expect(await C.toArray(C.crossEntropy(lg, C.tensor([0, 3], { dtype: 'u32' }), { ignoreIndex: 0 }))).toBeCloseTo(lse2 - 5, 5);
    expect(await C.toArray(C.crossEntropy(lg, C.tensor([0, 3], { dtype: 'u32' }), { ignoreIndex: 3 }))).toBeCloseTo(Math.log(5), 5);
    expect(await C.toArray(C.crossEntropy(lg, C.tensor([0, 3], { dtype: 'u32' })))).toBeCloseTo((Math.log(5) + lse2 - 5) / 2, 5);
    // Ranks that only the rank check catches: targets as long as the logits; a leading axis that differs.
    check(() => C.crossEntropy(f32(2, 5), i32(2, 5)), ShapeError, 'crossEntropy: logits (2,5) must be targets (2,5) plus a class axis');
    check(() => C.crossEntropy(f32(2, 3, 5), i32(2, 4)), ShapeError, 'crossEntropy: logits (2,3,5) must be targets (2,4) plus a class axis');
    expect(await C.toArray(C.crossEntropy(f32(2, 5), C.tensor([-100, 1], { dtype: 'i32' })))).toBeCloseTo(Math.log(5), 6);
  });
});

describe('random, reduce and update checks', () => {
  it('a random key is u32 (2,)', () => {
    for (const k of [u32(3), i32(2), u32(1, 2)]) {
      check(() => C.uniform(k as C.Key, [2]), DTypeError, `random: a key is a u32 tensor of shape (2,), got ${k.dtype}(${k.shape.join(',')}${k.rank === 1 ? ',' : ''})`);
    }
  });

  it('reductions of bool tensors are refused by name', () => {
    for (const [name, op] of [['sum', C.sum], ['max', C.max], ['min', C.min]] as const) {
      check(() => op(C.less(f32(2, 2), 1)), ShapeError, `${name}: cannot reduce a bool tensor (2,2); cast it first`);
    }
  });

  it('min of i32 to the ends of its range (no negation, which wraps at −2³¹); u32 refused by name', async () => {
    const i = C.tensor([[3, -7, 0], [2147483647, -2147483648, 5]], { dtype: 'i32' });
    expect(await C.toArray(C.min(i, 1))).toEqual([-7, -2147483648]);
    expect(await C.toArray(C.min(i, 0))).toEqual([3, -2147483648, 0]);
    expect(C.min(i, 0, { keepDims: true }).shape).toEqual([1, 3]);
    expect(await C.toArray(C.min(C.tensor([-2147483648, 5], { dtype: 'i32' })))).toBe(-2147483648); // −(−2³¹) wraps to itself
    check(() => C.min(u32(2, 2)), DTypeError, 'min: u32 tensors cannot be negated, so min refuses (2,2) u32; cast to i32 (values below 2³¹) or f64 first');
  });

  it('writeAt: one dtype, an i32 scalar position, src fitting dst off the axis; slots past the end fail when run', async () => {
    const dst = f32(2, 6, 3), src = f32(2, 2, 3), pos = C.tensor(1, { dtype: 'i32' });
    check(() => C.writeAt(dst, C.zeros([2, 2, 3], 'f64'), pos, 1), DTypeError, 'writeAt: dst f32(2,6,3) and src f64(2,2,3) differ in dtype');
    check(() => C.writeAt(dst, src, C.tensor(1, { dtype: 'u32' }), 1), DTypeError, 'writeAt: the position must be an i32 scalar, got u32()');
    check(() => C.writeAt(dst, src, i32(1), 1), DTypeError, 'writeAt: the position must be an i32 scalar, got i32(1,)');
    check(() => C.writeAt(dst, f32(2, 2, 4), pos, 1), ShapeError, 'writeAt: cannot write (2,2,4) into (2,6,3) along axis 1');
    check(() => C.writeAt(dst, f32(2, 7, 3), pos, 1), ShapeError, 'writeAt: cannot write (2,7,3) into (2,6,3) along axis 1');
    check(() => C.writeAt(dst, f32(2, 2), pos, 1), ShapeError, 'writeAt: cannot write (2,2) into (2,6,3) along axis 1');
    await expect(C.toArray(C.writeAt(dst, src, C.tensor(5, { dtype: 'i32' }), 1))).rejects.toThrow('writeAt: slots 5…6 do not fit axis 1 of (2,6,3)');
    await expect(C.toArray(C.writeAt(dst, src, C.tensor(-1, { dtype: 'i32' }), 1))).rejects.toThrow('writeAt: slots -1…0 do not fit axis 1 of (2,6,3)');
    const last = await C.data(C.writeAt(dst, C.ones([2, 2, 3]), C.tensor(4, { dtype: 'i32' }), 1)); // slots 4…5 fit exactly
    expect(Array.from(last).filter((v) => v === 1)).toHaveLength(12);
  });
});

describe('op records', () => {
  it('have distinct, non-empty names within a kind: the graph merges nodes by (op name, sources, argument)', async () => {
    const mods = await Promise.all(['elementwise', 'create', 'gather', 'grad', 'lift', 'matmul', 'movement', 'nf4', 'random', 'reduce', 'update', 'attention']
      .map((m) => import(`../ops/${m}.ts`) as Promise<Record<string, unknown>>));
    const ops = mods.flatMap((m) => Object.values(m)).filter((v): v is { name: string; kind: string } => !!v && typeof v === 'object' && 'kind' in v && 'name' in v);
    expect(ops.length).toBeGreaterThanOrEqual(37);
    for (const op of ops) expect(op.name, op.kind).toMatch(/^[a-zA-Z][a-zA-Z0-9]*$/);
    for (const kind of new Set(ops.map((o) => o.kind))) {
      const names = ops.filter((o) => o.kind === kind).map((o) => o.name);
      expect(new Set(names).size, `${kind}: ${names.join(', ')}`).toBe(names.length);
    }
    // What the names keep apart: the same op on the same inputs is one node, two ops are two.
    const x = f32(3), y = f32(3);
    expect(C.add(x, y).node).toBe(C.add(x, y).node);
    const unary = [C.exp2, C.log2, C.sin, C.sqrt, C.recip, C.relu, C.sigmoid, C.tanh, C.erf, C.softplus, C.stopGradient].map((f) => f(x).node);
    expect(new Set(unary).size).toBe(unary.length);
    const binary = [C.add, C.mul, C.maximum, C.less, C.equal, C.pow].map((f) => f(x, y).node);
    expect(new Set(binary).size).toBe(binary.length);
  });
});

describe('graph rewrites at build time', () => {
  it('a cast to the same dtype is the tensor itself; no gradient flows through an integer cast', async () => {
    const x = C.tensor([1.5, -2.25, 3]);
    expect(C.cast(x, 'f32')).toBe(x);
    const through = C.grad((v: C.Tensor) => C.sum(C.mul(C.cast(C.cast(v, 'i32'), 'f32'), v)))(x);
    expect(await C.toArray(through)).toEqual([1, -2, 3]); // d/dv (int(v)·v) = int(v): the int factor is a constant
    const f64 = C.grad((v: C.Tensor) => C.sum(C.square(C.cast(v, 'f64'))))(x);
    expect([f64.dtype, await C.toArray(f64)]).toEqual(['f32', [3, -4.5, 6]]);
  });

  it('float constants fold: c₁·c₂ is one constant, (u·c₁)·c₂ one multiply by c₁c₂; integers are left as written', async () => {
    const folded = C.mul(C.scalar(1.5, 'f32'), C.scalar(4, 'f32'));
    expect(folded.node.op.name).toBe('fill');
    expect(await C.toArray(folded)).toBe(6);
    const u = C.tensor([1, 2]);
    for (const chain of [C.mul(C.mul(u, 3), 0.5), C.mul(0.5, C.mul(u, 3)), C.mul(C.mul(3, u), 0.5)]) {
      expect(chain.node.op.name).toBe('mul');
      const [a, b] = chain.node.src;
      expect([a, b].map((n) => n!.op.name).sort()).toEqual(['const', 'fill']);
      expect(await C.toArray(chain)).toEqual([1.5, 3]);
    }
    const i = C.mul(C.mul(C.tensor([1, 2], { dtype: 'i32' }), 3), 2);
    expect(i.node.src.some((n) => n.op.name === 'mul')).toBe(true);
    expect(await C.toArray(i)).toEqual([6, 12]);
    expect(C.mul(C.scalar(2, 'i32'), C.scalar(3, 'i32')).node.op.name).toBe('mul');
  });
});

describe('comparisons and numbers lifted into an op', () => {
  it('less, greater, lessEqual, greaterEqual and equal, at ties and at NaN (every comparison with NaN is false but ≠)', async () => {
    const x = C.tensor([1, 2, 3, NaN]), y = C.tensor([2, 2, 2, 1]);
    const bools = async (t: C.Tensor) => Array.from(await C.data(t), (v) => v === 1);
    expect(await bools(C.less(x, y))).toEqual([true, false, false, false]);
    expect(await bools(C.greater(x, y))).toEqual([false, false, true, false]);
    expect(await bools(C.lessEqual(x, y))).toEqual([true, true, false, false]);
    expect(await bools(C.greaterEqual(x, y))).toEqual([false, true, true, false]);
    expect(await bools(C.equal(x, y))).toEqual([false, true, false, false]);
    expect(await bools(C.logicalNot(C.equal(x, y)))).toEqual([true, false, true, true]);
    const ints = C.tensor([1, 2, 3], { dtype: "i32" }), two = C.tensor([2, 2, 2], { dtype: "i32" });
    expect([await bools(C.lessEqual(ints, two)), await bools(C.greaterEqual(ints, 2))]).toEqual([[true, true, false], [false, true, true]]);
  });

  it('a number an integer operand cannot hold is refused by the op the caller named', () => {
    const i = i32(2);
    const ops: [string, () => unknown][] = [
      ['less', () => C.less(i, 1.5)], ['equal', () => C.equal(i, 1.5)], ['maximum', () => C.maximum(i, 1.5)], ['sub', () => C.sub(i, 1.5)],
      ['minimum', () => C.minimum(i, 1.5)], ['div', () => C.div(i, 1.5)], ['where', () => C.where(C.less(i, 1), i, 1.5)], ['pow', () => C.pow(i, 1.5)],
    ];
    for (const [name, f] of ops) {
      const e = thrown(f);
      expect(e.message.startsWith(`${name}: operand `), `${name}: ${e.message}`).toBe(true);
      expect(e.message).toMatch(/ is 1\.5, which i32 cannot hold \(an integer in \[-2147483648, 2147483647\]\); to truncate on purpose, build a float tensor and cast\(\) it$/);
    }
    check(() => C.where(C.less(f32(2), 1), C.less(f32(2), 1), 2), DTypeError, 'where: operand 2 (a number, for bool(2,)) is 2, which bool cannot hold (true, false, 0 or 1); to take truthiness on purpose, build a float tensor and cast() it');
    check(() => C.pow(i, i32(2)), DTypeError, 'pow: needs a float dtype, got i32(2,)');
  });

  it('pow at the edges PyTorch defines: x⁰ = 1 and 1ʸ = 1 even for NaN, (−1)^±∞ = 1', async () => {
    const x = C.tensor([NaN, 1, 1, -1, -1, 2]), p = C.tensor([0, NaN, Infinity, Infinity, -Infinity, 0.5]);
    const got = Array.from(await C.data(C.pow(x, p)));
    expect(got.slice(0, 5)).toEqual([1, 1, 1, 1, 1]);
    expect(got[5]).toBeCloseTo(Math.SQRT2, 6);
  });
});

describe.skipIf(!gpuDevice)('comparisons on WebGPU', () => {
  it('lessEqual and greaterEqual (a select between bools) give the interpreter\'s booleans', async () => {
    const x = [1, 2, 3, -0, 0.5], y = [2, 2, 2, 0, -1];
    const run = async (backend: 'cpu' | 'webgpu') => {
      setBackend(backend);
      const a = C.tensor(x), b = C.tensor(y);
      const out = await Promise.all([C.lessEqual(a, b), C.greaterEqual(a, b), C.lessEqual(a, 2)].map((t) => C.data(t)));
      return out.map((d) => Array.from(d));
    };
    try {
      expect(await run('webgpu')).toEqual(await run('cpu'));
    } finally { setBackend('cpu'); }
  });
});

describe('linears', () => {
  const rnd = (shape: number[], seed: number) => C.tensor(Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(seed * 7.1 + i * 1.3)), { shape, dtype: 'f64' });
  const dense = (x: C.Tensor, w: C.Tensor) => C.matmul(x, C.transpose(w));

  it('each group is its weights\' x·Wᵀ side by side, for few rows and many, plain, LoRA and mixed groups', async () => {
    const wq = rnd([4, 3], 1), wk = rnd([2, 3], 2), wv = rnd([5, 3], 3);
    const lora: C.LoraWeight = { kind: 'lora', base: wk, A: rnd([2, 3], 4), B: rnd([2, 2], 5), scale: 0.5, dropout: 0 };
    const adapted = C.add(wk, C.mul(C.matmul(lora.B, lora.A), 0.5)); // W + s·B·A
    for (const rows of [2, 300]) {
      const x = rnd([rows, 3], 6);
      const [qk, v] = C.linears(x, [[wq, lora], wv]);
      expect(qk!.shape).toEqual([rows, 6]);
      const want = [C.concat([dense(x, wq), dense(x, adapted)], -1), dense(x, wv)];
      for (const [got, w] of [[qk!, want[0]!], [v!, want[1]!]] as const) {
        const [g, e] = [await C.data(got), await C.data(w)];
        expect(Math.max(...Array.from(g, (a, i) => Math.abs(a - e[i]!))), `rows ${rows}`).toBeLessThan(1e-12);
      }
      const [a, b] = C.linears(x, [wq, wv]);
      expect(Array.from(await C.data(a!))).toEqual(Array.from(await C.data(dense(x, wq))));
      expect(Array.from(await C.data(b!))).toEqual(Array.from(await C.data(dense(x, wv))));
    }
  });
});

describe('the attention primitive\'s checks', () => {
  const arg = { part: 'out' as const, kv: 'bshd' as const, offset: 0, start: false, rope: false };
  const q = f32(2, 3, 4, 8), k = f32(2, 5, 2, 8);
  const ins = (...t: C.Tensor[]) => t.map((x) => `(${x.shape.join(',')}${x.rank === 1 ? ',' : ''})`).join(', ');
  it('takes its tensors plus the extras its argument names, of q\'s float dtype, with matching heads', () => {
    check(() => apply(attentionOp, [q, k], arg), ShapeError, `attention(out): expected 3 tensors plus offset/start/rope; inputs ${ins(q, k)}`);
    check(() => apply(attentionOp, [q, k, k, i32()], arg), ShapeError, `attention(out): expected 3 tensors plus offset/start/rope; inputs ${ins(q, k, k, i32())}`);
    check(() => apply(attentionOp, [q, k, k], { ...arg, offset: null }), ShapeError, `attention(out): expected 3 tensors plus offset/start/rope; inputs ${ins(q, k, k)}`);
    check(() => apply(attentionOp, [f32(2, 3, 32), k, k], arg), ShapeError, `attention(out): q and k must be rank 4; inputs ${ins(f32(2, 3, 32), k, k)}`);
    check(() => apply(attentionOp, [q, f32(2, 5, 16), k], arg), ShapeError, `attention(out): q and k must be rank 4; inputs ${ins(q, f32(2, 5, 16), k)}`);
    const why = 'k does not match q (batch, head size, or heads not a multiple of kv heads)';
    for (const kk of [f32(1, 5, 2, 8), f32(2, 5, 2, 4), f32(2, 5, 3, 8)]) check(() => apply(attentionOp, [q, kk, kk], arg), ShapeError, `attention(out): ${why}; inputs ${ins(q, kk, kk)}`);
    check(() => apply(attentionOp, [q, k, C.zeros([2, 5, 2, 8], 'f64')], arg), DTypeError, 'attention(out): inputs must share a float dtype, got f32, f32, f64');
    check(() => apply(attentionOp, [q, k, k, f32()], { ...arg, offset: null }), DTypeError, 'attention: the offset must be an i32 scalar, got f32()');
    check(() => apply(attentionOp, [q, k, k, i32(1)], { ...arg, offset: null }), DTypeError, 'attention: the offset must be an i32 scalar, got i32(1,)');
    for (const st of [i32(3), i32(2, 1), u32(2)]) {
      check(() => apply(attentionOp, [q, k, k, st], { ...arg, start: true }), DTypeError, `attention: start must be (B,) = (2,) i32, got ${st.dtype}${ins(st)}`);
    }
    const table = f32(3, 1, 6);
    check(() => apply(attentionOp, [f32(2, 3, 4, 8), f32(2, 3, 2, 8), f32(2, 3, 2, 8), table], { ...arg, rope: true }), ShapeError,
      `attention(out): the RoPE table f32(3,1,6) must be f32 (T, 1, D) or (B, T, 1, D); inputs ${ins(f32(2, 3, 4, 8), f32(2, 3, 2, 8), f32(2, 3, 2, 8), table)}`);
    expect(apply(attentionOp, [q, k, k, C.tensor(2, { dtype: 'i32' }), i32(2)], { ...arg, offset: null, start: true }).shape).toEqual([2 * 3 * 4 * 8 + 24]);
    expect(apply(attentionOp, [q, f32(2, 2, 5, 8), f32(2, 2, 5, 8), q, C.zeros([2 * 3 * 4 * 8 + 24])], { ...arg, part: 'dkv', kv: 'bhsd' }).shape).toEqual([2, 2, 5, 2, 8]);
    expect(apply(attentionOp, [q, k, k, q, C.zeros([2 * 3 * 4 * 8 + 24])], { ...arg, part: 'dkv' }).shape).toEqual([2, 5, 2, 2, 8]);
    expect(apply(attentionOp, [q, k, k, q, C.zeros([2 * 3 * 4 * 8 + 24])], { ...arg, part: 'dq' }).shape).toEqual([2, 3, 4, 8]);
  });
});
