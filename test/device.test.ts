// Device layer: opening, the buffer pool, transfers, pipeline/bind-group caches, one-submit encoding, and WGSL
// errors surfacing as typed Validation errors. Skipped (visibly) without an adapter — except in CI, where it fails.

import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, test } from 'vitest';
import { type Device, DeviceFailure, sizeClass } from '../core/device.js';
import { openTestDevice } from './gpu.js';

const dev: Device | null = await openTestDevice('device.test');

afterAll(() => dev?.destroy());

describe('sizeClass', () => {
  test('rounds up to 256 bytes, then quarter steps between powers of two', () => {
    expect(sizeClass(1)).toBe(256);
    expect(sizeClass(256)).toBe(256);
    expect(sizeClass(300)).toBe(512);
    expect(sizeClass(1000)).toBe(1024);
    expect(sizeClass(5000)).toBe(5120);
    expect(sizeClass(100 * 2 ** 20)).toBe(112 * 2 ** 20);
    for (const b of [1, 17, 4097, 123_457, 9_999_999]) {
      expect(sizeClass(b)).toBeGreaterThanOrEqual(b);
      expect(sizeClass(b)).toBeLessThanOrEqual(Math.max(256, b * 1.25 + 256));
    }
  });
  test('never exceeds the maximum buffer size for a request that fits', () => {
    expect(sizeClass(1100, 1200)).toBe(1100);
    expect(sizeClass(1000, 1100)).toBe(1024);
  });
});

const ADD_ONE = `
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < 1000u) { dst[id.x] = src[id.x] + 1.0; }
}`;

