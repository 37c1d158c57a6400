// The matmul/GEMV WGSL templates against a float64 triple loop: tile-straddling shapes, batches, transposed and
// broadcast operands via strides, offsets, a fused epilogue with an extra binding. Matrices stay ≤ 128 (lavapipe).

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { afterAll, describe, expect, test } from 'vitest';
import type { Device } from '../core/device.js';
import { openTestDevice } from './gpu.js';
import {
  CPU_TILES, GPU_TILES, type MatmulSpec, type MatmulTiles, type Strides, matmulKernel, pickMatmulTiles,
} from '../core/wgsl/matmul.js';

const dev: Device | null = await openTestDevice('matmul-kernel.test');
afterAll(() => dev?.destroy());

/** Deterministic inputs in [-1, 1) (mulberry32), so a failure replays. */
const randoms = (n: number, seed: number): Float32Array => {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
  });
};

const layout = (batch: number, rows: number, cols: number, transposed: boolean, broadcast: boolean): Strides => ({
  batch: broadcast ? 0 : rows * cols,
  row: transposed ? 1 : cols,
  col: transposed ? rows : 1,
});

interface Case {
  readonly batch: number; readonly M: number; readonly N: number; readonly K: number;
  readonly ta?: boolean; readonly tb?: boolean; readonly bcastB?: boolean;
  readonly aOffset?: number; readonly tiles?: MatmulTiles; readonly epilogue?: boolean; readonly skinnyRows?: number;
}

/** Run the kernel for a case and compare with a float64 reference within a K-relative tolerance. */
const check = async (d: Device, c: Case, seed: number): Promise<void> => {
  const { batch, M, N, K } = c;
  const aOff = c.aOffset ?? 0;
  const aStrides = layout(batch, M, K, c.ta === true, false);
  const bStrides = layout(batch, K, N, c.tb === true, c.bcastB === true);
  const A = randoms(aOff + batch * M * K, seed);
  const B = randoms((c.bcastB === true ? 1 : batch) * K * N, seed + 1);
  const bias = randoms(N, seed + 2);
  const spec: MatmulSpec = {
    batch, M, N, K, aStrides, bStrides, aOffset: aOff,
    tiles: c.tiles ?? pickMatmulTiles(d, { M, N }),
    ...(c.skinnyRows ? { skinnyRows: c.skinnyRows } : {}),
    ...(c.epilogue === true
      ? {
          epilogue: (acc: string, _row: string, col: string) => `max(${acc} * 2.0 + 1.0, 0.0) + bias[${col}]`,
          extraBindings: [{ name: 'bias', type: 'array<f32>' }],
        }
      : {}),
  };
  const k = matmulKernel(spec);
  if (c.skinnyRows && M < c.skinnyRows) expect(k.kind).toBe('gemv');
  const p = await d.pipeline({ wgsl: k.wgsl, label: k.label, ops: ['matmul'] })();
  if (E.isLeft(p)) throw new Error(p.left.message);
  const bufs = [A, B, new Float32Array(batch * M * N), ...(c.epilogue === true ? [bias] : [])].map((x) => {
    const buf = d.alloc(Math.max(4, x.byteLength));
    d.upload(buf, x);
    return buf;
  });
  d.encode([{ pipeline: p.right, bindGroup: d.bindGroup(p.right, bufs), workgroups: k.workgroups }]);
  const got = await d.readback(bufs[2]!, batch * M * N * 4);
  bufs.forEach((b) => d.free(b));
  let worst = 0;
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let acc = 0, mag = 0;
        for (let kk = 0; kk < K; kk++) {
          const x = A[aOff + b * aStrides.batch + i * aStrides.row + kk * aStrides.col]!;
          const y = B[b * bStrides.batch + kk * bStrides.row + j * bStrides.col]!;
          acc += x * y;
          mag += Math.abs(x * y);
        }
        const want = c.epilogue === true ? Math.max(acc * 2 + 1, 0) + bias[j]! : acc;
        const scale = c.epilogue === true ? 2 : 1;
        const tol = (K + 2) * 2 ** -23 * mag * scale + 1e-6;
        const err = Math.abs(got[b * M * N + i * N + j]! - want);
        worst = Math.max(worst, err / tol);
        if (!(err <= tol)) {
          throw new Error(`${k.kind} ${JSON.stringify(c)}: C[${b},${i},${j}] = ${got[b * M * N + i * N + j]}, want ${want} (tol ${tol})`);
        }
      }
    }
  }
  expect(worst).toBeLessThanOrEqual(1);
};

