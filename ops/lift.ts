// Scalar lifting and dtype agreement shared by every op family.

import { coerce, type DType } from '../core/dtype.js';
import { DTypeError, fmt } from '../core/shape.js';
import { apply, isTensor, type Tensor } from '../core/tensor.js';
import type { ElementwiseOp } from '../core/node.js';
import { literal } from '../core/wgsl/literal.js';

export type TensorLike = Tensor | number;

/** A scalar constant (shape ()). Baked into kernels as a literal; use a tensor input for values that change. */
export const fillOp: ElementwiseOp<{ value: number; dtype: DType }> = {
  name: 'fill',
  kind: 'elementwise',
  infer: (_s, a) => ({ shape: [], dtype: a.dtype }),
  cpu: (_x, _i, a) => a.value,
  wgsl: (_x, _i, a) => literal(a.value, a.dtype),
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