describe.skipIf(dev === null)('device', () => {
  const d = dev as Device;

  test('opens with the adapter limits and reports its features', () => {
    expect(d.isOpen).toBe(true);
    expect(d.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 2 ** 20);
    expect(d.limits.maxComputeInvocationsPerWorkgroup).toBeGreaterThanOrEqual(256);
    expect(d.limits.maxComputeWorkgroupsPerDimension).toBeGreaterThanOrEqual(65535);
    expect(typeof d.features.shaderF16).toBe('boolean');
    expect(d.adapter.description.length + d.adapter.vendor.length).toBeGreaterThan(0);
  });

  test('alloc/free reuses buffers: the allocation counter stays constant in a loop', () => {
    const sizes = [1000, 5000, 4096, 70_000];
    const first = sizes.map((s) => d.alloc(s));
    first.forEach((b) => d.free(b));
    const after = d.counters;
    for (let i = 0; i < 50; i++) {
      const bufs = sizes.map((s) => d.alloc(s));
      expect(bufs.every((b, j) => b.size >= sizes[j]!)).toBe(true);
      bufs.forEach((b) => d.free(b));
    }
    expect(d.counters.allocations).toBe(after.allocations);
    expect(d.counters.bytesInUse).toBe(after.bytesInUse);
    expect(d.counters.bytesPooled).toBe(after.bytesPooled);
  });

  test('freeing twice, or a foreign buffer, throws', () => {
    const b = d.alloc(64);
    d.free(b);
    expect(() => d.free(b)).toThrow(/twice/);
    const foreign = d.gpuDevice.createBuffer({ size: 64, usage: 0x80 });
    expect(() => d.free(foreign)).toThrow(/not allocated/);
    foreign.destroy();
  });

  test('emptyPool destroys free buffers only', () => {
    const keep = d.alloc(2048);
    d.free(d.alloc(8192));
    expect(d.counters.bytesPooled).toBeGreaterThan(0);
    d.emptyPool();
    expect(d.counters.bytesPooled).toBe(0);
    expect(d.counters.bytesInUse).toBeGreaterThanOrEqual(2048);
    d.free(keep);
  });

  test('upload then readback round-trips, into a new array or a preallocated one, at an offset', async () => {
    const data = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 1e3);
    const buf = d.alloc(data.byteLength);
    d.upload(buf, data);
    expect(Array.from(await d.readback(buf, data.byteLength))).toEqual(Array.from(data));
    const into = new Float32Array(10);
    const same = await d.readback(buf, 40, into, 400);
    expect(same).toBe(into);
    expect(Array.from(into)).toEqual(Array.from(data.subarray(100, 110)));
    const ints = new Int32Array([7, -3, 2 ** 30, 0]);
    d.upload(buf, ints, 16);
    expect(Array.from(await d.readback(buf, 16, new Int32Array(4), 16))).toEqual([7, -3, 2 ** 30, 0]);
    d.free(buf);
  });

  test('pipelines are cached by WGSL text; bind groups by (pipeline, buffers)', async () => {
    const before = d.counters.compiles;
    const p1 = await d.pipeline({ wgsl: ADD_ONE, label: 'add_one' })();
    const p2 = await d.pipeline({ wgsl: ADD_ONE, label: 'add_one' })();
    expect(E.isRight(p1) && E.isRight(p2) && p1.right === p2.right).toBe(true);
    expect(d.counters.compiles).toBe(before + 1);
    if (E.isLeft(p1)) return;
    const a = d.alloc(4000), b = d.alloc(4000);
    const g1 = d.bindGroup(p1.right, [a, b]);
    const groups = d.counters.bindGroups;
    expect(d.bindGroup(p1.right, [a, b])).toBe(g1);
    expect(d.counters.bindGroups).toBe(groups);
    expect(d.bindGroup(p1.right, [b, a])).not.toBe(g1);
    d.free(a);
    d.free(b);
  });

  test('encode runs a list of dispatches in one submit; sync waits for it', async () => {
    const p = await d.pipeline({ wgsl: ADD_ONE, label: 'add_one' })();
    if (E.isLeft(p)) throw new Error(p.left.message);
    const a = d.alloc(4000), b = d.alloc(4000);
    d.upload(a, Float32Array.from({ length: 1000 }, (_, i) => i));
    const ab = d.bindGroup(p.right, [a, b]), ba = d.bindGroup(p.right, [b, a]);
    const submits = d.counters.submits;
    const wg = [Math.ceil(1000 / 64), 1, 1] as const;
    // a → b → a → b: four dependent dispatches in one pass, each adding one.
    d.encode([ab, ba, ab, ba].map((bindGroup) => ({ pipeline: p.right, bindGroup, workgroups: wg })));
    expect(d.counters.submits).toBe(submits + 1);
    await d.sync(1);
    const outA = await d.readback(a, 4000), outB = await d.readback(b, 4000);
    expect([outA[0], outA[999], outB[0], outB[999]]).toEqual([4, 1003, 3, 1002]);
    d.free(a);
    d.free(b);
  });

  test('a dispatch beyond maxComputeWorkgroupsPerDimension throws a typed error', async () => {
    const p = await d.pipeline({ wgsl: ADD_ONE, label: 'add_one' })();
    if (E.isLeft(p)) throw new Error(p.left.message);
    const a = d.alloc(4000), b = d.alloc(4000);
    const bindGroup = d.bindGroup(p.right, [a, b]);
    const huge = d.limits.maxComputeWorkgroupsPerDimension + 1;
    expect(() => d.encode([{ pipeline: p.right, bindGroup, workgroups: [huge, 1, 1] }])).toThrow(DeviceFailure);
    d.free(a);
    d.free(b);
  });

  test('a WGSL syntax error is a Left(Validation) carrying the source, the label, the ops and the line', async () => {
    const bad = `${ADD_ONE}\nfn broken( { return 1.0 }`;
    const r = await d.pipeline({ wgsl: bad, label: 'fused_exp_add', ops: ['exp', 'add'] })();
    expect(E.isLeft(r)).toBe(true);
    if (E.isRight(r)) return;
    const err = r.left;
    expect(err._tag).toBe('Validation');
    if (err._tag !== 'Validation') return;
    expect(err.wgsl).toBe(bad);
    expect(err.label).toBe('fused_exp_add');
    expect(err.ops).toEqual(['exp', 'add']);
    expect(err.messages.some((m) => m.type === 'error' && m.line === bad.split('\n').length)).toBe(true);
    expect(err.message).toContain('fused_exp_add');
    expect(err.message).toContain('exp, add');
    expect(err.message).toContain('fn broken');
    // A failure is not cached: asking again reports it again.
    expect(E.isLeft(await d.pipeline({ wgsl: bad, label: 'fused_exp_add' })())).toBe(true);
  });

  test('a type error and a missing entry point are Validation errors too', async () => {
    const typeErr = await d.pipeline({ wgsl: ADD_ONE.replace('+ 1.0', '+ 1u'), label: 'mixed_types' })();
    expect(E.isLeft(typeErr) && typeErr.left._tag === 'Validation').toBe(true);
    const noEntry = await d.pipeline({ wgsl: ADD_ONE, entryPoint: 'nope', label: 'no_entry' })();
    expect(E.isLeft(noEntry) && noEntry.left._tag === 'Validation' && noEntry.left.label === 'no_entry').toBe(true);
  });

  test('an over-sized allocation is a typed OutOfMemory failure', () => {
    expect(() => d.alloc(d.limits.maxBufferSize + 1)).toThrow(DeviceFailure);
  });
});
