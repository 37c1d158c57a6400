// No silent wrong results (issue 17): integer and bool tensors hold only values they can store exactly (§4), and
// out-of-range gather/scatterAdd indices are the same error on the interpreter and on WebGPU (§1).

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';

describe('integer and bool tensors from host values (§4)', () => {
  const cases: [string, () => unknown, RegExp][] = [
    ['NaN as i32', () => C.tensor([NaN, 1], { dtype: 'i32' }), /tensor: element \[0\] is NaN, which i32 cannot hold \(an integer in \[-2147483648, 2147483647\]\)/],
    ['Infinity as i32', () => C.tensor([0, Infinity], { dtype: 'i32' }), /element \[1\] is Infinity, which i32 cannot hold/],
    ['a fraction as i32 (nested path)', () => C.tensor([[1, 2], [3, 1.7]], { dtype: 'i32' }), /element \[1\]\[1\] is 1\.7, which i32/],
    ['-2.5 as i32', () => C.tensor([-2.5], { dtype: 'i32' }), /element \[0\] is -2\.5/],
    ['3e9 as i32', () => C.tensor([3e9], { dtype: 'i32' }), /element \[0\] is 3000000000, which i32 cannot hold/],
    ['-1 as u32', () => C.tensor([-1], { dtype: 'u32' }), /element \[0\] is -1, which u32 cannot hold \(an integer in \[0, 4294967295\]\)/],
    ['2^32 as u32', () => C.tensor([2 ** 32], { dtype: 'u32' }), /is 4294967296, which u32/],
    ['2 as bool', () => C.tensor([true, 2, 0.5]), /element \[1\] is 2, which bool cannot hold \(true, false, 0 or 1\)/],
    ['0.5 as bool', () => C.tensor([0.5], { dtype: 'bool' }), /element \[0\] is 0\.5, which bool/],
    ['a typed array names its flat index', () => C.tensor(new Float32Array([1, 2, 0.25]), { dtype: 'i32' }), /element at index 2 is 0\.25, which i32/],
    ['a scalar', () => C.tensor(2.5, { dtype: 'u32' }), /element \(the scalar\) is 2\.5/],
    ['full', () => C.full([2], 0.5, 'i32'), /full: the value is 0\.5, which i32 cannot hold/],
  ];
  for (const [name, f, msg] of cases) {
    it(`refuses ${name}`, () => {
      expect(f).toThrow(C.DTypeError);
      expect(f).toThrow(msg);
    });
  }
  it('the refusal says how to convert on purpose', () => {
    expect(() => C.tensor([1.5], { dtype: 'i32' })).toThrow(/to truncate on purpose, build a float tensor and cast\(\) it/);
  });

  it('keeps every value the dtype holds, at the edges of its range', async () => {
    C.setBackend('cpu');
    expect(await C.toArray(C.tensor([-0, 2147483647, -2147483648, 7], { dtype: 'i32' }))).toEqual([0, 2147483647, -2147483648, 7]);
    expect(await C.toArray(C.tensor([0, 4294967295], { dtype: 'u32' }))).toEqual([0, 4294967295]);
    expect(await C.toArray(C.tensor([true, false, 1, 0]))).toEqual([true, false, true, false]);
    expect(await C.toArray(C.tensor(new Int32Array([-5, 9]), { dtype: 'i32' }))).toEqual([-5, 9]);
    expect(await C.toArray(C.full([2], 3, 'u32'))).toEqual([3, 3]);
    // Float dtypes still round and keep non-finite values.
    expect(await C.toArray(C.tensor([NaN, Infinity, 1.7]))).toEqual([NaN, Infinity, Math.fround(1.7)]);
  });

  it('cast is the explicit conversion (truncation toward zero)', async () => {
    C.setBackend('cpu');
    expect(await C.toArray(C.cast(C.tensor([1.7, -2.5, 3]), 'i32'))).toEqual([1, -2, 3]);
  });
});
