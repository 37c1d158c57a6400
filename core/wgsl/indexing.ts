// Kernels for data-dependent indexing: gather (row lookup) and scatter-add (its adjoint, with a float
// atomic add built from compare-exchange, since WGSL has no atomic<f32>).

import { numel } from '../shape.js';
import type { Kernel } from '../schedule/index.js';
import type { Node } from '../node.js';

type IndexKernel = Kernel & { readonly kind: 'gather' | 'scatterAdd' };
import { storeType } from './literal.js';
import { WG, type RenderedKernel } from './fused.js';

/** Workgroups covering n invocations of WG threads, spread over y past the 32768 x limit. */
export const grid = (n: number): [number, number, number] => {
  const g = Math.ceil(n / WG);
  const x = Math.min(g, 32768);
  return [Math.max(1, x), Math.ceil(g / Math.max(1, x)), 1];
};
/** Kernel entry: `e` is the invocation's flat index; invocations past n return at once. */
export const head = (n: number) => `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * ${WG}u;
  if (e >= ${n}u) { return; }`;

export const renderGather = (k: IndexKernel, label: string): RenderedKernel[] => {
  const [table, idx] = k.inputs as [Node, Node];
  const row = numel(table.shape.slice(1));
  const V = table.shape[0]!;
  const n = numel(k.out.shape);
  const wgsl = `@group(0) @binding(0) var<storage, read> in0: array<${storeType(table.dtype)}>;
@group(0) @binding(1) var<storage, read> in1: array<${storeType(idx.dtype)}>;
@group(0) @binding(2) var<storage, read_write> out0: array<${storeType(k.out.dtype)}>;
${head(n)}
  let r = min(u32(in1[e / ${row}u]), ${V - 1}u);
  out0[e] = in0[r * ${row}u + e % ${row}u];
}`;
  return [{ wgsl, workgroups: grid(n), label }];
};

export const renderScatterAdd = (k: IndexKernel, label: string): RenderedKernel[] => {
  const [upd, idx] = k.inputs as [Node, Node];
  if (k.out.dtype !== 'f32') throw new Error(`scatterAdd on WebGPU supports f32, got ${k.out.dtype}`);
  const row = numel(k.out.shape.slice(1));
  const V = k.out.shape[0]!;
  const total = numel(k.out.shape), n = numel(upd.shape);
  const decl = `@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<${storeType(idx.dtype)}>;
@group(0) @binding(2) var<storage, read_write> out0: array<atomic<u32>>;`;
  const zero = `@group(0) @binding(0) var<storage, read_write> out0: array<u32>;\n${head(total)}\n  out0[e] = 0u;\n}`;
  const add = `${decl}
${head(n)}
  let r = u32(in1[e / ${row}u]);
  if (r >= ${V}u) { return; }
  let p = r * ${row}u + e % ${row}u;
  var old = atomicLoad(&out0[p]);
  loop {
    let res = atomicCompareExchangeWeak(&out0[p], old, bitcast<u32>(bitcast<f32>(old) + in0[e]));
    if (res.exchanged) { break; }
    old = res.old_value;
  }
}`;
  return [{ wgsl: zero, workgroups: grid(total), label: `${label}:zero`, use: [2] }, { wgsl: add, workgroups: grid(n), label }];
};

/**
 * writeAt: [copy dst → out] then write src's block at pos along the axis. With `inPlace` the out buffer is dst's
 * own and only the write runs. Step buffers: [dst, src, pos, out].
 */
export const renderUpdate = (k: Kernel & { readonly kind: 'update' }, label: string, inPlace: boolean): RenderedKernel[] => {
  const src = k.inputs[1]!;
  const t = storeType(k.out.dtype);
  const shape = k.out.shape, T = shape[k.axis]!, L = src.shape[k.axis]!;
  const inner = numel(shape.slice(k.axis + 1));
  const n = numel(src.shape), total = numel(shape);
  const copy = `@group(0) @binding(0) var<storage, read> in0: array<${t}>;
@group(0) @binding(1) var<storage, read_write> out0: array<${t}>;
${head(total)}
  out0[e] = in0[e];
}`;
  const write = `@group(0) @binding(0) var<storage, read> in1: array<${t}>;
@group(0) @binding(1) var<storage, read> in2: array<i32>;
@group(0) @binding(2) var<storage, read_write> out0: array<${t}>;
${head(n)}
  let p = u32(clamp(in2[0], 0, ${T - L}));
  let o = e / ${L * inner}u;
  let r = e % ${L * inner}u;
  out0[(o * ${T}u + p) * ${inner}u + r] = in1[e];
}`;
  const w: RenderedKernel = { wgsl: write, workgroups: grid(n), label, use: [1, 2, 3] };
  return inPlace ? [w] : [{ wgsl: copy, workgroups: grid(total), label: `${label}:copy`, use: [0, 3] }, w];
};
