import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, symlink, truncate, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import {
  bf16ToF32, bf16ToF32Array, f16ToF32, f16ToF32Array, f32ToBf16, f32ToBf16Array, f32ToF16, f32ToF16Array,
  checkHeaderLength, maxHeaderBytes, openCheckpoint, openSafetensors, parseSafetensorsHeader, readSafetensorsHeader, writeSafetensors,
  writeShardedCheckpoint,
  type Checkpoint, type CheckpointError, type TensorToWrite, type WritableDType,
} from '../models/safetensors.js';
import { withFile } from '../models/safetensors/header.js';
import { leftMessage, right, tempDir } from './helpers.js';

const fixtures = resolve(import.meta.dirname, '../../shared/fixtures/stories260K');
const haveFixtures = existsSync(fixtures);
if (!haveFixtures) console.warn(`safetensors tests: fixtures not found at ${fixtures}; skipping the stories260K file tests`);

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const fromBits = (b: number) => ((u32[0] = b), f32[0]!);
const toBits = (x: number) => ((f32[0] = x), u32[0]!);
const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('half-float conversions', () => {
  // Each format: its converters, and the masks of its exponent (all ones: inf/NaN) and mantissa.
  const formats = [
    { name: 'f16', toF32: f16ToF32, fromF32: f32ToF16, toF32s: f16ToF32Array, fromF32s: f32ToF16Array, exp: 0x7c00, man: 0x3ff },
    { name: 'bf16', toF32: bf16ToF32, fromF32: f32ToBf16, toF32s: bf16ToF32Array, fromF32s: f32ToBf16Array, exp: 0x7f80, man: 0x7f },
  ];
  for (const f of formats) {
    it(`${f.name} → f32 → ${f.name} is the identity on all 65536 patterns, NaNs included`, () => {
      const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
      expect(Buffer.from(f.fromF32s(f.toF32s(all)).buffer).equals(Buffer.from(all.buffer))).toBe(true);
      // Scalars travel as JS numbers, which may quiet a signalling NaN: only its NaN-ness and sign are kept.
      const wrong: number[] = [];
      const signExp = 0x8000 | f.exp;
      for (let h = 0; h < 65536; h++) {
        const back = f.fromF32(f.toF32(h));
        const nan = (h & f.exp) === f.exp && (h & f.man) !== 0;
        if (nan ? (back & signExp) !== (h & signExp) || (back & f.man) === 0 : back !== h) wrong.push(h);
      }
      expect(wrong).toEqual([]);
    });
  }

  it('decodes known halves', () => {
    expect([0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x7c00, 0xfc00, 0x8000].map(f16ToF32)).toEqual([1, -2, 65504, 2 ** -24, 2 ** -14, Infinity, -Infinity, -0]);
    expect(Number.isNaN(f16ToF32(0x7e00))).toBe(true);
    expect([0x3f80, 0xc000, 0x7f80, 0x0001].map(bf16ToF32)).toEqual([1, -2, Infinity, 2 ** -133]);
  });

  it('rounds to nearest, ties to even, at the edges', () => {
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie, even stays
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, odd rounds up
    expect(f32ToF16(65519)).toBe(0x7bff);
    expect(f32ToF16(65520)).toBe(0x7c00); // tie with 65536 goes to infinity (even)
    expect(f32ToF16(2 ** -25)).toBe(0x0000); // tie between 0 and the smallest subnormal
    expect(f32ToF16(fromBits(toBits(2 ** -25) + 1))).toBe(0x0001);
    expect(f32ToF16(-(2 ** -14) * (1 - 2 ** -12))).toBe(0x8400); // subnormal rounds up into the normals
    expect(f32ToBf16(fromBits(0x3f808000))).toBe(0x3f80); // tie, even stays
    expect(f32ToBf16(fromBits(0x3f818000))).toBe(0x3f82); // tie, odd rounds up
    expect(f32ToBf16(fromBits(0x7f7fffff))).toBe(0x7f80); // max f32 rounds to infinity
    expect(f32ToBf16(fromBits(0x7f800001)) & 0x7fc0).toBe(0x7fc0); // signalling NaN stays a NaN
  });

  it('rounds subnormal halves to nearest, ties to even', () => {
    // k·2^-25 lies halfway between the subnormals (k−1)/2 and (k+1)/2 (units of 2^-24) for odd k: the even one wins.
    expect(f32ToF16(3 * 2 ** -25)).toBe(0x0002); // 1.5 → 2
    expect(f32ToF16(5 * 2 ** -25)).toBe(0x0002); // 2.5 → 2
    expect(f32ToF16(7 * 2 ** -25)).toBe(0x0004); // 3.5 → 4
    expect(f32ToF16(-(0x201 + 0.5) * 2 ** -24)).toBe(0x8202); // 513.5 → 514
    expect(f32ToF16((0x200 + 0.5) * 2 ** -24)).toBe(0x0200); // 512.5 → 512
  });

  it('keeps a NaN a NaN when its top payload bits are all zero (typed arrays keep signalling NaNs exactly)', () => {
    // Dropping the low mantissa bits of these NaNs would leave the pattern of infinity: the quiet bit is set instead.
    // 0x7fa00000 has payload in the kept bits, which survives as is (sign, exponent all ones, payload >> 13 or >> 16).
    const x = new Float32Array(new Uint32Array([0x7f800001, 0xff801fff, 0x7fa00000]).buffer);
    expect([...f32ToF16Array(x)]).toEqual([0x7e00, 0xfe00, 0x7d00]);
    expect([...f32ToBf16Array(x)]).toEqual([0x7fc0, 0xffc0, 0x7fa0]);
  });

  // Independent oracles: the nearest representable value by plain float64 arithmetic, ties to the even pattern.
  const positiveHalves = Float64Array.from({ length: 0x7c01 }, (_, h) => (h === 0x7c00 ? 65536 : f16ToF32(h)));
  const oracleF16 = (x: number): number => {
    const sign = toBits(x) >>> 31 ? 0x8000 : 0;
    const a = Math.abs(x);
    let lo = 0, hi = 0x7c00; // invariant: positiveHalves[lo] <= a < positiveHalves[hi]
    if (a >= 65536) return sign | 0x7c00;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (positiveHalves[mid]! <= a) lo = mid;
      else hi = mid;
    }
    const dLo = a - positiveHalves[lo]!, dHi = positiveHalves[hi]! - a;
    return sign | (dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi);
  };
  const oracleBf16 = (x: number): number => {
    const b = toBits(x);
    const low = b & 0x7fff0000;
    const a = Math.abs(x), lo = fromBits(low), hi = low === 0x7f7f0000 ? 2 ** 128 : fromBits(low + 0x10000);
    const up = a - lo > hi - a || (a - lo === hi - a && ((low >>> 16) & 1) === 1);
    return ((b >>> 16) & 0x8000) | ((low >>> 16) + (up ? 1 : 0));
  };

  it('f32 → f16 / bf16 agree with a float64 nearest-even oracle (property)', () => {
    // Half the draws land near the f16 range (exponents 2^-26 .. 2^16), where all the rounding cases live.
    const nearHalfRange = fc.tuple(fc.boolean(), fc.integer({ min: 0x32800000, max: 0x47ffffff })).map(([neg, b]) => (neg ? b | 0x80000000 : b) >>> 0);
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), nearHalfRange), (bits) => {
        // Array inputs are bit patterns that never pass through a JS number, so NaN payloads are exact there.
        const x = new Float32Array(new Uint32Array([bits]).buffer);
        const h = f32ToF16Array(x)[0]!, b = f32ToBf16Array(x)[0]!;
        const sign = bits >>> 31, mant = bits & 0x7fffff;
        if ((bits & 0x7f800000) === 0x7f800000 && mant !== 0) {
          expect(h).toBe((sign << 15) | 0x7c00 | (mant >>> 13 || 0x200));
          expect(b).toBe((sign << 15) | 0x7f80 | ((mant >>> 16) || 0x40));
        } else {
          expect(h).toBe(oracleF16(x[0]!));
          expect(b).toBe(oracleBf16(x[0]!));
          expect([f32ToF16(x[0]!), f32ToBf16(x[0]!)]).toEqual([h, b]);
        }
      }),
      { seed: 7, numRuns: 20000 },
    );
  });
});