describe('pickMatmulTiles', () => {
  const limits = {
    maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 1024,
    maxComputeWorkgroupSizeX: 1024, maxComputeWorkgroupSizeY: 1024,
  };
  test('a CPU adapter gets the large register tile, a GPU the 4×4 one', () => {
    expect(pickMatmulTiles({ adapter: { isSoftware: true }, limits })).toEqual(CPU_TILES);
    expect(pickMatmulTiles({ adapter: { isSoftware: false }, limits })).toEqual(GPU_TILES);
  });
  test('tiles shrink to the limits and to small shapes', () => {
    const t = pickMatmulTiles({ adapter: { isSoftware: true }, limits: { ...limits, maxComputeInvocationsPerWorkgroup: 64, maxComputeWorkgroupStorageSize: 4096 } });
    expect(t.threadsM * t.threadsN).toBeLessThanOrEqual(64);
    expect(4 * t.tileK * (t.threadsM * t.perThreadM + t.threadsN * t.perThreadN)).toBeLessThanOrEqual(4096);
    const small = pickMatmulTiles({ adapter: { isSoftware: true }, limits }, { M: 20, N: 300 });
    expect(small.threadsM * small.perThreadM).toBeLessThan(40);
    expect(small.perThreadM % 4 + small.perThreadN % 4).toBe(0);
  });
  test('on a CPU adapter a small output keeps the 16×16 register tile on fewer invocations (≥ 8 workgroups, or 4×4)', () => {
    const blocks = (t: MatmulTiles, M: number, N: number) => Math.ceil(M / (t.threadsM * t.perThreadM)) * Math.ceil(N / (t.threadsN * t.perThreadN));
    const t = pickMatmulTiles({ adapter: { isSoftware: true }, limits }, { M: 64, N: 344 }); // a weight gradient
    expect([t.perThreadM, t.perThreadN, t.threadsM, t.threadsN]).toEqual([CPU_TILES.perThreadM, CPU_TILES.perThreadN, 4, 4]);
    expect(blocks(CPU_TILES, 64, 344)).toBe(3);
    const u = pickMatmulTiles({ adapter: { isSoftware: true }, limits }, { M: 256, N: 512 });
    expect(blocks(u, 256, 512)).toBeGreaterThanOrEqual(8);
    const big = pickMatmulTiles({ adapter: { isSoftware: true }, limits }, { M: 2048, N: 512 });
    expect(big).toEqual(CPU_TILES);
  });
  test('on a CPU adapter the invocation grid narrows where that leaves less of the last block empty', () => {
    const width = (t: MatmulTiles) => t.threadsN * t.perThreadN;
    // 172 columns: 3 blocks of 64 (192 computed) rather than 2 of 128 (256); 344 fill 3 of 128 as well as 6 of 64.
    expect(width(pickMatmulTiles({ adapter: { isSoftware: true }, limits }, { M: 2048, N: 172 }))).toBe(64);
    expect(width(pickMatmulTiles({ adapter: { isSoftware: true }, limits }, { M: 2048, N: 344 }))).toBe(128);
    const tall = pickMatmulTiles({ adapter: { isSoftware: true }, limits }, { M: 172, N: 2048 });
    expect(tall.threadsM * tall.perThreadM).toBe(64);
    expect(pickMatmulTiles({ adapter: { isSoftware: false }, limits }, { M: 2048, N: 172 })).toEqual(GPU_TILES);
  });
  test('matmulKernel rejects bad shapes', () => {
    const s = { batch: 1, M: 4, N: 4, K: 4, aStrides: { batch: 0, row: 4, col: 1 }, bStrides: { batch: 0, row: 4, col: 1 } };
    expect(() => matmulKernel({ ...s, M: 0 })).toThrow(RangeError);
    expect(() => matmulKernel({ ...s, batch: 70000 })).toThrow(RangeError);
    expect(() => matmulKernel({ ...s, tiles: { ...CPU_TILES, perThreadN: 6 } })).toThrow(RangeError);
  });
});

