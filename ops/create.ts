// Creating tensors: from nested arrays or typed arrays (a constant buffer node), and constant fills.

import { allocStorage, isDType, type DType, type Storage } from '../core/dtype.js';
import { makeNode, type BufferOp } from '../core/node.js';
import { checkShape, fmt, numel, ShapeError, type Shape } from '../core/shape.js';
import { Tensor } from '../core/tensor.js';
import { add, cast, iota, mul } from './elementwise.js';
import { scalar, storeExact as store } from './lift.js';
import { broadcastTo } from './movement.js';

let nextConst = 1;
/** A leaf holding host data (the node's `cpu` storage). */
export const constOp: BufferOp = {
  name: 'const',
  kind: 'buffer',
  infer: (_s, a) => ({ shape: a.shape, dtype: a.dtype }),
};

/** Wrap storage (taken over, not copied) as a tensor. */
export const fromStorage = <D extends DType>(data: Storage, shape: Shape, dtype: D): Tensor<D> => {
  checkShape('tensor', shape);
  if (data.length !== numel(shape)) throw new ShapeError(`tensor: ${data.length} values do not fill shape ${fmt(shape)} (${numel(shape)} elements)`);
  const node = makeNode(constOp, [], { id: nextConst++, shape: [...shape], dtype });
  node.cpu = data;
  return new Tensor<D>(node);
};

export type NestedArray = number | boolean | readonly NestedArray[];
type TypedInput = Float32Array | Float64Array | Int32Array | Uint32Array | Uint8Array | Uint16Array | Int16Array | Int8Array;

const dtypeOfTyped = (d: TypedInput): DType =>
  d instanceof Float64Array ? 'f64' : d instanceof Int32Array ? 'i32' : d instanceof Uint32Array ? 'u32' : d instanceof Uint8Array ? 'bool' : 'f32';

const shapeOf = (x: NestedArray, path: string): number[] => {
  if (!Array.isArray(x)) {
    if (typeof x !== 'number' && typeof x !== 'boolean') throw new ShapeError(`tensor: element at ${path || 'top'} is ${typeof x}, not a number`);
    return [];
  }
  const arr = x as readonly NestedArray[];
  if (arr.length === 0) return [0];
  const inner = shapeOf(arr[0]!, `${path}[0]`);
  for (let i = 1; i < arr.length; i++) {
    const s = shapeOf(arr[i]!, `${path}[${i}]`);
    if (s.length !== inner.length || s.some((d, k) => d !== inner[k])) {
      throw new ShapeError(`tensor: ragged nested array: ${path}[${i}] has shape ${fmt(s)} but ${path}[0] has ${fmt(inner)}`);
    }
  }
  return [arr.length, ...inner];
};

export interface TensorOpts { readonly dtype?: DType; readonly shape?: Shape }

/** Nested-array path of flat element i in shape, e.g. [1][0]. */
const pathOf = (shape: Shape, i: number): string => {
  let s = '';
  for (let d = shape.length - 1, r = i; d >= 0; d--) { s = `[${r % shape[d]!}]${s}`; r = Math.floor(r / shape[d]!); }
  return s || '(the scalar)';
};

/**
 * A tensor from nested arrays, a number, or a typed array (with `shape`). Float dtypes take any value (rounded to
 * the dtype; non-finite allowed). i32, u32 and bool take only values they hold exactly: a fraction, NaN, ±Infinity,
 * an out-of-range integer, or a bool other than true/false/0/1 is a DTypeError naming the element (to truncate on
 * purpose, build a float tensor and `cast` it).
 * @example tensor([[1, 2], [3, 4]]) // f32 (2, 2)
 * @example tensor(new Float32Array(6), { shape: [2, 3] })
 * @example tensor([3, 1, 4], { dtype: 'i32' }) // tensor([1.5], { dtype: 'i32' }) throws
 */
export const tensor = (data: NestedArray | TypedInput, opts: TensorOpts = {}): Tensor => {
  if (opts.dtype !== undefined && !isDType(opts.dtype)) throw new ShapeError(`tensor: unknown dtype '${String(opts.dtype)}' (expected f32, f64, f16, i32, u32 or bool)`);
  if (ArrayBuffer.isView(data)) {
    const dtype = opts.dtype ?? dtypeOfTyped(data);
    const shape = opts.shape ?? [data.length];
    const out = allocStorage(dtype, data.length);
    for (let i = 0; i < data.length; i++) out[i] = store('tensor', dtype, data[i]!, () => `element at index ${i}`);
    return fromStorage(out, shape, dtype);
  }
  const shape = shapeOf(data, '');
  if (opts.shape && numel(opts.shape) !== numel(shape)) throw new ShapeError(`tensor: data of shape ${fmt(shape)} does not fit shape ${fmt(opts.shape)}`);
  const flat = (Array.isArray(data) ? (data as unknown[]).flat(Infinity) : [data]) as (number | boolean)[];
  const dtype = opts.dtype ?? (typeof flat[0] === 'boolean' ? 'bool' : 'f32');
  const out = allocStorage(dtype, flat.length);
  for (let i = 0; i < flat.length; i++) out[i] = store('tensor', dtype, Number(flat[i]), () => `element ${pathOf(shape, i)}`);
  return fromStorage(out, opts.shape ?? shape, dtype);
};

/** A constant-filled tensor (no buffer: the value is broadcast in index math); the value must fit the dtype as in tensor(). */
export const full = (shape: Shape, value: number, dtype: DType = 'f32'): Tensor =>
  broadcastTo(scalar(store('full', dtype, value, () => 'the value'), dtype), checkShape('full', shape));
export const zeros = (shape: Shape, dtype: DType = 'f32'): Tensor => full(shape, 0, dtype);
export const ones = (shape: Shape, dtype: DType = 'f32'): Tensor => full(shape, 1, dtype);
export const zerosLike = (x: Tensor): Tensor => zeros(x.shape, x.dtype);
export const onesLike = (x: Tensor): Tensor => ones(x.shape, x.dtype);

/** start, start+step, … below stop (numpy's arange). */
export const arange = (start: number, stop?: number, step = 1, dtype: DType = 'f32'): Tensor => {
  const [a, b] = stop === undefined ? [0, start] : [start, stop];
  if (step === 0) throw new ShapeError('arange: step must not be 0');
  const n = Math.max(0, Math.ceil((b - a) / step));
  return add(mul(cast(iota(n, 'i32'), dtype), step), a);
};