describe.skipIf(!haveFixtures)('stories260K model.safetensors', () => {
  it('has a valid header with the expected tensors', async () => {
    const h = right(await readSafetensorsHeader(join(fixtures, 'hf', 'model.safetensors'))());
    expect(h.metadata).toEqual({ format: 'pt' });
    expect(h.tensors).toHaveLength(48);
    expect(h.tensors[0]).toMatchObject({ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [512, 64], begin: 0 });
  });

  it('opens through openCheckpoint on the folder and reads tensors one at a time', async () => {
    const ckpt = right(await openCheckpoint(join(fixtures, 'hf'))());
    try {
      expect(ckpt.info('model.layers.0.self_attn.k_proj.weight')).toEqual({ name: 'model.layers.0.self_attn.k_proj.weight', dtype: 'F32', shape: [32, 64] });
      const w = right(await ckpt.read('model.norm.weight')());
      expect(w).toBeInstanceOf(Float32Array);
      expect(w).toHaveLength(64);
      expect(leftMessage(await ckpt.read('nope')())).toContain('tensor "nope"');
    } finally {
      await ckpt.close();
    }
    expect(leftMessage(await ckpt.read('model.norm.weight')())).toContain('closed');
  });
});

// ---- writing and reading back ------------------------------------------------------------------------------

interface Drawn {
  readonly name: string;
  readonly dtype: WritableDType;
  readonly shape: number[];
  readonly raw: Uint32Array | Uint16Array; // bit patterns
}

const drawnTensor = (name: string): fc.Arbitrary<Drawn> =>
  fc
    .record({ dtype: fc.constantFrom<WritableDType>('F32', 'F16', 'BF16'), shape: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }) })
    .chain(({ dtype, shape }) => {
      const n = shape.reduce((a, d) => a * d, 1);
      const raw: fc.Arbitrary<Uint32Array | Uint16Array> =
        dtype === 'F32' ? fc.uint32Array({ minLength: n, maxLength: n }) : fc.uint16Array({ minLength: n, maxLength: n });
      return raw.map((r) => ({ name, dtype, shape, raw: r }));
    });

const drawnCheckpoint: fc.Arbitrary<Drawn[]> = fc
  .uniqueArray(fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.constantFrom('0', '7', 'model.layers.0.mlp.up_proj.weight', 'ünïcødé ✓')), { minLength: 1, maxLength: 8 })
  .map((names) => names.filter((n) => n !== '__metadata__'))
  .chain((names) => fc.tuple(...names.map(drawnTensor)));

const toWrite = (d: Drawn): TensorToWrite => ({
  name: d.name, dtype: d.dtype, shape: d.shape,
  data: d.dtype === 'F32' ? new Float32Array(d.raw.buffer, d.raw.byteOffset, d.raw.length) : (d.raw as Uint16Array),
});

const expectSameTensors = async (ckpt: Checkpoint, drawn: readonly Drawn[]) => {
  expect(ckpt.tensors.map((t) => t.name).sort()).toEqual(drawn.map((d) => d.name).sort());
  for (const d of drawn) {
    expect(ckpt.info(d.name)).toEqual({ name: d.name, dtype: d.dtype, shape: d.shape });
    const raw = right(await ckpt.read(d.name, { as: 'raw' })());
    expect(bytesOf(raw)).toEqual(bytesOf(d.raw)); // bit-exact, NaN payloads included
    const up = right(await ckpt.read(d.name)());
    const expected = d.dtype === 'F32' ? new Float32Array(d.raw.buffer) : d.dtype === 'F16' ? f16ToF32Array(d.raw as Uint16Array) : bf16ToF32Array(d.raw as Uint16Array);
    expect(bytesOf(up)).toEqual(bytesOf(expected));
  }
};

