// Bad input fails at graph-build time with a message naming the op and the shapes or values involved.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { DTypeError, ShapeError, setBackend } from '../index.js';

setBackend('cpu');
const a23 = C.zeros([2, 3]);

describe('errors', () => {
  it('matmul names both shapes and the inner dimensions', () => {
    expect(() => C.matmul(a23, C.zeros([4, 5]))).toThrow(new ShapeError('matmul: cannot contract (2,3) with (4,5): inner dimensions 3 and 4 differ'));
    expect(() => C.matmul(a23, C.zeros([3, 5], 'f64'))).toThrow(DTypeError);
  });
  it('broadcasting failures name the op and shapes', () => {
    expect(() => C.add(a23, C.zeros([4]))).toThrow(/add: cannot broadcast \(2,3\) with \(4,\)/);
    expect(() => C.where(C.less(a23, 0), a23, C.zeros([2, 2]))).toThrow(/where: cannot broadcast/);
  });
  it('dtype mismatches are DTypeErrors naming both operands', () => {
    expect(() => C.add(a23, C.zeros([2, 3], 'f64'))).toThrow(/add: dtype mismatch: f32\(2,3\) vs f64\(2,3\)/);
    expect(() => C.exp(C.zeros([2], 'i32'))).toThrow(/exp: needs a float dtype, got i32/);
    // A number an integer operand cannot hold is refused, never truncated: add(i32, 1.5) is not i32 + 1.
    expect(() => C.add(C.zeros([2], 'i32'), 1.5)).toThrow(/add: operand 1 \(a number, for i32\(2,?\)\) is 1\.5, which i32 cannot hold/);
    expect(() => C.mul(C.zeros([2], 'u32'), -1)).toThrow(/mul: operand 1 .* is -1, which u32 cannot hold/);
    expect(() => C.gather(a23, C.zeros([2]))).toThrow(/gather: indices must be i32 or u32, got f32/);
    expect(() => C.sum(C.less(a23, 1))).toThrow(/sum: cannot reduce a bool tensor/);
  });
  it('axes out of range and repeated axes', () => {
    expect(() => C.sum(a23, 2)).toThrow(/sum: axis 2 out of range for rank 2/);
    expect(() => C.sum(a23, [0, -2])).toThrow(/sum: repeated axis/);
    expect(() => C.softmax(a23, -3)).toThrow(/axis -3 out of range/);
    expect(() => C.permute(a23, [0, 0])).toThrow(/permute: \[0,0\] is not a permutation of the axes of \(2,3\)/);
  });
  it('movement ops check their arguments', () => {
    expect(() => C.reshape(a23, [4, 2])).toThrow(/reshape: cannot reshape \(2,3\) \(6 elements\) to \(4,2\) \(8 elements\)/);
    expect(() => C.reshape(a23, [4, -1])).toThrow(/cannot infer -1/);
    expect(() => C.slice(a23, [0, 2], [2, 5])).toThrow(/slice: bounds/);
    expect(() => C.broadcastTo(a23, [3, 3])).toThrow(/broadcastTo: cannot broadcast/);
    expect(() => C.squeeze(a23, 0)).toThrow(/squeeze: axis 0 of \(2,3\) has size 2/);
    expect(() => C.concat([a23, C.zeros([3, 3])], 1)).toThrow(/concat: shapes \(2,3\), \(3,3\) differ off axis 1/);
  });
  it('tensor() rejects ragged arrays, negative dims, bad shapes and unknown dtypes; allows non-finite data', async () => {
    expect(() => C.tensor([[1, 2], [3]])).toThrow(/ragged nested array: \[1\] has shape \(1,\) but \[0\] has \(2,\)/);
    expect(() => C.zeros([2, -1])).toThrow(/full: invalid shape \(2,-1\)/);
    expect(() => C.tensor(new Float32Array(5), { shape: [2, 3] })).toThrow(/5 values do not fill shape \(2,3\)/);
    expect(() => C.tensor([1], { dtype: 'f8' as never })).toThrow(/unknown dtype 'f8'/);
    expect(() => C.tensor([1, 'x' as never])).toThrow(/element at \[1\] is string/);
    expect(await C.toArray(C.tensor([NaN, Infinity, -Infinity]))).toEqual([NaN, Infinity, -Infinity]);
  });
  it('grad insists on a scalar output and ops with no VJP are named', () => {
    expect(() => C.grad((x: C.Tensor) => C.mul(x, 2))(C.zeros([3]))).toThrow(/must return a scalar tensor, got \(3,\)/);
  });
  it('gather out of range names the index and position', async () => {
    await expect(C.toArray(C.gather(a23, C.tensor([0, 5], { dtype: 'i32' })))).rejects.toThrow(/gather: index 5 at position 1 is out of range \[0, 2\)/);
  });
  it('setBackend rejects unknown names', () => {
    expect(() => C.setBackend('tpu' as never)).toThrow(/unknown backend 'tpu'/);
  });
});
