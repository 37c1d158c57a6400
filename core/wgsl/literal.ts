// WGSL spellings of dtypes and constants.

import type { DType } from '../dtype.js';

/** The WGSL type of a value in expressions (bool stays bool; buffers store it as u32). */
export const exprType = (d: DType): string => {
  if (d === 'f64') throw new Error('f64 runs on the CPU interpreter only: cast to f32 for WebGPU');
  return d;
};
/** The WGSL element type of a storage buffer holding this dtype. */
export const storeType = (d: DType): string => (d === 'bool' ? 'u32' : exprType(d));

export const literal = (v: number, d: DType): string => {
  if (d === 'bool') return v ? 'true' : 'false';
  if (d === 'i32') return v === -2147483648 ? 'i32(-2147483647 - 1)' : `i32(${v | 0})`;
  if (d === 'u32') return `${v >>> 0}u`;
  const t = exprType(d);
  // Non-finite values are not constant expressions in WGSL: build them at run time from their bits.
  if (t === 'f16' && !Number.isFinite(v)) throw new Error('f16 non-finite literals are not supported on WebGPU');
  if (Number.isNaN(v)) return 'f32_bits(0x7fc00000u)';
  if (!Number.isFinite(v)) return `f32_bits(${v > 0 ? '0x7f800000' : '0xff800000'}u)`;
  return `${t}(${v})`;
};

/** Declared in every generated kernel: the run-time route to ±inf and NaN. */
export const LITERAL_PRELUDE = 'fn f32_bits(b: u32) -> f32 { return bitcast<f32>(b); }';