describe('write → read round trip', () => {
  const tmp = tempDir('camelid-st-rt-');
  let count = 0;

  it('is bit-exact for a single file, F32/F16/BF16 (property)', async () => {
    await fc.assert(
      fc.asyncProperty(drawnCheckpoint, fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }), async (drawn, metadata) => {
        const path = join(tmp.path, `single-${count++}.safetensors`);
        right(await writeSafetensors(path, drawn.map(toWrite), metadata)());
        const f = right(await openSafetensors(path)());
        try {
          expect(f.header.dataStart % 8).toBe(0);
          expect({ ...f.metadata }).toEqual({ ...metadata });
          const nonEmpty = (names: string[]) => names.filter((name) => drawn.find((d) => d.name === name)!.raw.length > 0);
          expect(nonEmpty(f.tensors.map((t) => t.name))).toEqual(nonEmpty(drawn.map((d) => d.name))); // data in the given order
          await expectSameTensors(f, drawn);
        } finally {
          await f.close();
        }
      }),
      { seed: 42, numRuns: 60 },
    );
  });

  it('is bit-exact for sharded checkpoints, every shard within its byte budget (property)', async () => {
    await fc.assert(
      fc.asyncProperty(drawnCheckpoint, fc.integer({ min: 1, max: 300 }), async (drawn, maxShardBytes) => {
        const out = join(tmp.path, `sharded-${count++}`);
        const { files } = right(await writeShardedCheckpoint(out, drawn.map(toWrite), maxShardBytes)());
        const ckpt = right(await openCheckpoint(out)());
        try {
          await expectSameTensors(ckpt, drawn);
        } finally {
          await ckpt.close();
        }
        const shards = files.filter((f) => f.endsWith('.safetensors'));
        expect(files.some((f) => f.endsWith('model.safetensors.index.json'))).toBe(shards.length > 1);
        for (const s of shards) {
          const h = right(await readSafetensorsHeader(s)());
          const bytes = h.tensors.reduce((a, t) => a + t.end - t.begin, 0);
          expect(bytes <= maxShardBytes || h.tensors.length === 1).toBe(true);
        }
      }),
      { seed: 43, numRuns: 40 },
    );
  });

  it('pads the header with spaces to an 8-byte boundary', async () => {
    // Names of 1 to 8 letters make headers of 72 to 79 bytes: every padding from none to 7 spaces. The tensor's
    // bytes start right after the padded header (the format's data offsets count from there).
    for (let len = 1; len <= 8; len++) {
      const name = 'abcdefgh'.slice(0, len);
      const path = join(tmp.path, `pad${len}.safetensors`);
      right(await writeSafetensors(path, [{ name, dtype: 'F32', shape: [1], data: new Float32Array([len + 0.5]) }], {})());
      const bytes = await readFile(path);
      const n = Number(bytes.readBigUInt64LE(0));
      const json = `{"__metadata__":{},"${name}":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`;
      const pad = (8 - (json.length % 8)) % 8;
      expect(json.length, name).toBe(71 + len);
      expect(n, name).toBe(json.length + pad);
      expect(bytes.subarray(8, 8 + n).toString('utf8'), name).toBe(json + ' '.repeat(pad));
      expect(bytes.length, name).toBe(8 + n + 4);
      expect(bytes.readFloatLE(8 + n), name).toBe(len + 0.5);
      const f = right(await openSafetensors(path)());
      expect(Array.from(right(await f.read(name)()) as Float32Array), name).toEqual([len + 0.5]);
      await f.close();
    }
  });

  it('rounds Float32Array data to F16/BF16 to nearest even and takes thunks', async () => {
    const path = join(tmp.path, 'convert.safetensors');
    const x = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, fromBits(0x3f818000), -0, 65520]);
    right(await writeSafetensors(path, [
      { name: 'h', dtype: 'F16', shape: [5], data: x },
      { name: 'b', dtype: 'BF16', shape: [5], data: async () => x },
    ])());
    const f = right(await openSafetensors(path)());
    expect(right(await f.read('h', { as: 'raw' })())).toEqual(f32ToF16Array(x));
    expect(right(await f.read('b', { as: 'raw' })())).toEqual(f32ToBf16Array(x));
    expect(f.metadata).toEqual({ format: 'pt' });
    await f.close();
  });

  it('rejects bad tensors without leaving a file behind', async () => {
    const path = join(tmp.path, 'bad-write.safetensors');
    const one = new Float32Array([1]);
    expect(leftMessage(await writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [2], data: one }])())).toContain('tensor "a": data has 1 elements but shape [2] needs 2');
    expect(leftMessage(await writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [1], data: one }, { name: 'a', dtype: 'F32', shape: [1], data: one }])())).toContain('duplicate');
    expect(leftMessage(await writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [1], data: new Uint16Array(1) }])())).toContain('Float32Array');
    expect(leftMessage(await writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [-1], data: one }])())).toContain('non-negative');
    expect((await readdir(tmp.path)).filter((f) => f.startsWith('bad-write'))).toEqual([]);
  });
});

