// The NF4 matmul kernel (ops/nf4.ts): y = x·deq(W)ᵀ, or g·deq(W) for the input gradient, with W's 4-bit codes and
// block statistics read and dequantised as each element is loaded, so the f32 weight is never stored. One
// invocation per output element; the code book and the double-quantisation map are buffers (a file's own maps).

import type { Kernel } from '../schedule/index.js';
import type { Node } from '../node.js';
import { grid, head } from './indexing.js';
import type { RenderedKernel } from './fused.js';

interface Nf4Arg { readonly transpose: boolean; readonly out: number; readonly in: number; readonly blockSize: number; readonly double: boolean }

/** The kernel's bindings are its inputs in source order (x, codes, quantMap, statistics…), then the output. */
export const renderNf4 = (k: Kernel & { readonly kind: 'nf4' }, label: string): RenderedKernel[] => {
  const a = k.out.arg as Nf4Arg;
  const [M, N] = k.out.shape as [number, number];
  const K = a.transpose ? a.out : a.in;
  // Sources through identity ops (gradient tags) resolve to the bound inputs.
  const slot = (n: Node): number => {
    let s = n;
    while (k.inputs.indexOf(s) < 0 && s.op.kind === 'elementwise' && s.src.length === 1) s = s.src[0]!;
    const i = k.inputs.indexOf(s);
    if (i < 0) throw new Error(`nf4 kernel ${label}: source ${n.op.name} is not among the kernel's inputs`);
    return i;
  };
  const src = k.out.src.map(slot);
  const [x, codes, map, s0, s1, s2, s3] = src.map((i) => `in${i}`) as [string, string, string, string, string?, string?, string?];
  const decl = k.inputs.map((n, i) => `@group(0) @binding(${i}) var<storage, read> in${i}: array<${n.dtype === 'u32' ? 'u32' : 'f32'}>;`).join('\n');
  const scale = a.double
    ? `${s3}[(${s0}[b >> 2u] >> ((b & 3u) * 8u)) & 255u] * ${s1}[b >> 8u] + ${s2}[0]`
    : `${s0}[b]`;
  const wgsl = `${decl}
@group(0) @binding(${k.inputs.length}) var<storage, read_write> out0: array<f32>;
fn weightAt(e: u32) -> f32 {
  let word = ${codes}[e >> 3u];
  let code = ${map}[(word >> (((e >> 1u) & 3u) * 8u + select(0u, 4u, (e & 1u) == 0u))) & 15u];
  let b = e / ${a.blockSize}u;
  return code * (${scale});
}
${head(M * N)}
  let m = e / ${N}u;
  let j = e % ${N}u;
  var acc = 0.0;
  for (var t = 0u; t < ${K}u; t++) {
    acc += ${x}[m * ${K}u + t] * weightAt(${a.transpose ? `t * ${a.in}u + j` : `j * ${a.in}u + t`});
  }
  out0[e] = acc;
}`;
  return [{ wgsl, workgroups: grid(M * N), label }];
};
