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

const HOLDS: Partial<Record<DType, string>> = {
  i32: 'an integer in [-2147483648, 2147483647]', u32: 'an integer in [0, 4294967295]', bool: 'true, false, 0 or 1',
};

/**
 * The value a dtype stores for x, or a DTypeError naming the element when an integer or bool dtype cannot hold x
 * exactly (NaN, ±Infinity, a fraction, out of range, or a bool other than 0/1): never a silent truncation or wrap.
 * Float dtypes round as usual. `where` names the element (a flat index, or a nested path like [1][0]).
 */
export const storeExact = (op: string, dtype: DType, x: number, where: () => string): number => {
  const v = coerce(dtype, x);
  if (v !== x && HOLDS[dtype] !== undefined) {
    throw new DTypeError(`${op}: ${where()} is ${x}, which ${dtype} cannot hold (${HOLDS[dtype]}); ${dtype === 'bool' ? 'to take truthiness on purpose' : 'to truncate on purpose'}, build a float tensor and cast() it`);
  }
  return v;
};

/**
 * Turn numbers into scalars of the tensor operands' dtype; all tensor operands must agree. A number an integer or
 * bool operand cannot hold (add(i32, 1.5)) is an error, as in tensor(): camelid never promotes or truncates silently.
 * Errors count operands from `first` (where's branches are its operands 1 and 2).
 */
export const lift = (op: string, xs: readonly TensorLike[], dtype?: DType, first = 0): Tensor[] => {
  const ts = xs.filter(isTensor);
  const d = dtype ?? ts[0]?.dtype ?? 'f32';
  for (const t of ts) {
    if (t.dtype !== d) {
      throw new DTypeError(`${op}: dtype mismatch: ${ts.map((u) => `${u.dtype}${fmt(u.shape)}`).join(' vs ')} (cast one operand first)`);
    }
  }
  return xs.map((x, i) => (isTensor(x) ? x : scalar(storeExact(op, d, x, () => `operand ${first + i} (a number, for ${ts.map((u) => `${u.dtype}${fmt(u.shape)}`).join(', ') || d})`), d)));
};