describe('writing: refusals, U8, shards, and failures that leave the folder as it was', () => {
  const tmp = tempDir('camelid-st-write-');
  let n = 0;
  const fresh = () => join(tmp.path, `w${n++}`);
  const f32s = (name: string, values: number[]): TensorToWrite => ({ name, dtype: 'F32', shape: [values.length], data: new Float32Array(values) });
  const failing = (name: string, thrown: unknown): TensorToWrite => ({ name, dtype: 'F32', shape: [2], data: () => { throw thrown; } });
  const valuesOf = async (ckpt: Checkpoint, name: string) => [...right(await ckpt.read(name)())];

  it('writes U8 (packed 4-bit weights) byte for byte', async () => {
    const path = `${fresh()}.safetensors`;
    right(await writeSafetensors(path, [{ name: 'q', dtype: 'U8', shape: [3], data: new Uint8Array([0, 127, 255]) }], {})());
    const json = '{"__metadata__":{},"q":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}'; // 71 bytes: one space of padding
    expect(json.length).toBe(71);
    expect(new Uint8Array(await readFile(path))).toEqual(new Uint8Array([...stFile(`${json} `, 0), 0, 127, 255]));
  });

  it('refuses what it cannot write, naming the file and tensor, and leaves no file', async () => {
    const path = `${fresh()}.safetensors`;
    const refusals: [TensorToWrite, string][] = [
      [{ name: '__metadata__', dtype: 'F32', shape: [1], data: new Float32Array(1) }, 'tensor "__metadata__": reserved tensor name'],
      [{ name: 'i', dtype: 'I32' as WritableDType, shape: [1], data: new Float32Array(1) }, 'tensor "i": cannot write dtype I32 (F32, F16, BF16 or U8)'],
      [{ name: 'q', dtype: 'U8', shape: [2], data: new Uint16Array(2) }, 'tensor "q": U8 data must be a Uint8Array (and only U8 data)'],
      [{ name: 'h', dtype: 'F16', shape: [2], data: new Uint8Array(2) }, 'tensor "h": U8 data must be a Uint8Array (and only U8 data)'],
      // A thunk's own error, whole, with the tensor it was making data for.
      [failing('t', new Error('HTTP: 503 from the weight server')), 'tensor "t": cannot make its data (HTTP: 503 from the weight server)'],
      [failing('s', 'a plain string'), 'tensor "s": cannot make its data (a plain string)'],
    ];
    for (const [t, problem] of refusals) {
      expect(leftMessage(await writeSafetensors(path, [f32s('ok', [1]), t])())).toBe(`${path}: ${problem}`);
      expect(existsSync(path) || existsSync(`${path}.partial`), problem).toBe(false);
    }
    const nowhere = join(tmp.path, 'no-such-folder', 'm.safetensors');
    expect(leftMessage(await writeSafetensors(nowhere, [f32s('a', [1])])())).toBe(`${nowhere}: cannot write (no such file or directory)`);
  });

  it('packs shards greedily in order, a tensor over the budget alone, and indexes them', async () => {
    const dir = fresh();
    // 24, 8, 8 and 4 bytes with a budget of 16: [big] [a, b] (exactly 16) [c].
    const tensors: TensorToWrite[] = [
      f32s('big', [1, 2, 3, 4, 5, 6]), f32s('a', [7, 8]),
      { name: 'b', dtype: 'F16', shape: [4], data: new Uint16Array([0x3c00, 0x4000, 0x4200, 0x4400]) },
      { name: 'c', dtype: 'U8', shape: [4], data: new Uint8Array([9, 10, 11, 12]) },
    ];
    const { files } = right(await writeShardedCheckpoint(dir, tensors, 16)());
    const shard = (i: number) => `model-0000${i}-of-00003.safetensors`;
    expect(files).toEqual([join(dir, shard(1)), join(dir, shard(2)), join(dir, shard(3)), join(dir, 'model.safetensors.index.json')]);
    expect(await readFile(files[3]!, 'utf8')).toBe(`{
  "metadata": {
    "total_size": 44
  },
  "weight_map": {
    "big": "${shard(1)}",
    "a": "${shard(2)}",
    "b": "${shard(2)}",
    "c": "${shard(3)}"
  }
}
`);
    for (const [i, names] of [[1, ['big']], [2, ['a', 'b']], [3, ['c']]] as const) {
      const h = right(await readSafetensorsHeader(join(dir, shard(i)))());
      expect(h.tensors.map((t) => t.name)).toEqual(names);
      expect(h.metadata).toEqual({ format: 'pt' }); // what PyTorch loaders expect, as for a single file
    }
    const ckpt = right(await openCheckpoint(dir)());
    expect(await valuesOf(ckpt, 'big')).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await valuesOf(ckpt, 'b')).toEqual([1, 2, 3, 4]);
    expect(await valuesOf(ckpt, 'c')).toEqual([9, 10, 11, 12]);
    await ckpt.close();
  });

  it('no tensors: one model.safetensors holding only the metadata', async () => {
    const dir = fresh();
    const { files } = right(await writeShardedCheckpoint(dir, [], 16)());
    expect(files).toEqual([join(dir, 'model.safetensors')]);
    const json = '{"__metadata__":{"format":"pt"}}'; // 32 bytes: no padding
    expect(new Uint8Array(await readFile(files[0]!))).toEqual(stFile(json, 0));
  });

  it('refuses a budget that is not positive, and bad tensors, before creating anything', async () => {
    const dir = fresh();
    for (const bad of [0, -1, NaN])
      expect(leftMessage(await writeShardedCheckpoint(dir, [f32s('a', [1])], bad)())).toBe(`${dir}: maxShardBytes must be positive, got ${bad}`);
    expect(leftMessage(await writeShardedCheckpoint(dir, [f32s('a', [1]), f32s('a', [2])], 16)())).toBe(`${dir}: tensor "a": duplicate tensor name`);
    expect(existsSync(dir)).toBe(false);
  });

  it('writes into an existing folder or a new nested one; a folder path that is a file is a Left', async () => {
    const existing = fresh();
    await mkdir(existing);
    right(await writeShardedCheckpoint(existing, [f32s('a', [1])], 16)());
    const nested = join(fresh(), 'x', 'y');
    right(await writeShardedCheckpoint(nested, [f32s('a', [1])], 16)());
    expect(existsSync(join(nested, 'model.safetensors'))).toBe(true);
    const file = `${fresh()}.txt`;
    await writeFile(file, 'not a folder');
    expect(leftMessage(await writeShardedCheckpoint(file, [f32s('a', [1])], 16)())).toBe(`${file}: cannot create folder (file already exists)`);
  });

  // An older two-shard checkpoint (a = [1, 2] and b = [3, 4], 8 bytes each) in a folder of its own.
  const older = async () => {
    const dir = fresh();
    right(await writeShardedCheckpoint(dir, [f32s('a', [1, 2]), f32s('b', [3, 4])], 8)());
    return { dir, files: (await readdir(dir)).sort() };
  };
  const expectOlder = async (dir: string, files: string[]) => {
    expect((await readdir(dir)).sort()).toEqual(files);
    const ckpt = right(await openCheckpoint(dir)());
    expect([await valuesOf(ckpt, 'a'), await valuesOf(ckpt, 'b')]).toEqual([[1, 2], [3, 4]]);
    await ckpt.close();
  };

  it('a single-file write replaces an older sharded checkpoint (its index goes); a failed one leaves it whole', async () => {
    const failed = await older();
    expect(leftMessage(await writeShardedCheckpoint(failed.dir, [f32s('a', [5, 6]), failing('b', new Error('out of memory'))], 1000)()))
      .toBe(`${join(failed.dir, 'model.safetensors')}: tensor "b": cannot make its data (out of memory)`);
    await expectOlder(failed.dir, failed.files);
    const replaced = await older();
    right(await writeShardedCheckpoint(replaced.dir, [f32s('a', [5, 6]), f32s('b', [7, 8])], 1000)());
    expect(existsSync(join(replaced.dir, 'model.safetensors.index.json'))).toBe(false);
    const ckpt = right(await openCheckpoint(replaced.dir)());
    expect(ckpt.path).toBe(join(replaced.dir, 'model.safetensors'));
    expect([await valuesOf(ckpt, 'a'), await valuesOf(ckpt, 'b')]).toEqual([[5, 6], [7, 8]]);
    await ckpt.close();
  });

  it('a sharded write that fails part way leaves an older checkpoint of the same shard names whole', async () => {
    // The new shard 1 would otherwise sit under the old index beside the old shard 2: a mix that opens without error.
    const { dir, files } = await older();
    expect(leftMessage(await writeShardedCheckpoint(dir, [f32s('a', [5, 6]), failing('b', new Error('out of memory'))], 8)()))
      .toBe(`${join(dir, 'model-00002-of-00002.safetensors')}: tensor "b": cannot make its data (out of memory)`);
    await expectOlder(dir, files);
  });

  it('a file that cannot be put in place (a folder holds its name) leaves no temporary file behind', async () => {
    const path = `${fresh()}.safetensors`;
    await mkdir(path);
    expect(leftMessage(await writeSafetensors(path, [f32s('a', [1])])())).toBe(`${path}: cannot write (is a directory)`);
    expect(existsSync(`${path}.partial`)).toBe(false);
    const dir = fresh();
    await mkdir(join(dir, 'model-00001-of-00002.safetensors'), { recursive: true });
    const msg = leftMessage(await writeShardedCheckpoint(dir, [f32s('a', [1, 2]), f32s('b', [3, 4])], 8)());
    expect(msg).toBe(`${join(dir, 'model-00001-of-00002.safetensors')}: cannot write (is a directory)`);
    expect((await readdir(dir)).sort()).toEqual(['model-00001-of-00002.safetensors']);
  });

  it('an index that cannot be written is a Left naming it, and no new shard is left in place', async () => {
    const dir = fresh();
    await mkdir(join(dir, 'model.safetensors.index.json'), { recursive: true });
    const msg = leftMessage(await writeShardedCheckpoint(dir, [f32s('a', [1, 2]), f32s('b', [3, 4])], 8)());
    expect(msg).toBe(`${join(dir, 'model.safetensors.index.json')}: cannot write index (is a directory)`);
    expect((await readdir(dir)).sort()).toEqual(['model.safetensors.index.json']);
  });
});

// ---- malformed files -------------------------------------------------------------------------------------

const stFile = (header: string | Uint8Array, dataBytes: number, declared?: bigint): Uint8Array => {
  const h = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const out = new Uint8Array(8 + h.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, declared ?? BigInt(h.length), true);
  out.set(h, 8);
  return out;
};

