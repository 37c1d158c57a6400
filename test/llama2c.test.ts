import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadLlamaConfig } from '../models/config.js';
import { halvesToInterleaved, interleavedToHalves, readLlama2c } from '../models/llama2c.js';
import { openCheckpoint } from '../models/safetensors.js';
import { fixture, leftMessage, right, tempDir } from './helpers.js';

const { path: fixtures, have: haveFixtures } = fixture('stories260K', 'llama2c tests on comparison');

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const sameBits = (a: ArrayBufferView, b: ArrayBufferView) => Buffer.from(bytesOf(a)).equals(bytesOf(b));

const tmp = tempDir('camelid-llama2c-');

describe.skipIf(!haveFixtures)('stories260K.bin against the Hugging Face export', () => {
  it('gives the same config as config.json', async () => {
    const { config } = right(await readLlama2c(join(fixtures, 'stories260K.bin'))());
    expect(config).toEqual(right(await loadLlamaConfig(join(fixtures, 'hf'))()));
  });

  it('gives every safetensors tensor bit-exactly, q/k permuted to rotate_half order', async () => {
    const { tensors } = right(await readLlama2c(join(fixtures, 'stories260K.bin'))());
    const hf = right(await openCheckpoint(join(fixtures, 'hf'))());
    try {
      expect([...tensors.keys()]).toEqual(hf.tensors.map((t) => t.name));
      for (const info of hf.tensors) {
        const mine = tensors.get(info.name)!;
        expect(mine.shape, info.name).toEqual(info.shape);
        expect(sameBits(mine.data, right(await hf.read(info.name)())), info.name).toBe(true);
      }
    } finally {
      await hf.close();
    }
    expect(tensors.get('lm_head.weight')!.data).toBe(tensors.get('model.embed_tokens.weight')!.data); // tied: shared
  });

  it('the permutation is what makes them equal: the file order differs from Hugging Face order', async () => {
    const file = await readFile(join(fixtures, 'stories260K.bin'));
    const wq0 = 28 + 4 * (512 * 64 + 5 * 64); // after token_embedding and rms_att of all layers
    const stored = new Float32Array(file.buffer.slice(file.byteOffset + wq0, file.byteOffset + wq0 + 64 * 64 * 4));
    const { tensors } = right(await readLlama2c(join(fixtures, 'stories260K.bin'))());
    const q0 = tensors.get('model.layers.0.self_attn.q_proj.weight')!.data;
    expect(sameBits(stored, q0)).toBe(false);
    expect(sameBits(halvesToInterleaved(q0, 8, 8, 64), stored)).toBe(true);
  });

  it('a truncated copy is a Left naming the file, expected and actual bytes', async () => {
    const cut = join(tmp.path, 'stories-truncated.bin');
    await writeFile(cut, (await readFile(join(fixtures, 'stories260K.bin'))).subarray(0, 100_000));
    const msg = leftMessage(await readLlama2c(cut)());
    expect(msg).toContain(cut);
    expect(msg).toContain('implies 1056540 bytes, but the file has 100000');
  });
});

// A synthetic llama2.c file whose floats count up from 0, so every value tells where it came from.
const synthetic = (h: { dim: number; hidden: number; layers: number; heads: number; kv: number; vocab: number; seq: number }) => {
  const hd = h.dim / h.heads, kvDim = h.kv * hd, v = Math.abs(h.vocab);
  const floats = v * h.dim + h.layers * (2 * h.dim + 2 * h.dim * h.dim + 2 * h.dim * kvDim + 3 * h.dim * h.hidden) + h.dim + h.seq * hd + (h.vocab < 0 ? v * h.dim : 0);
  const buf = new ArrayBuffer(28 + 4 * floats);
  new Int32Array(buf, 0, 7).set([h.dim, h.hidden, h.layers, h.heads, h.kv, h.vocab, h.seq]);
  new Float32Array(buf, 28).forEach((_, i, a) => (a[i] = i));
  return new Uint8Array(buf);
};
const small = { dim: 8, hidden: 6, layers: 2, heads: 2, kv: 1, vocab: -5, seq: 3 };

