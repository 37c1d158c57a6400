// Element types: names, byte sizes, storage arrays. f64 exists on the CPU interpreter only.

export type DType = 'f32' | 'f64' | 'f16' | 'i32' | 'u32' | 'bool';
export const DTYPES: readonly DType[] = ['f32', 'f64', 'f16', 'i32', 'u32', 'bool'];

export type FloatDType = 'f32' | 'f64' | 'f16';
export const isFloat = (d: DType): d is FloatDType => d === 'f32' || d === 'f64' || d === 'f16';
export const isDType = (x: unknown): x is DType => typeof x === 'string' && (DTYPES as readonly string[]).includes(x);

/** Bytes per element on a device buffer (bool is stored as a u32 on WebGPU). */
export const byteSize = (d: DType): number => (d === 'f64' ? 8 : d === 'f16' ? 2 : 4);

export type Storage = Float64Array | Float32Array | Int32Array | Uint32Array | Uint8Array;

/** Host storage for n elements of a dtype (f16 lives in a Float32Array, rounded to half precision). */
export const allocStorage = (d: DType, n: number): Storage => {
  switch (d) {
    case 'f64': return new Float64Array(n);
    case 'f32': case 'f16': return new Float32Array(n);
    case 'i32': return new Int32Array(n);
    case 'u32': return new Uint32Array(n);
    case 'bool': return new Uint8Array(n);
  }
};

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** Round a number to the nearest f16 value (ties to even), returned as a JS number. */
export const f16round = (x: number): number => {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  if (a >= 65520) return x > 0 ? Infinity : -Infinity;
  const e = Math.max(Math.floor(Math.log2(a)), -14);
  const ulp = 2 ** (e - 10);
  let q = a / ulp;
  const f = Math.floor(q);
  const r = q - f;
  q = r > 0.5 || (r === 0.5 && f % 2 === 1) ? f + 1 : f;
  return Math.sign(x) * q * ulp;
};

/** Convert a JS number into the value a dtype stores (rounding, wrapping, truthiness). */
export const coerce = (d: DType, x: number): number => {
  switch (d) {
    case 'f64': return x;
    case 'f32': return Math.fround(x);
    case 'f16': return f16round(x);
    case 'i32': return Number.isFinite(x) ? Math.trunc(x) | 0 : 0;
    case 'u32': return Number.isFinite(x) ? Math.trunc(x) >>> 0 : 0;
    case 'bool': return x ? 1 : 0;
  }
};

/** Bit pattern of an f32, used for hashing constants. */
export const f32bits = (x: number): number => { f32buf[0] = x; return u32buf[0]!; };