// A file built by hand from the format, independent of the writer: each tensor's little-endian bytes, in order.
const handFile = (tensors: readonly { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[]): Uint8Array => {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  const out = stFile(JSON.stringify(header), offset);
  let at = out.length - offset;
  for (const t of tensors) {
    out.set(t.bytes, at);
    at += t.bytes.length;
  }
  return out;
};

// `values` laid out by a DataView setter, `size` bytes apart (little-endian by the setter's last argument).
const pack = <T>(size: number, values: readonly T[], put: (v: DataView, at: number, x: T) => void): Uint8Array => {
  const b = new Uint8Array(size * values.length);
  const v = new DataView(b.buffer);
  values.forEach((x, i) => put(v, i * size, x));
  return b;
};

describe('every dtype of the format reads back from a hand-built file', () => {
  const tmp = tempDir('camelid-st-dtypes-');
  // Each dtype: its stored bytes, the typed array `{as: 'raw'}` gives, and the float32 values (null: no conversion).
  const table: { dtype: string; bytes: Uint8Array; raw: ArrayLike<number | bigint>; f32: number[] | null }[] = [
    { dtype: 'F64', bytes: pack(8, [1.5, -2.25], (v, o, x) => v.setFloat64(o, x, true)), raw: new Float64Array([1.5, -2.25]), f32: [1.5, -2.25] },
    { dtype: 'F32', bytes: pack(4, [0.5], (v, o, x) => v.setFloat32(o, x, true)), raw: new Float32Array([0.5]), f32: [0.5] },
    { dtype: 'F16', bytes: pack(2, [0x3c00, 0xc000], (v, o, x) => v.setUint16(o, x, true)), raw: new Uint16Array([0x3c00, 0xc000]), f32: [1, -2] },
    { dtype: 'BF16', bytes: pack(2, [0x3f80, 0xc040], (v, o, x) => v.setUint16(o, x, true)), raw: new Uint16Array([0x3f80, 0xc040]), f32: [1, -3] },
    { dtype: 'F8_E4M3', bytes: new Uint8Array([0x38, 0xb8]), raw: new Uint8Array([0x38, 0xb8]), f32: null },
    { dtype: 'F8_E5M2', bytes: new Uint8Array([0x3c]), raw: new Uint8Array([0x3c]), f32: null },
    { dtype: 'I64', bytes: pack(8, [-3n, 2n ** 40n], (v, o, x) => v.setBigInt64(o, x, true)), raw: new BigInt64Array([-3n, 2n ** 40n]), f32: [-3, 2 ** 40] },
    { dtype: 'U64', bytes: pack(8, [2n ** 63n], (v, o, x) => v.setBigUint64(o, x, true)), raw: new BigUint64Array([2n ** 63n]), f32: [2 ** 63] },
    { dtype: 'I32', bytes: pack(4, [-7, 65537], (v, o, x) => v.setInt32(o, x, true)), raw: new Int32Array([-7, 65537]), f32: [-7, 65537] },
    // 2^32 − 1 has no float32: it rounds up to 2^32.
    { dtype: 'U32', bytes: pack(4, [4294967295], (v, o, x) => v.setUint32(o, x, true)), raw: new Uint32Array([4294967295]), f32: [4294967296] },
    { dtype: 'I16', bytes: pack(2, [-2, 300], (v, o, x) => v.setInt16(o, x, true)), raw: new Int16Array([-2, 300]), f32: [-2, 300] },
    { dtype: 'I8', bytes: new Uint8Array([0xff, 5]), raw: new Int8Array([-1, 5]), f32: [-1, 5] },
    { dtype: 'U16', bytes: pack(2, [65535], (v, o, x) => v.setUint16(o, x, true)), raw: new Uint16Array([65535]), f32: [65535] },
    { dtype: 'U8', bytes: new Uint8Array([255, 0]), raw: new Uint8Array([255, 0]), f32: [255, 0] },
    { dtype: 'BOOL', bytes: new Uint8Array([1, 0]), raw: new Uint8Array([1, 0]), f32: [1, 0] },
  ];

  it('as raw arrays of the stored type, and as float32 where a conversion exists', async () => {
    const path = join(tmp.path, 'all.safetensors');
    const size: Record<string, number> = { F64: 8, I64: 8, U64: 8, F32: 4, I32: 4, U32: 4, F16: 2, BF16: 2, I16: 2, U16: 2 };
    await writeFile(path, handFile(table.map((t) => ({ name: t.dtype.toLowerCase(), dtype: t.dtype, shape: [t.bytes.length / (size[t.dtype] ?? 1)], bytes: t.bytes }))));
    const f = right(await openSafetensors(path)());
    try {
      for (const t of table) {
        const name = t.dtype.toLowerCase();
        expect(f.info(name), t.dtype).toEqual({ name, dtype: t.dtype, shape: [t.raw.length] });
        const raw = right(await f.read(name, { as: 'raw' })());
        expect(raw.constructor, t.dtype).toBe(t.raw.constructor);
        expect(Array.from(raw as ArrayLike<number | bigint>), t.dtype).toEqual(Array.from(t.raw));
        const up = await f.read(name)();
        if (t.f32 === null) expect(leftMessage(up), t.dtype).toBe(`${path}: tensor "${name}": no float32 conversion for ${t.dtype}; read it with {as: 'raw'}`);
        else {
          expect(right(up), t.dtype).toBeInstanceOf(Float32Array);
          expect([...right(up)], t.dtype).toEqual(t.f32);
        }
      }
    } finally {
      await f.close();
    }
  });
});

// Open descriptors of this process (Linux): a reader that forgets to close a file shows up here.
const haveProcFd = existsSync('/proc/self/fd');
if (!haveProcFd) console.warn('safetensors tests: no /proc/self/fd; skipping the checks that files are closed');
const openFds = async () => (await readdir('/proc/self/fd')).length;

describe('file system errors and open files', () => {
  const tmp = tempDir('camelid-st-io-');
  const small = () => stFile('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', 8);

  it('say what went wrong in words, once, after the file name', async () => {
    // Node's own messages repeat the code and the path ("EISDIR: illegal operation on a directory, read").
    const dir = join(tmp.path, 'a-folder');
    await mkdir(dir);
    expect(leftMessage(await openSafetensors(dir)())).toBe(`${dir}: cannot read header (is a directory)`);
    expect(leftMessage(await readSafetensorsHeader(dir)())).toBe(`${dir}: cannot read header (is a directory)`);
    const loop = join(tmp.path, 'loop-a');
    await symlink(join(tmp.path, 'loop-b'), loop);
    await symlink(loop, join(tmp.path, 'loop-b'));
    expect(leftMessage(await openSafetensors(loop)())).toBe(`${loop}: cannot open (too many symbolic links)`);
    expect(leftMessage(await openCheckpoint(loop)())).toBe(`${loop}: cannot open (too many symbolic links)`);
    const file = join(tmp.path, 'plain.safetensors');
    await writeFile(file, small());
    expect(leftMessage(await openSafetensors(join(file, 'x'))())).toBe(`${join(file, 'x')}: cannot open (not a directory)`);
    const index = join(tmp.path, 'gone', 'model.safetensors.index.json');
    expect(leftMessage(await openCheckpoint(index)())).toBe(`${index}: cannot open (no such file or directory)`);
  });

  it.skipIf(process.getuid?.() === 0)('a file it may not read (not run as root, who may read anything)', async () => {
    const file = join(tmp.path, 'secret.safetensors');
    await writeFile(file, small());
    await chmod(file, 0o000);
    expect(leftMessage(await openSafetensors(file)())).toBe(`${file}: cannot open (permission denied)`);
  });

  it('a tensor whose bytes are gone by the time it is read (file cut after opening)', { timeout: 10_000 }, async () => {
    const path = join(tmp.path, 'cut.safetensors');
    const header = '{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}';
    await writeFile(path, stFile(header, 8));
    const f = right(await openSafetensors(path)());
    const dataStart = 8 + header.length;
    await truncate(path, dataStart + 4);
    expect(leftMessage(await f.read('w')())).toBe(`${path}: tensor "w": cannot read data (unexpected end of file at byte ${dataStart + 4} (wanted 8 bytes from ${dataStart}))`);
    await f.close();
  });

  it('unknown tensors, and reads after close, are Lefts naming the file and tensor', async () => {
    const path = join(tmp.path, 'closing.safetensors');
    await writeFile(path, small());
    const f = right(await openSafetensors(path)());
    expect(f.info('nope')).toBeUndefined();
    expect(leftMessage(await f.read('nope')())).toBe(`${path}: tensor "nope": no such tensor in this file`);
    await f.close();
    await f.close(); // a second close is harmless
    expect(leftMessage(await f.read('w')())).toBe(`${path}: tensor "w": file is closed`);
  });

  it.skipIf(!haveProcFd)('header reads close the file, whether the header is good or bad', async () => {
    const good = join(tmp.path, 'good.safetensors'), bad = join(tmp.path, 'bad.safetensors');
    await writeFile(good, small());
    await writeFile(bad, stFile('{"w": 5}', 0));
    const before = await openFds();
    right(await readSafetensorsHeader(good)());
    leftMessage(await readSafetensorsHeader(bad)());
    leftMessage(await openSafetensors(bad)());
    expect(await openFds()).toBe(before);
    // withFile is the shared open–run–close of the readers (llama2.c's too): a reader that throws is a Left.
    const thrown = await withFile(good, async () => {
      throw new Error('boom');
    });
    expect(leftMessage(thrown)).toBe(`${good}: cannot read (boom)`);
    expect(await openFds()).toBe(before);
  });
});

describe('malformed safetensors files are Lefts naming the file and tensor', () => {
  const tmp = tempDir('camelid-st-bad-');

  const cases: { name: string; bytes: () => Uint8Array; expect: string[] }[] = [
    { name: 'tiny', bytes: () => new Uint8Array(3), expect: ['3 bytes, too short'] },
    { name: 'long-header', bytes: () => stFile('{}', 0, 1000n), expect: ['header length 1000 is larger than the 2 bytes'] },
    { name: 'huge-header', bytes: () => stFile('{}', 0, 2n ** 62n), expect: ['header length 4611686018427387904 is larger'] },
    { name: 'invalid-json', bytes: () => stFile('{"a": {"dtype": ', 0), expect: ['not valid UTF-8 JSON'] },
    { name: 'not-object', bytes: () => stFile('[1, 2]', 0), expect: ['must be a JSON object'] },
    { name: 'bad-metadata', bytes: () => stFile('{"__metadata__": {"n": 1}}', 0), expect: ['__metadata__ must map strings to strings'] },
    { name: 'unknown-dtype', bytes: () => stFile('{"w": {"dtype": "F12", "shape": [1], "data_offsets": [0, 4]}}', 4), expect: ['tensor "w"', 'unknown dtype "F12"'] },
    { name: 'out-of-range', bytes: () => stFile('{"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}', 16), expect: ['tensor "w"', 'run past the end of the data section (16 bytes)'] },
    { name: 'size-mismatch', bytes: () => stFile('{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}', 16), expect: ['tensor "w"', 'span 16 bytes but shape [3] of F32 needs 12'] },
    { name: 'hostile-shape', bytes: () => stFile('{"w": {"dtype": "BF16", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 4]}}', 4), expect: ['tensor "w"', 'needs 2417851639229258349412352'] },
    { name: 'negative-shape', bytes: () => stFile('{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}', 0), expect: ['tensor "w"', 'shape must be'] },
    { name: 'bad-offsets', bytes: () => stFile('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}', 8), expect: ['tensor "w"', 'data_offsets must be [begin, end]'] },
    { name: 'reversed-offsets', bytes: () => stFile('{"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}', 8), expect: ['tensor "w"', 'end before they begin'] },
    {
      name: 'overlap',
      bytes: () => stFile('{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}', 24),
      expect: ['tensor "b"', 'overlap tensor "a" at [0, 16]'],
    },
    // The format requires the tensors to tile the data section: no trailing bytes, no holes, no repeated keys.
    { name: 'trailing-bytes', bytes: () => stFile('{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', 12), expect: ['4 trailing bytes after the last tensor\'s data (the data section is 12 bytes, the tensors cover 8)'] },
    { name: 'no-tensors-but-data', bytes: () => stFile('{"__metadata__": {}}', 4), expect: ['4 trailing bytes after the last tensor\'s data'] },
    {
      name: 'hole',
      bytes: () => stFile('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}', 12),
      expect: ['tensor "b"', 'data_offsets [8, 12] leave a hole of 4 bytes after tensor "a" (ends at 4)'],
    },
    { name: 'hole-at-start', bytes: () => stFile('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', 8), expect: ['tensor "w"', 'leave a hole of 4 bytes at the start of the data section'] },
    {
      name: 'repeated-key',
      bytes: () => stFile('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 4),
      expect: ['header repeats the key "w"'],
    },
    {
      name: 'repeated-field',
      bytes: () => stFile('{"w": {"dtype": "F32", "shape": [2], "shape": [1], "data_offsets": [0, 4]}}', 4),
      expect: ['header repeats the key "shape" in "w"'],
    },
    {
      name: 'repeated-metadata',
      bytes: () => stFile('{"__metadata__": {"format": "pt", "x": "[\\"a\\", \\"b\\"]", "format": "np"}}', 0),
      expect: ['header repeats the key "format" in "__metadata__"'],
    },
  ];

  for (const c of cases)
    it(c.name, async () => {
      const path = join(tmp.path, `${c.name}.safetensors`);
      await writeFile(path, c.bytes());
      const results: E.Either<CheckpointError, unknown>[] = [await readSafetensorsHeader(path)(), await openSafetensors(path)(), await openCheckpoint(path)()];
      for (const result of results) {
        const msg = leftMessage(result);
        expect(msg).toContain(path);
        for (const s of c.expect) expect(msg).toContain(s);
      }
    });

  // The whole error, so that nothing is missing from or added to what the user reads: the file, the tensor if any
  // (as a field and in the message), the numbers.
  const w = (entry: string) => `{"w": ${entry}}`;
  const dtypes = 'F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL';
  const exact: { name: string; bytes: () => Uint8Array; tensor?: string; problem: string }[] = [
    { name: 'length-one-past', bytes: () => stFile('{}', 0, 3n), problem: 'header length 3 is larger than the 2 bytes after the length prefix' },
    { name: 'length-zero', bytes: () => stFile('', 0), problem: 'header length 0 is too small for a JSON object' },
    { name: 'length-one', bytes: () => stFile('{', 0), problem: 'header length 1 is too small for a JSON object' },
    { name: 'header-null', bytes: () => stFile('null', 0), problem: 'header must be a JSON object, got null' },
    { name: 'metadata-null', bytes: () => stFile('{"__metadata__": null}', 0), problem: '__metadata__ must map strings to strings, got null' },
    { name: 'entry-number', bytes: () => stFile(w('5'), 0), tensor: 'w', problem: 'expected an object {dtype, shape, data_offsets}, got 5' },
    { name: 'entry-null', bytes: () => stFile(w('null'), 0), tensor: 'w', problem: 'expected an object {dtype, shape, data_offsets}, got null' },
    { name: 'dtype-unknown', bytes: () => stFile(w('{"dtype": "F12", "shape": [1], "data_offsets": [0, 4]}'), 4), tensor: 'w', problem: `unknown dtype "F12" (expected one of ${dtypes})` },
    // JSON.stringify(["F32"]) is a name of dtypeSize once turned into a property key: the type must be checked too.
    { name: 'dtype-array', bytes: () => stFile(w('{"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}'), 4), tensor: 'w', problem: `unknown dtype ["F32"] (expected one of ${dtypes})` },
    // A value is shown whole up to 60 characters, then cut to 57 and "...": a hostile header must not flood the message.
    { name: 'dtype-60', bytes: () => stFile(w(`{"dtype": "${'x'.repeat(58)}", "shape": [1], "data_offsets": [0, 4]}`), 4), tensor: 'w', problem: `unknown dtype "${'x'.repeat(58)}" (expected one of ${dtypes})` },
    { name: 'dtype-61', bytes: () => stFile(w(`{"dtype": "${'x'.repeat(59)}", "shape": [1], "data_offsets": [0, 4]}`), 4), tensor: 'w', problem: `unknown dtype "${'x'.repeat(56)}... (expected one of ${dtypes})` },
    { name: 'shape-string', bytes: () => stFile(w('{"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}'), 8), tensor: 'w', problem: 'shape must be an array of non-negative integers, got ["2"]' },
    { name: 'shape-fraction', bytes: () => stFile(w('{"dtype": "F32", "shape": [1.5], "data_offsets": [0, 6]}'), 6), tensor: 'w', problem: 'shape must be an array of non-negative integers, got [1.5]' },
    { name: 'offsets-string', bytes: () => stFile(w('{"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]}'), 4), tensor: 'w', problem: 'data_offsets must be [begin, end] with non-negative integers, got ["0",4]' },
    {
      name: 'span-mismatch-later',
      bytes: () => stFile('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 16]}}', 16),
      tensor: 'b',
      problem: 'data_offsets [4, 16] span 12 bytes but shape [2] of F32 needs 8',
    },
    { name: 'repeated-top-key', bytes: () => stFile('{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": 1}', 4), problem: 'header repeats the key "w"' },
    // Unknown fields of an entry are ignored, but a repeated key anywhere is refused, with the path to its object.
    { name: 'repeated-nested', bytes: () => stFile(w('{"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": {"a": 1, "a": 2}}'), 4), problem: 'header repeats the key "a" in "w.x"' },
    { name: 'repeated-in-array', bytes: () => stFile(w('{"dtype": "F32", "shape": [{"a": 1, "a": 2}], "data_offsets": [0, 4]}'), 4), problem: 'header repeats the key "a" in "w.shape[]"' },
  ];
  for (const c of exact)
    it(`${c.name} (exact error)`, async () => {
      const path = join(tmp.path, `${c.name}.safetensors`);
      await writeFile(path, c.bytes());
      const want = { _tag: 'CheckpointError', file: path, ...(c.tensor === undefined ? {} : { tensor: c.tensor }), message: `${path}: ${c.tensor === undefined ? '' : `tensor "${c.tensor}": `}${c.problem}` };
      for (const result of [await readSafetensorsHeader(path)(), await openSafetensors(path)()]) {
        expect(E.isLeft(result)).toBe(true);
        if (E.isLeft(result)) expect(result.left).toEqual(want);
      }
    });

  it('a header that is not UTF-8 is refused, even where the bad byte sits inside a string', async () => {
    const path = join(tmp.path, 'latin1.safetensors');
    const header = new TextEncoder().encode('{"w?": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}');
    header[3] = 0xe9; // "é" in Latin-1, a lone continuation-less byte in UTF-8
    await writeFile(path, stFile(header, 4));
    expect(leftMessage(await openSafetensors(path)())).toContain(`${path}: header is not valid UTF-8 JSON (`);
  });

  it('accepts the smallest file, and unknown fields in an entry (as the reference implementation does)', async () => {
    const empty = join(tmp.path, 'empty.safetensors');
    await writeFile(empty, stFile('{}', 0));
    const h = right(await readSafetensorsHeader(empty)());
    expect(h).toEqual({ file: empty, fileSize: 10, dataStart: 10, tensors: [], metadata: {} });
    const extra = join(tmp.path, 'extra.safetensors');
    await writeFile(extra, stFile(w('{"dtype": "U8", "shape": [2], "data_offsets": [0, 2], "tags": ["x", "x"]}'), 2));
    expect(right(await readSafetensorsHeader(extra)()).tensors).toEqual([{ name: 'w', dtype: 'U8', shape: [2], begin: 0, end: 2 }]);
  });

  it('checkHeaderLength and parseSafetensorsHeader, called on bytes from elsewhere', () => {
    const prefix = (n: bigint) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, n, true);
      return b;
    };
    // The reference implementation's limit of 100 MB, inclusive; the file is large enough for either length.
    expect(maxHeaderBytes).toBe(100_000_000);
    expect(checkHeaderLength('f', prefix(100_000_000n), 300_000_000)).toEqual(E.right(100_000_000));
    expect(leftMessage(checkHeaderLength('f', prefix(100_000_001n), 300_000_000))).toBe('f: header length 100000001 exceeds the 100000000-byte limit');
    // Fewer than 8 bytes of prefix is a Left, not a RangeError from the DataView.
    expect(leftMessage(checkHeaderLength('f', new Uint8Array(3), 300))).toContain('too short for the 8-byte header length');
    const header = new TextEncoder().encode('{}');
    expect(leftMessage(parseSafetensorsHeader('f', header, 9))).toBe('f: header of 2 bytes does not fit in a 9-byte file');
    expect(parseSafetensorsHeader('f', header, 10)).toEqual(E.right({ file: 'f', fileSize: 10, dataStart: 10, tensors: [], metadata: {} }));
  });

  it('truncated file: the last tensor runs past the end', async () => {
    const path = join(tmp.path, 'truncated.safetensors');
    right(await writeSafetensors(path, [
      { name: 'first', dtype: 'F32', shape: [4], data: new Float32Array(4) },
      { name: 'last', dtype: 'F32', shape: [4], data: new Float32Array(4) },
    ])());
    const full = (await readFile(path)).length;
    await truncate(path, full - 5);
    const msg = leftMessage(await openSafetensors(path)());
    expect(msg).toContain(path);
    expect(msg).toContain('tensor "last"');
    expect(msg).toContain('run past the end');
  });

  it('a missing file names the file', async () => {
    const path = join(tmp.path, 'absent.safetensors');
    expect(leftMessage(await openSafetensors(path)())).toBe(`${path}: cannot open (no such file or directory)`);
    expect(leftMessage(await readSafetensorsHeader(path)())).toBe(`${path}: cannot open (no such file or directory)`);
    expect(leftMessage(await openCheckpoint(path)())).toContain(path);
  });

  it('a folder with no checkpoint says what it looked for', async () => {
    const empty = join(tmp.path, 'empty');
    await mkdir(empty);
    expect(leftMessage(await openCheckpoint(empty)())).toContain('neither model.safetensors.index.json nor model.safetensors');
  });
});

