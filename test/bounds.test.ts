// No silent wrong results (issue 17): integer and bool tensors hold only values they can store exactly (§4), and
// out-of-range gather/scatterAdd indices are the same error on the interpreter and on WebGPU (§1).

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { gpuDevice } from './gpu.js';

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

// §1: tiny shapes (each new gather/scatterAdd shape is a lavapipe compile), the same expectations on both backends.
const i32 = (v: number[]) => C.tensor(v, { dtype: 'i32' });
const table = () => C.tensor([[1, 2], [3, 4], [5, 6]]); // (3, 2)
/** Indices computed on the device (on WebGPU): base + offset, so the kernel itself meets the bad index. */
const computed = (offsets: number[]) => C.add(i32(offsets.map((_, i) => i)), i32(offsets));

for (const backend of ['cpu', 'webgpu'] as const) {
  describe.skipIf(backend === 'webgpu' && !gpuDevice)(`out-of-range indices on ${backend} (§1)`, () => {
    it('gather with indices from the host: the first bad one, its position and the range', async () => {
      C.setBackend(backend);
      for (const [ids, msg] of [
        [[0, 3], 'gather: index 3 at position 1 is out of range [0, 3)'],
        [[5, 0], 'gather: index 5 at position 0 is out of range [0, 3)'],
        [[0, -1], 'gather: index -1 at position 1 is out of range [0, 3)'],
        [[2 ** 31 - 1, 0], 'gather: index 2147483647 at position 0 is out of range [0, 3)'],
      ] as const) {
        await expect(C.toArray(C.gather(table(), i32([...ids])))).rejects.toThrow(msg);
      }
    });

    it('gather with indices computed on the device, i32 and u32', async () => {
      C.setBackend(backend);
      await expect(C.toArray(C.gather(table(), computed([0, 599, 0])))).rejects.toThrow('gather: index 600 at position 1 is out of range [0, 3)');
      await expect(C.toArray(C.gather(table(), computed([0, 0, -3])))).rejects.toThrow('gather: index -1 at position 2 is out of range [0, 3)');
      const u = C.add(C.tensor([0, 1, 2], { dtype: 'u32' }), C.tensor([0, 0, 4294967293], { dtype: 'u32' }));
      await expect(C.toArray(C.gather(table(), u))).rejects.toThrow('gather: index 4294967295 at position 2 is out of range [0, 3)');
      // After a reported fault the next computation is clean, and in-range values are right.
      expect(await C.toArray(C.gather(table(), computed([2, 1, -2])))).toEqual([[5, 6], [5, 6], [1, 2]]);
    });

    it('scatterAdd with indices from the host and from the device', async () => {
      C.setBackend(backend);
      const upd = () => C.tensor([[1, 1], [2, 2]]);
      await expect(C.toArray(C.scatterAdd(upd(), i32([0, 3]), 3))).rejects.toThrow('scatterAdd: index 3 at position 1 is out of range [0, 3)');
      await expect(C.toArray(C.scatterAdd(upd(), computed([0, 7]), 3))).rejects.toThrow('scatterAdd: index 8 at position 1 is out of range [0, 3)');
      expect(await C.toArray(C.scatterAdd(upd(), computed([1, 1]), 3))).toEqual([[0, 0], [1, 1], [2, 2]]);
    });

    it('the gradient of a lookup (scatterAdd in the backward pass) refuses the same index', async () => {
      C.setBackend(backend);
      const loss = (t: C.Tensor) => C.sum(C.gather(t, computed([0, 5, 0])));
      await expect(C.toArray(C.grad(loss)(table()))).rejects.toThrow('index 6 at position 1 is out of range [0, 3)');
    });
  });
}

describe.skipIf(!gpuDevice)('device-side index faults (§1, WebGPU)', () => {
  it('a jitted step reports at the next readback, even of another tensor; the fault is then cleared', async () => {
    C.setBackend('webgpu');
    const step = C.jit((t: C.Tensor, i: C.Tensor) => C.gather(t, i));
    const ok = await step(table(), i32([1, 0]));
    expect(await C.toArray(ok)).toEqual([[3, 4], [1, 2]]);
    const bad = await step(table(), i32([1, 9])); // never read
    const other = C.mul(C.tensor([1, 2]), 3);
    await expect(C.toArray(other)).rejects.toThrow('gather: index 9 at position 1 is out of range [0, 3)');
    expect(await C.toArray(other)).toEqual([3, 6]);
    bad.dispose();
  });

  it('reading the fault words costs no extra submit: one encode and one readback per toArray', async () => {
    C.setBackend('webgpu');
    const before = (await C.deviceCounters())!.submits;
    expect(await C.toArray(C.gather(table(), computed([1, 0, -2])))).toEqual([[3, 4], [3, 4], [1, 2]]);
    expect((await C.deviceCounters())!.submits - before).toBe(2);
  });
});

describe('host allocation failures name the op and shape (§9)', () => {
  it('an interpreter result too large for a typed array', async () => {
    C.setBackend('cpu');
    const big = C.add(C.zeros([100000, 100000]), 1);
    await expect(C.toArray(big)).rejects.toThrow(/^interp: add \(100000,100000\) f32 \(10000000000 elements, 40000000000 bytes\) could not be allocated on the host: Invalid typed array length/);
    await expect(C.toArray(C.matmul(C.zeros([70000, 2]), C.zeros([2, 70000])))).rejects.toThrow(/interp: matmul \(70000,70000\) f32 .* could not be allocated/);
  });
});
