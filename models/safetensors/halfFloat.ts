// IEEE half (f16) and bfloat16 <-> float32 bit conversions, round-to-nearest-even. Pure functions on numbers and
// typed arrays; half values are carried as their raw 16-bit patterns (Uint16Array), never as JS numbers.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

const f32Bits = (x: number): number => {
  scratchF32[0] = x;
  return scratchU32[0]!;
};

const bitsF32 = (bits: number): number => {
  scratchU32[0] = bits;
  return scratchF32[0]!;
};

// bf16 is the top half of an f32. Rounding adds 0x7fff plus the kept lsb (ties go to even); a NaN keeps its sign and
// top payload bits, with the quiet bit forced on if truncation would otherwise leave the infinity pattern.
const bf16FromBits = (b: number): number => {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) {
    const top = b >>> 16;
    return (top & 0x7f) === 0 ? top | 0x40 : top;
  }
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
};

// f16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Results below 2^-14 become subnormals (rounded at the
// shifted position); a carry out of the mantissa correctly bumps the exponent, up to infinity.
const f16FromBits = (b: number): number => {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) {
    if (mant === 0) return sign | 0x7c00;
    const payload = mant >>> 13;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal (2^-25): rounds to zero
    const m = mant | 0x800000;
    const shift = 14 - e;
    const kept = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    return sign | (rest > halfway || (rest === halfway && (kept & 1) === 1) ? kept + 1 : kept);
  }
  const kept = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  return sign | (rest > 0x1000 || (rest === 0x1000 && (kept & 1) === 1) ? kept + 1 : kept);
};

const f16ToBits = (h: number): number => {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal: normalise so the leading 1 becomes the implicit bit.
  let m = mant;
  let e = -14;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | ((e + 127) << 23) | ((m & 0x3ff) << 13)) >>> 0;
};

/** float32 → bfloat16 bits, round to nearest even. @example f32ToBf16(1) === 0x3f80 */
export const f32ToBf16 = (x: number): number => bf16FromBits(f32Bits(x));
/** bfloat16 bits → float32 value (exact). @example bf16ToF32(0x3f80) === 1 */
export const bf16ToF32 = (h: number): number => bitsF32((h & 0xffff) << 16);
/** float32 → IEEE half bits, round to nearest even. @example f32ToF16(1) === 0x3c00 */
export const f32ToF16 = (x: number): number => f16FromBits(f32Bits(x));
/** IEEE half bits → float32 value (exact). @example f16ToF32(0x3c00) === 1 */
export const f16ToF32 = (h: number): number => bitsF32(f16ToBits(h & 0xffff));

const u32View = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** @example f32ToBf16Array(new Float32Array([1, -2])) // Uint16Array [0x3f80, 0xc000] */
export const f32ToBf16Array = (src: Float32Array): Uint16Array => {
  const bits = u32View(src);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < out.length; i++) out[i] = bf16FromBits(bits[i]!);
  return out;
};

/** @example bf16ToF32Array(new Uint16Array([0x3f80])) // Float32Array [1] */
export const bf16ToF32Array = (src: Uint16Array): Float32Array => {
  const out = new Float32Array(src.length);
  const bits = u32View(out);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  return out;
};

/** @example f32ToF16Array(new Float32Array([1, 65504])) // Uint16Array [0x3c00, 0x7bff] */
export const f32ToF16Array = (src: Float32Array): Uint16Array => {
  const bits = u32View(src);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < out.length; i++) out[i] = f16FromBits(bits[i]!);
  return out;
};

let f16Table: Uint32Array | undefined; // all 65536 halves as f32 bits, built on first use (256 KiB)

/** @example f16ToF32Array(new Uint16Array([0x3c00])) // Float32Array [1] */
export const f16ToF32Array = (src: Uint16Array): Float32Array => {
  if (f16Table === undefined) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToBits(h);
  }
  const table = f16Table;
  const out = new Float32Array(src.length);
  const bits = u32View(out);
  for (let i = 0; i < src.length; i++) bits[i] = table[src[i]!]!;
  return out;
};
