// Horizontal fusion (core/wgsl/merge.ts, groupSteps in core/runtime.ts): small independent kernels share a
// dispatch, give the interpreter's values, and never share a scratch buffer with a group's inputs.

import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import type { Node } from '../core/node.js';
import { interpret } from '../core/interp.js';
import { compileKernels, planScratch, runGraph } from '../core/runtime.js';
import { schedule } from '../core/schedule/index.js';
import { mergeKernels } from '../core/wgsl/merge.js';
import { gpuDevice } from './gpu.js';
import './setup.js';

const LIMITS = { maxBindings: 8, maxSharedBytes: 16384, maxPerDimension: 65535 };
const kernel = (size: string, bindings: number, shared = '') => ({
  wgsl: `${Array.from({ length: bindings }, (_, i) => `@group(0) @binding(${i}) var<storage, read_write> b${i}: array<f32>;`).join('\n')}
${shared}
@compute @workgroup_size(${size})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) { b0[gid.x] = 1.0; }`,
  workgroups: [3, 1, 1] as const, label: 'k',
});

describe('mergeKernels', () => {
  it('renumbers bindings, prefixes names, and lays the parts\' workgroups end to end', () => {
    const m = mergeKernels([kernel('64', 2), kernel('64', 3)], LIMITS)!;
    expect(m.workgroups).toEqual([6, 1, 1]);
    expect([...m.wgsl.matchAll(/@binding\((\d+)\)/g)].map((x) => Number(x[1]))).toEqual([0, 1, 2, 3, 4]);
    expect(m.wgsl).toContain('p1_b0[gid.x]');
    expect(m.wgsl).toMatch(/if \(q < 3u\)[\s\S]*else if \(q < 6u\)/);
  });

  it('refuses different workgroup sizes, too many bindings, or too much workgroup memory', () => {
    expect(mergeKernels([kernel('64', 2), kernel('8, 8', 2)], LIMITS)).toBeNull();
    expect(mergeKernels([kernel('64', 5), kernel('64', 4)], LIMITS)).toBeNull();
    const big = 'var<workgroup> S: array<vec4<f32>, 600>;'; // 9600 bytes each
    const other = 'var<workgroup> T: array<vec4<f32>, 600>;';
    expect(mergeKernels([kernel('64', 1, big), kernel('64', 1, other)], LIMITS)).toBeNull();
    expect(mergeKernels([kernel('64', 1, big), kernel('64', 1, big)], LIMITS)).not.toBeNull(); // same array: shared
  });
});

describe.skipIf(!gpuDevice)('shared dispatches on WebGPU', () => {
  const dev = gpuDevice!;
  const rand = (shape: number[], seed: number) => C.tensor(Float32Array.from({ length: shape[0]! * shape[1]! }, (_, i) => Math.sin(seed * 7.1 + i * 0.37)), { shape });

  it('independent weight-gradient-shaped matmuls and row sums run in fewer dispatches, with the interpreter\'s values', async () => {
    C.setBackend('webgpu');
    const build = () => {
      const xs = [0, 1, 2].map((i) => rand([512, 64 + 16 * i], i));
      const gs = [0, 1, 2].map((i) => rand([512, 64], 10 + i));
      const dws = xs.map((x, i) => C.matmul(C.transpose(x), gs[i]!)); // (64+16i, 64) from K = 512
      const sums = gs.map((g) => C.sum(C.mul(g, g), [0]));
      const chained = C.matmul(dws[0]!, C.transpose(dws[1]!)); // reads two of them: not in their dispatch
      return [...dws, ...sums, chained];
    };
    const outs = build();
    const kernels = schedule(outs.map((t) => t.node));
    const compiled = await compileKernels(dev, kernels);
    expect(compiled.length).toBeLessThan(kernels.length);
    const groupOf = (n: Node) => compiled.findIndex((c) => c.kernels.some((k) => k.out === n));
    const chainedAt = groupOf(outs[6]!.node);
    expect(chainedAt).toBeGreaterThan(groupOf(outs[0]!.node));
    expect(chainedAt).toBeGreaterThan(groupOf(outs[1]!.node));
    const want = interpret(build().map((t) => t.node));
    await runGraph(dev, outs.map((t) => t.node));
    for (const [i, t] of outs.entries()) {
      const got = await C.data(t);
      for (let j = 0; j < got.length; j++) expect(Math.abs(got[j]! - want[i]![j]!), `output ${i} element ${j}`).toBeLessThan(2e-3 * (1 + Math.abs(want[i]![j]!)));
      t.dispose();
    }
  });

  it('dealt across the workers (spread), every workgroup of every part runs exactly once', async () => {
    // Each invocation counts itself at its global index of its part's output: all ones, nothing past the ends.
    const part = (n: number, gx: number) => ({
      wgsl: `@group(0) @binding(0) var<storage, read_write> hits: array<atomic<u32>>;
@compute @workgroup_size(4)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) { atomicAdd(&hits[gid.x + gid.y * nw.x * 4u], 1u); }`,
      workgroups: [gx, n / gx, 1] as const, label: `p${n}`,
    });
    for (const spread of [1, 2, 3]) {
      const m = mergeKernels([part(5, 5), part(6, 2), part(1, 1)], { ...LIMITS, spread })!;
      if (spread > 1) expect(m.wgsl).toContain(`* ${spread}u + hz_q /`);
      const sizes = [5, 6, 1].map((n) => n * 4 * 4 + 16); // a guard word past each part's end
      const bufs = sizes.map((b) => dev.alloc(b));
      bufs.forEach((b, i) => dev.upload(b, new Uint32Array(sizes[i]! / 4)));
      const pipeline = await dev.pipeline({ wgsl: m.wgsl, label: 'spread' })();
      if (pipeline._tag === 'Left') throw new Error(pipeline.left.message);
      dev.encode([{ pipeline: pipeline.right, bindGroup: dev.bindGroup(pipeline.right, bufs.map((buffer, i) => ({ buffer, size: sizes[i]! }))), workgroups: m.workgroups }]);
      for (const [i, b] of bufs.entries()) {
        const got = new Uint32Array((await dev.readback(b, sizes[i]!)).buffer);
        expect([...got], `spread ${spread}, part ${i}`).toEqual([...Array<number>(sizes[i]! / 4 - 4).fill(1), 0, 0, 0, 0]);
        dev.free(b);
      }
    }
  });

  it('a group\'s outputs never take the buffer of an input the group reads last', () => {
    const x = C.tensor([1, 2, 3, 4]);
    const [a, b, c] = [C.exp(x), C.neg(x), C.tanh(x)].map((t) => t.node);
    const k = (out: Node, inputs: Node[]) => ({ kind: 'gather' as const, out, inputs });
    const ka = k(a!, [x.node]), kb = k(b!, [a!]), kc = k(c!, [x.node]);
    const scratch = planScratch(dev, [[ka], [kb, kc]], new Set());
    expect(scratch.get(c!)).not.toBe(scratch.get(a!));
    expect(scratch.get(b!)).not.toBe(scratch.get(a!));
    for (const buf of new Set(scratch.values())) dev.free(buf);
  });
});
