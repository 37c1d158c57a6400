// Kernels for data-dependent indexing: gather (row lookup) and scatter-add (its adjoint, with a float
// atomic add built from compare-exchange, since WGSL has no atomic<f32>). An index out of range is reported
// into the device's fault words (read with the next readback) and becomes the interpreter's very error.

import { numel, ShapeError } from '../shape.js';
import type { Kernel } from '../schedule/index.js';
import type { Node } from '../node.js';
import type { DType } from '../dtype.js';

type IndexKernel = Kernel & { readonly kind: 'gather' | 'scatterAdd' };
import { storeType } from './literal.js';
import { WG, type RenderedKernel } from './fused.js';

/** The error for an index out of [0, n): the same words on every backend. */
export const indexRangeError = (op: string, index: number, position: number, n: number): ShapeError =>
  new ShapeError(`${op}: index ${index} at position ${position} is out of range [0, ${n})`);

/** Host-side check of indices (token ids uploaded from the host): the first bad one, as the interpreter finds it. */
export const checkIndices = (op: string, ix: ArrayLike<number>, n: number): void => {
  for (let k = 0; k < ix.length; k++) {
    const i = ix[k]!;
    if (!(i >= 0 && i < n)) throw indexRangeError(op, i, k, n);
  }
};

// Fault words (Device.faults, 8 u32): [count, op, index bits, position, range, index is i32]. Every invocation with
// a bad index adds to the count; only the first writes the rest, so they describe one consistent index.
const FAULT_OPS = ['', 'gather', 'scatterAdd'] as const;
const faultDecl = (binding: number) => `@group(0) @binding(${binding}) var<storage, read_write> faults: array<atomic<u32>, 8>;
fn report_fault(op: u32, index: u32, position: u32, range: u32, signed: u32) {
  if (atomicAdd(&faults[0], 1u) == 0u) {
    atomicStore(&faults[1], op);
    atomicStore(&faults[2], index);
    atomicStore(&faults[3], position);
    atomicStore(&faults[4], range);
    atomicStore(&faults[5], signed);
  }
}`;
const faultCall = (op: number, idx: DType, i: string, pos: string, range: number) =>
  `report_fault(${op}u, ${idx === 'i32' ? `bitcast<u32>(${i})` : i}, ${pos}, ${range}u, ${idx === 'i32' ? 1 : 0}u)`;

/** The error a kernel's fault words stand for (words as read back by Device.readback). */
export const faultError = (words: readonly number[]): Error => {
  const [count = 0, op = 0, bits = 0, position = 0, range = 0, signed = 0] = words;
  const name = FAULT_OPS[op];
  if (!name) return new Error(`webgpu: a kernel reported an unknown fault (words ${words.join(', ')})`);
  const err = indexRangeError(name, signed ? bits | 0 : bits >>> 0, position, range);
  if (count > 1) err.message += ` (one of ${count} out-of-range indices found on the device)`;
  return err;
};

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
  // A bad index is reported once per index (by the invocation of its row's first element) and read clamped.
  const wgsl = `@group(0) @binding(0) var<storage, read> in0: array<${storeType(table.dtype)}>;
@group(0) @binding(1) var<storage, read> in1: array<${storeType(idx.dtype)}>;
@group(0) @binding(2) var<storage, read_write> out0: array<${storeType(k.out.dtype)}>;
${faultDecl(3)}
${head(n)}
  let i = in1[e / ${row}u];
  let r = u32(i);
  if (r >= ${V}u && e % ${row}u == 0u) { ${faultCall(1, idx.dtype, 'i', `e / ${row}u`, V)}; }
  out0[e] = in0[min(r, ${V - 1}u) * ${row}u + e % ${row}u];
}`;
  return [{ wgsl, workgroups: grid(n), label, faults: true }];
};

export const renderScatterAdd = (k: IndexKernel, label: string): RenderedKernel[] => {
  const [upd, idx] = k.inputs as [Node, Node];
  if (k.out.dtype !== 'f32') throw new Error(`scatterAdd on WebGPU supports f32, got ${k.out.dtype}`);
  const row = numel(k.out.shape.slice(1));
  const V = k.out.shape[0]!;
  const total = numel(k.out.shape), n = numel(upd.shape);
  const decl = `@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read> in1: array<${storeType(idx.dtype)}>;
@group(0) @binding(2) var<storage, read_write> out0: array<atomic<u32>>;
${faultDecl(3)}`;
  const zero = `@group(0) @binding(0) var<storage, read_write> out0: array<u32>;\n${head(total)}\n  out0[e] = 0u;\n}`;
  const add = `${decl}
${head(n)}
  let i = in1[e / ${row}u];
  let r = u32(i);
  if (r >= ${V}u) {
    if (e % ${row}u == 0u) { ${faultCall(2, idx.dtype, 'i', `e / ${row}u`, V)}; }
    return;
  }
  let p = r * ${row}u + e % ${row}u;
  var old = atomicLoad(&out0[p]);
  loop {
    let res = atomicCompareExchangeWeak(&out0[p], old, bitcast<u32>(bitcast<f32>(old) + in0[e]));
    if (res.exchanged) { break; }
    old = res.old_value;
  }
}`;
  return [{ wgsl: zero, workgroups: grid(total), label: `${label}:zero`, use: [2] }, { wgsl: add, workgroups: grid(n), label, faults: true }];
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
