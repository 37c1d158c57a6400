// The NF4 matmul (ops/nf4.ts): y = x·deq(W)ᵀ, or g·deq(W) for the input gradient, as the tiled (or GEMV) matmul
// template with its B operand computed on load: each element of a B tile is dequantised from W's 4-bit code and
// its block's absmax as the tile is filled, so the f32 weight is never stored. The code book and the double
// quantisation map are buffers (a file's own maps).

import type { Kernel } from '../schedule/index.js';
import type { Node } from '../node.js';
import { matmulKernel, type MatmulTiles } from './matmul.js';
import type { RenderedKernel } from './fused.js';

interface Nf4Arg { readonly transpose: boolean; readonly out: number; readonly in: number; readonly blockSize: number; readonly double: boolean }

const STAT_NAMES = ['nfCodes', 'nfMap', 'nfS0', 'nfS1', 'nfS2', 'nfS3'];

/**
 * The kernel for an `nf4` schedule kernel; `tiles` picks the matmul tiling for (M, N) on the device. Bindings are
 * x, the output, then codes, code book and statistics (the step's buffers reordered through `use`).
 */
export const renderNf4 = (k: Kernel & { readonly kind: 'nf4' }, label: string, tiles: (s: { M: number; N: number }) => MatmulTiles): RenderedKernel[] => {
  // The kernel's out may be a view of the product (a reshape the scheduler stores as it): find the product itself.
  let mm = k.out;
  while (!(mm.op.kind === 'custom' && mm.op.template === 'nf4') && mm.src.length > 0) mm = mm.src[0]!;
  const a = mm.arg as Nf4Arg;
  const [M, N] = mm.shape as [number, number];
  const K = a.transpose ? a.out : a.in;
  // Sources through identity ops (gradient tags) resolve to the bound inputs.
  const slot = (n: Node): number => {
    let s = n;
    while (k.inputs.indexOf(s) < 0 && s.op.kind === 'elementwise' && s.src.length === 1) s = s.src[0]!;
    const i = k.inputs.indexOf(s);
    if (i < 0) throw new Error(`nf4 kernel ${label}: source ${n.op.name} is not among the kernel's inputs`);
    return i;
  };
  const [x, ...rest] = mm.src.map(slot) as [number, ...number[]];
  const names = STAT_NAMES.slice(0, rest.length);
  const [codes, map, s0, s1, s2, s3] = names as [string, string, string, string?, string?, string?];
  const scale = a.double ? `${s3}[(${s0}[b >> 2u] >> ((b & 3u) * 8u)) & 255u] * ${s1}[b >> 8u] + ${s2}[0]` : `${s0}[b]`;
  // B[k, n] is W[n, k] (forward, x·Wᵀ) or W[k, n] (input gradient, g·W); W is (out, in) row-major.
  const prelude = `fn pb(batch: u32, r: u32, c: u32) -> f32 {
  let e = ${a.transpose ? `r * ${a.in}u + c` : `c * ${a.in}u + r`};
  let word = ${codes}[e >> 3u];
  let code = ${map}[(word >> (((e >> 1u) & 3u) * 8u + select(0u, 4u, (e & 1u) == 0u))) & 15u];
  let b = e / ${a.blockSize}u;
  return code * (${scale});
}`;
  const mk = matmulKernel({
    batch: 1, M, N, K,
    aStrides: { batch: 0, row: K, col: 1 }, bStrides: { batch: 0, row: N, col: 1 },
    bValue: 'pb', prelude, tiles: tiles({ M, N }), label,
    extraBindings: names.map((name, i) => ({ name, type: `array<${k.inputs[rest[i]!]!.dtype === 'u32' ? 'u32' : 'f32'}>` })),
  });
  return [{ wgsl: mk.wgsl, workgroups: mk.workgroups, label, use: [x, k.inputs.length, ...rest] }];
};
