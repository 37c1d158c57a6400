// Scalar lifting and dtype agreement shared by every op family.

import { coerce, type DType } from '../core/dtype.js';
import { DTypeError, fmt } from '../core/shape.js';
import { apply, isTensor, type Tensor } from '../core/tensor.js';
import type { ElementwiseOp } from '../core/node.js';

export type TensorLike = Tensor | number;

const fmtLiteral = (v: number, d: DType): string => {
  if (d === 'bool') return v ? 'true' : 'false';
  if (d === 'i32') return `i32(${v | 0})`;
  if (d === 'u32') return `${v >>> 0}u`;
  if (Number.isNaN(v)) return `bitcast<${d}>(0x7fc00000u)`.replace('f16>(0x7fc00000u', 'f16>(0x7e00u');
  if (!Number.isFinite(v)) return d === 'f16' ? `bitcast<f16>(${v > 0 ? '0x7c00' : '0xfc00'}u)` : `bitcast<f32>(${v > 0 ? '0x7f800000' : '0xff800000'}u)`;
  return `${d}(${v})`;
};

/** A scalar constant (shape ()). Baked into kernels as a literal; use a tensor input for values that change. */
export const fillOp: ElementwiseOp<{ value: number; dtype: DType }> = {
  name: 'fill',
  kind: 'elementwise',
  infer: (_s, a) => ({ shape: [], dtype: a.dtype }),
  cpu: (_x, _i, a) => a.value,
  wgsl: (_x, _i, a) => fmtLiteral(a.value, a.dtype),
};

export const scalar = <D extends DType>(value: number, dtype: D): Tensor<D> =>
  apply<D>(fillOp, [], { value: coerce(dtype, value), dtype });

/** Turn numbers into scalars of the tensor operands' dtype; all tensor operands must agree. */
export const lift = (op: string, xs: readonly TensorLike[], dtype?: DType): Tensor[] => {
  const ts = xs.filter(isTensor);
  const d = dtype ?? ts[0]?.dtype ?? 'f32';
  for (const t of ts) {
    if (t.dtype !== d) {
      throw new DTypeError(`${op}: dtype mismatch: ${ts.map((u) => `${u.dtype}${fmt(u.shape)}`).join(' vs ')} (cast one operand first)`);
    }
  }
  return xs.map((x) => (isTensor(x) ? x : scalar(x, d)));
};