describe('llama2.c layout', () => {
  it('reads an unshared classifier and permutes q/k rows within each head', async () => {
    const path = join(tmp.path, 'small.bin');
    await writeFile(path, synthetic(small));
    const { config, tensors } = right(await readLlama2c(path)());
    expect(config).toMatchObject({ dim: 8, hiddenDim: 6, nLayers: 2, nHeads: 2, nKvHeads: 1, headDim: 4, vocabSize: 5, seqLen: 3, tieEmbeddings: false });
    expect(tensors.size).toBe(1 + 2 * 9 + 2);
    const row0 = (name: string, cols: number) => {
      const t = tensors.get(name)!;
      return Array.from({ length: t.data.length / cols }, (_, r) => t.data[r * cols]);
    };
    // q of layer 0 starts after embedding (40) and rms_att (16): llama2.c rows 0..7 → HF rows 0,2,1,3 | 4,6,5,7.
    expect(row0('model.layers.0.self_attn.q_proj.weight', 8)).toEqual([0, 2, 1, 3, 4, 6, 5, 7].map((r) => 56 + 8 * r));
    const wk0 = 56 + 2 * 64;
    expect(row0('model.layers.0.self_attn.k_proj.weight', 8)).toEqual([0, 2, 1, 3].map((r) => wk0 + 8 * r));
    expect(row0('model.layers.1.self_attn.v_proj.weight', 8)).toEqual([0, 1, 2, 3].map((r) => wk0 + 2 * 32 + 32 + 8 * r));
    expect(tensors.get('model.layers.1.mlp.down_proj.weight')!.shape).toEqual([8, 6]);
    const lm = tensors.get('lm_head.weight')!;
    expect(lm.shape).toEqual([5, 8]);
    expect(lm.data[lm.data.length - 1]).toBe((synthetic(small).length - 28) / 4 - 1); // the last floats of the file
    expect(lm.data).not.toBe(tensors.get('model.embed_tokens.weight')!.data);
  });

  it('interleavedToHalves and halvesToInterleaved are inverse permutations (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 5 }), (heads, halfDim, cols) => {
        const hd = 2 * halfDim;
        const w = Float32Array.from({ length: heads * hd * cols }, (_, i) => i);
        const p = interleavedToHalves(w, heads, hd, cols);
        expect(new Set(p).size).toBe(w.length);
        expect(halvesToInterleaved(p, heads, hd, cols)).toEqual(w);
      }),
      { seed: 11, numRuns: 100 },
    );
  });
});

describe('malformed llama2.c files are Lefts naming the file', () => {
  const header = (ints: number[]) => new Uint8Array(Int32Array.from(ints).buffer);
  const cases: { name: string; bytes: () => Uint8Array; expect: string }[] = [
    { name: 'shorter than the header', bytes: () => new Uint8Array(10), expect: 'file is 10 bytes, shorter than the 28-byte header' },
    { name: 'truncated', bytes: () => synthetic(small).subarray(0, 200), expect: 'but the file has 200' },
    { name: 'trailing bytes', bytes: () => new Uint8Array([...synthetic(small), 0, 0, 0, 0]), expect: `implies ${synthetic(small).length} bytes` },
    { name: 'zero layers', bytes: () => header([8, 6, 0, 2, 1, 5, 3]), expect: 'n_layers must be positive, got 0' },
    { name: 'dim not a multiple of heads', bytes: () => header([8, 6, 2, 3, 1, 5, 3]), expect: 'dim (8) must be a multiple of n_heads (3)' },
    { name: 'kv heads not dividing heads', bytes: () => header([12, 6, 2, 2, 3, 5, 3]), expect: 'n_kv_heads (3) must divide n_heads (2)' },
    { name: 'odd head size', bytes: () => header([6, 6, 2, 2, 1, 5, 3]), expect: 'must be even' },
    { name: 'versioned export', bytes: () => header([0x616b3432, 1, 0, 0, 0, 0, 0]), expect: '"ak42"' },
    { name: 'gigantic header', bytes: () => header([2 ** 30, 2 ** 30, 2 ** 30, 1, 1, 2 ** 30, 2 ** 30]), expect: 'but the file has 28' },
  ];
  for (const c of cases)
    it(c.name, async () => {
      const path = join(tmp.path, `${c.name.replaceAll(' ', '-')}.bin`);
      await writeFile(path, c.bytes());
      const msg = leftMessage(await readLlama2c(path)());
      expect(msg).toContain(path);
      expect(msg).toContain(c.expect);
    });

  it('a missing file names the file', async () => {
    expect(leftMessage(await readLlama2c(join(tmp.path, 'absent.bin'))())).toBe(`${join(tmp.path, 'absent.bin')}: cannot open (no such file or directory)`);
  });
});