describe('malformed sharded checkpoints are Lefts naming the index, shard and tensor', () => {
  const tmp = tempDir('camelid-st-shard-');
  let n = 0;

  const t = (name: string): TensorToWrite => ({ name, dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) });

  // Two shards: s1 holds a, b; s2 holds c. `weightMap` is written as the index.
  const setup = async (weightMap: unknown, s2: string[] = ['c']) => {
    const d = join(tmp.path, `ck${n++}`);
    await mkdir(d);
    right(await writeSafetensors(join(d, 's1.safetensors'), [t('a'), t('b')])());
    right(await writeSafetensors(join(d, 's2.safetensors'), s2.map(t))());
    const index = join(d, 'model.safetensors.index.json');
    await writeFile(index, typeof weightMap === 'string' ? weightMap : JSON.stringify({ metadata: {}, weight_map: weightMap }));
    return { d, index };
  };

  it('reads a valid hand-made index', async () => {
    const { d } = await setup({ a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' });
    const ckpt = right(await openCheckpoint(d)());
    expect(ckpt.tensors.map((x) => x.name)).toEqual(['a', 'b', 'c']);
    expect([...right(await ckpt.read('c')())]).toEqual([1, 2]);
    await ckpt.close();
  });

  const bad: { name: string; map: unknown; s2?: string[]; expect: string[] }[] = [
    { name: 'missing shard', map: { a: 's1.safetensors', b: 's1.safetensors', c: 's3.safetensors' }, expect: ['tensor "c"', 'shard "s3.safetensors" named in weight_map does not exist'] },
    { name: 'missing tensor', map: { a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors', d: 's2.safetensors' }, expect: ['tensor "d"', 'shard "s2.safetensors", which does not contain it'] },
    { name: 'tensor in two shards', map: { a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' }, s2: ['c', 'a'], expect: ['tensor "a"', 'weight_map places it in shard "s1.safetensors", but its data is in shard "s2.safetensors" and also in "s1.safetensors"'] },
    { name: 'wrong shard', map: { a: 's2.safetensors', b: 's1.safetensors', c: 's2.safetensors' }, expect: ['tensor "a"', 'weight_map places it in shard "s2.safetensors", but its data is in shard "s1.safetensors"'] },
    { name: 'unlisted tensor', map: { a: 's1.safetensors', c: 's2.safetensors' }, expect: ['tensor "b"', 'missing from weight_map'] },
    { name: 'escaping shard path', map: { a: '../s1.safetensors' }, expect: ['tensor "a"', 'inside the checkpoint folder'] },
    { name: 'invalid JSON', map: '{"weight_map": {', expect: ['invalid JSON'] },
    { name: 'no weight_map', map: '{"metadata": {}}', expect: ['"weight_map"'] },
  ];
  for (const c of bad)
    it(c.name, async () => {
      const { d, index } = await setup(c.map, c.s2);
      for (const target of [d, index]) {
        const msg = leftMessage(await openCheckpoint(target)());
        expect(msg).toContain(index);
        for (const s of c.expect) expect(msg).toContain(s);
      }
    });

  const notInside = 'weight_map entry must be a shard file name inside the checkpoint folder, got';
  const exact: { name: string; map: unknown; problem: string }[] = [
    { name: 'shard is a number', map: { a: 5 }, problem: `tensor "a": ${notInside} 5` },
    { name: 'shard is empty', map: { a: '' }, problem: `tensor "a": ${notInside} ""` },
    { name: 'shard is absolute', map: { a: '/tmp/s1.safetensors' }, problem: `tensor "a": ${notInside} "/tmp/s1.safetensors"` },
    { name: 'shard climbs out', map: { a: 'x/../../s1.safetensors' }, problem: `tensor "a": ${notInside} "x/../../s1.safetensors"` },
    { name: 'index is null', map: 'null', problem: 'expected an object with a "weight_map" object' },
    { name: 'weight_map is null', map: '{"weight_map": null}', problem: 'expected an object with a "weight_map" object' },
    { name: 'wrong shard, held only there', map: { a: 's2.safetensors', b: 's1.safetensors', c: 's2.safetensors' }, problem: 'tensor "a": weight_map places it in shard "s2.safetensors", but its data is in shard "s1.safetensors"' },
  ];
  for (const c of exact)
    it(`${c.name} (exact error)`, async () => {
      const { d, index } = await setup(c.map);
      expect(leftMessage(await openCheckpoint(d)())).toBe(`${index}: ${c.problem}`);
    });

  it('reading a tensor it does not hold, or after closing, names the checkpoint and tensor', async () => {
    const { d, index } = await setup({ a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' });
    const ckpt = right(await openCheckpoint(d)());
    expect(ckpt.info('nope')).toBeUndefined();
    expect(leftMessage(await ckpt.read('nope')())).toBe(`${index}: tensor "nope": no such tensor in this checkpoint`);
    await ckpt.close();
    expect(leftMessage(await ckpt.read('c')())).toBe(`${join(d, 's2.safetensors')}: tensor "c": file is closed`);
  });

  it('an index path that is a folder cannot be read', async () => {
    const d = join(tmp.path, 'index-folder');
    await mkdir(join(d, 'model.safetensors.index.json'), { recursive: true });
    expect(leftMessage(await openCheckpoint(d)())).toBe(`${join(d, 'model.safetensors.index.json')}: cannot read index (is a directory)`);
  });

  it.skipIf(!haveProcFd)('closes every shard it opened: on close, and when opening fails part way', async () => {
    const good = await setup({ a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' });
    const before = await openFds();
    const ckpt = right(await openCheckpoint(good.d)());
    expect(await openFds()).toBe(before + 2); // one descriptor per shard, however many tensors it holds
    await ckpt.close();
    expect(await openFds()).toBe(before);
    // s1 opens, then the map is found wrong: s1 must not stay open.
    const bad = await setup({ a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors', d: 's2.safetensors' });
    expect(leftMessage(await openCheckpoint(bad.d)())).toContain('which does not contain it');
    expect(await openFds()).toBe(before);
  });

  it('a corrupt shard reports the shard file and tensor', async () => {
    const { d } = await setup({ a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' });
    await writeFile(join(d, 's2.safetensors'), stFile('{"c": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}', 8));
    const msg = leftMessage(await openCheckpoint(d)());
    expect(msg).toContain(join(d, 's2.safetensors'));
    expect(msg).toContain('tensor "c"');
  });
});