const cases: readonly Case[] = [
  { batch: 1, M: 128, N: 128, K: 64 }, // exact multiples of the CPU tile: no bounds checks generated
  { batch: 1, M: 37, N: 29, K: 19 },
  { batch: 3, M: 70, N: 45, K: 33, ta: true },
  { batch: 2, M: 33, N: 100, K: 50, tb: true },
  { batch: 2, M: 64, N: 48, K: 40, ta: true, tb: true }, // vec4 global loads of Aᵀ
  { batch: 4, M: 17, N: 24, K: 30, bcastB: true, aOffset: 12 },
  { batch: 1, M: 100, N: 90, K: 70, epilogue: true },
  { batch: 2, M: 50, N: 66, K: 45, tiles: GPU_TILES, tb: true }, // the real-GPU tile shape, checked here too
  // Fills whose k comes from the loop counter alone (a k row spans 1 or 2 thread grids), with M, N and K tails.
  { batch: 2, M: 70, N: 75, K: 37, ta: true, tiles: { tileK: 16, threadsM: 4, threadsN: 4, perThreadM: 16, perThreadN: 16 } },
  { batch: 1, M: 130, N: 40, K: 21, ta: true, tiles: { tileK: 8, threadsM: 8, threadsN: 2, perThreadM: 16, perThreadN: 16 } },
  // The k loop takes 4 steps per accumulator update where tileK allows, else 2 or 1 (tileK 6: 2; 3: 1).
  { batch: 1, M: 21, N: 18, K: 23, tiles: { tileK: 6, threadsM: 4, threadsN: 4, perThreadM: 4, perThreadN: 4 } },
  { batch: 1, M: 21, N: 18, K: 23, tb: true, tiles: { tileK: 3, threadsM: 4, threadsN: 4, perThreadM: 4, perThreadN: 4 } },
  { batch: 1, M: 1, N: 100, K: 64 }, // GEMV, row vector, vec4 along N
  { batch: 2, M: 1, N: 70, K: 64, tb: true, epilogue: true }, // GEMV against Wᵀ stored (N, K): vec4 along K
  { batch: 3, M: 45, N: 1, K: 23, ta: true }, // GEMV, column vector, K tail
  { batch: 1, M: 1, N: 1, K: 5 }, // a dot product
  { batch: 1, M: 9, N: 7, K: 0 }, // empty contraction: C = 0
  // Skinny products (a CPU adapter's short prefill): one GEMV per row of A, the rows a grid dimension.
  { batch: 2, M: 6, N: 100, K: 64, skinnyRows: 16 }, // vec4 along K (rows of A) and N
  { batch: 1, M: 15, N: 70, K: 23, tb: true, epilogue: true, skinnyRows: 16 }, // against Wᵀ, K tail, epilogue
  { batch: 3, M: 5, N: 9, K: 30, ta: true, bcastB: true, aOffset: 8, skinnyRows: 16 }, // Aᵀ read by scalars, offset
];

describe.skipIf(dev === null)('matmul kernel vs float64 reference', () => {
  const d = dev as Device;
  test.each(cases.map((c, i) => [JSON.stringify(c), c, i] as const))('%s', async (_name, c, i) => {
    await check(d, c, 1000 + i);
  });

  test('random shapes (fast-check, pinned seed)', async () => {
    const shape = fc.record({
      batch: fc.integer({ min: 1, max: 3 }),
      M: fc.integer({ min: 1, max: 80 }),
      N: fc.integer({ min: 1, max: 80 }),
      K: fc.integer({ min: 1, max: 64 }),
      ta: fc.boolean(),
      tb: fc.boolean(),
    });
    await fc.assert(fc.asyncProperty(shape, fc.nat(1000), async (c, seed) => check(d, c, seed)), { seed: 20240607, numRuns: 4 });
  });
});
