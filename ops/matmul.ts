// Batched matrix multiply: (…, M, K) · (…, K, N) → (…, M, N) with broadcast batch dimensions.
// CPU meaning here; the WGSL meaning is the tiled template in core/wgsl/matmul.ts, chosen by the scheduler.

import { allocStorage, isFloat } from '../core/dtype.js';
import type { CustomOp } from '../core/node.js';
import { broadcastShapes, DTypeError, fmt, numel, ShapeError } from '../core/shape.js';
import { apply, type Tensor } from '../core/tensor.js';
import { broadcastView } from '../core/interp.js';
import { broadcastTo, reshape, swapAxes } from './movement.js';

export const matmulOp: CustomOp<null> = {
  name: 'matmul',
  kind: 'custom',
  template: 'matmul',
  infer: ([a, b]) => {
    const sa = a!.shape, sb = b!.shape;
    if (sa.length < 2 || sb.length < 2) throw new ShapeError(`matmul: operands must have rank ≥ 2, got ${fmt(sa)} and ${fmt(sb)}`);
    if (a!.dtype !== b!.dtype || !isFloat(a!.dtype)) throw new DTypeError(`matmul: needs two float operands of one dtype, got ${a!.dtype}${fmt(sa)} and ${b!.dtype}${fmt(sb)}`);
    const k1 = sa[sa.length - 1]!, k2 = sb[sb.length - 2]!;
    if (k1 !== k2) throw new ShapeError(`matmul: cannot contract ${fmt(sa)} with ${fmt(sb)}: inner dimensions ${k1} and ${k2} differ`);
    const batch = broadcastShapes('matmul', sa.slice(0, -2), sb.slice(0, -2));
    return { shape: [...batch, sa[sa.length - 2]!, sb[sb.length - 1]!], dtype: a!.dtype };
  },
  cpu: ([a, b], _arg, out) => {
    const r = out.shape.length;
    const M = out.shape[r - 2]!, N = out.shape[r - 1]!, K = a!.view.shape[a!.view.shape.length - 1]!;
    const batch = out.shape.slice(0, -2);
    const va = broadcastView(a!.view, [...batch, M, K]);
    const vb = broadcastView(b!.view, [...batch, K, N]);
    const res = allocStorage(out.dtype, numel(out.shape));
    const nb = numel(batch);
    const ad = a!.data, bd = b!.data;
    const bi = new Array<number>(batch.length).fill(0);
    const [am, ak] = [va.strides[r - 2]!, va.strides[r - 1]!];
    const [bk, bn] = [vb.strides[r - 2]!, vb.strides[r - 1]!];
    const row = new Float64Array(N);
    for (let t = 0; t < nb; t++) {
      let ao = va.offset, bo = vb.offset;
      for (let d = 0; d < batch.length; d++) { ao += bi[d]! * va.strides[d]!; bo += bi[d]! * vb.strides[d]!; }
      for (let i = 0; i < M; i++) {
        row.fill(0);
        for (let k = 0; k < K; k++) {
          const x = ad[ao + i * am + k * ak]!;
          const bb = bo + k * bk;
          for (let j = 0; j < N; j++) row[j] = row[j]! + x * bd[bb + j * bn]!;
        }
        res.set(row, (t * M + i) * N);
      }
      for (let d = batch.length - 1; d >= 0; d--) { if (++bi[d]! < batch[d]!) break; bi[d] = 0; }
    }
    return res;
  },
  vjp: (g, _o, [a, b]) => [matmul(g, swapAxes(b!)), matmul(swapAxes(a!), g)],
};

/**
 * Matrix product with numpy's rules: batch dimensions broadcast; a 1-D operand is a row (left) or column (right)
 * vector whose added axis is removed from the result.
 * @example matmul(x, w) // (B, T, dim) · (dim, hidden) → (B, T, hidden)
 */
export const matmul = (a: Tensor, b: Tensor): Tensor => {
  // A batch of rows times one matrix is one (rows, K)·(K, N) product: its weight gradient is then a single
  // matmul, not a batched one summed over the batch.
  if (a.rank > 2 && b.rank === 2) {
    const lead = a.shape.slice(0, -1);
    return reshape(matmul(reshape(a, [-1, a.shape[a.rank - 1]!]), b), [...lead, b.shape[1]!]);
  }
  const a2 = a.rank === 1 ? reshape(a, [1, a.shape[0]!]) : a;
  const b2 = b.rank === 1 ? reshape(b, [b.shape[0]!, 1]) : b;
  // Batch dimensions are broadcast explicitly (as views), so kernels see equal batch shapes.
  const batch = broadcastShapes('matmul', a2.shape.slice(0, -2), b2.shape.slice(0, -2));
  const c = apply(matmulOp, [broadcastTo(a2, [...batch, ...a2.shape.slice(-2)]), broadcastTo(b2, [...batch, ...b2.shape.slice(-2)])]);
  if (a.rank > 1 && b.rank > 1) return c;
  const s = c.shape.slice(0, -2);
  return reshape(c, [...s, ...(a.rank > 1 ? [c.shape[c.rank - 2]!] : []), ...(b.rank > 1 ? [c.shape[c.rank - 1]!] : [])]);
};
