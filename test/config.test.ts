import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import {
  checkVocab, codellama_7b, llama2_13b, llama2_70b, llama2_7b, loadLlamaConfig, parseLlamaConfig, toHfConfig, type LlamaConfig,
} from '../models/config.js';
import { loadLlama } from '../models/load.js';
import { fixture, leftMessage, right, tempDir } from './helpers.js';

const { path: fixtures, have: haveFixtures } = fixture('stories260K', 'config tests on config test');

const minimal = { hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5, num_attention_heads: 8, vocab_size: 512, rms_norm_eps: 1e-5 };

describe.skipIf(!haveFixtures)('stories260K config.json', () => {
  it('parses to the llama2.c header numbers', async () => {
    const c = right(await loadLlamaConfig(join(fixtures, 'hf'))());
    expect(c).toEqual({
      dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize: 512, seqLen: 512,
      normEps: 1e-5, ropeTheta: 10000, tieEmbeddings: true, bosId: 1, eosId: 2,
    });
  });
  it('loads the same from the file path as from the folder', async () => {
    expect(await loadLlamaConfig(join(fixtures, 'hf', 'config.json'))()).toEqual(await loadLlamaConfig(join(fixtures, 'hf'))());
  });
});

describe('parseLlamaConfig', () => {
  it('fills the Llama defaults and ignores unknown keys', () => {
    const c = right(parseLlamaConfig({ ...minimal, architectures: ['LlamaForCausalLM'], some_future_key: { x: 1 }, pad_token_id: null }, 'c.json'));
    expect(c).toEqual({
      dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 8, headDim: 8, vocabSize: 512, seqLen: 2048,
      normEps: 1e-5, ropeTheta: 10000, tieEmbeddings: false, bosId: 1, eosId: 2,
    });
  });

  it('treats null optional fields as absent', () => {
    const c = right(parseLlamaConfig({ ...minimal, num_key_value_heads: null, rope_theta: null, rope_scaling: null }, 'c.json'));
    expect([c.nKvHeads, c.ropeTheta]).toEqual([8, 10000]);
  });

  it('names the file and the missing field', () => {
    const { hidden_size: _, ...rest } = minimal;
    const msg = leftMessage(parseLlamaConfig(rest, '/models/x/config.json'));
    expect(msg).toContain('/models/x/config.json');
    expect(msg).toContain('"hidden_size"');
    expect(msg).toContain('positive integer');
    expect(msg).toContain('missing');
  });

  it('reports every wrong field with what was expected and what was found', () => {
    const e = parseLlamaConfig({ ...minimal, num_hidden_layers: '5', rms_norm_eps: -1, tie_word_embeddings: 'yes' }, 'c.json');
    expect(E.isLeft(e) && e.left.issues.map((i) => i.field)).toEqual(['num_hidden_layers', 'rms_norm_eps', 'tie_word_embeddings']);
    const msg = leftMessage(e);
    expect(msg).toContain('field "num_hidden_layers": expected a positive integer, got "5"');
    expect(msg).toContain('field "rms_norm_eps": expected a positive finite number, got -1');
  });

  it('rejects a config that is not an object in one short line (not a dump of the io-ts type)', () => {
    expect(leftMessage(parseLlamaConfig([1, 2], 'c.json'))).toBe('c.json: invalid Llama config: field "(root)": expected a JSON object, got [1,2]');
    expect(leftMessage(parseLlamaConfig('x', 'c.json'))).toBe('c.json: invalid Llama config: field "(root)": expected a JSON object, got "x"');
    expect(leftMessage(parseLlamaConfig(null, 'c.json'))).toBe('c.json: invalid Llama config: field "(root)": expected a JSON object, got null');
  });

  it('rejects heads not divisible by kv heads, naming the field', () => {
    const msg = leftMessage(parseLlamaConfig({ ...minimal, num_key_value_heads: 3 }, 'cfg/config.json'));
    expect(msg).toContain('cfg/config.json');
    expect(msg).toContain('"num_key_value_heads"');
    expect(msg).toContain('divisor of num_attention_heads (8)');
  });

  it('needs hidden_size % heads === 0 unless head_dim is given', () => {
    expect(leftMessage(parseLlamaConfig({ ...minimal, hidden_size: 60 }, 'c.json'))).toContain('"hidden_size"');
    expect(right(parseLlamaConfig({ ...minimal, hidden_size: 60, head_dim: 16 }, 'c.json')).headDim).toBe(16);
  });

  it('refuses settings that would change the computation silently', () => {
    expect(leftMessage(parseLlamaConfig({ ...minimal, rope_scaling: { type: 'linear', factor: 2 } }, 'c.json'))).toContain('"rope_scaling"');
    expect(leftMessage(parseLlamaConfig({ ...minimal, hidden_act: 'gelu' }, 'c.json'))).toContain('"hidden_act"');
    expect(leftMessage(parseLlamaConfig({ ...minimal, attention_bias: true }, 'c.json'))).toContain('"attention_bias"');
  });
});

describe('presets', () => {
  it('carry the published numbers', () => {
    expect([llama2_7b.dim, llama2_7b.hiddenDim, llama2_7b.nLayers, llama2_7b.nHeads, llama2_7b.nKvHeads]).toEqual([4096, 11008, 32, 32, 32]);
    expect([llama2_13b.dim, llama2_13b.hiddenDim, llama2_13b.nLayers, llama2_13b.nHeads]).toEqual([5120, 13824, 40, 40]);
    expect([llama2_70b.dim, llama2_70b.hiddenDim, llama2_70b.nLayers, llama2_70b.nHeads, llama2_70b.nKvHeads]).toEqual([8192, 28672, 80, 64, 8]);
    expect([codellama_7b.vocabSize, codellama_7b.ropeTheta, codellama_7b.seqLen]).toEqual([32016, 1e6, 16384]);
    for (const c of [llama2_7b, llama2_13b, llama2_70b, codellama_7b]) expect(c.headDim).toBe(128);
  });

  it('survive toHfConfig → parseLlamaConfig', () => {
    for (const c of [llama2_7b, llama2_13b, llama2_70b, codellama_7b])
      expect(right(parseLlamaConfig(JSON.parse(JSON.stringify(toHfConfig(c))), 'p.json'))).toEqual(c);
  });
});

describe('toHfConfig', () => {
  it('round-trips any valid config (property)', () => {
    const cfg: fc.Arbitrary<LlamaConfig> = fc
      .record({
        kv: fc.integer({ min: 1, max: 16 }), group: fc.integer({ min: 1, max: 8 }), headDim: fc.integer({ min: 1, max: 256 }),
        hiddenDim: fc.integer({ min: 1, max: 1 << 16 }), nLayers: fc.integer({ min: 1, max: 128 }), vocabSize: fc.integer({ min: 1, max: 1 << 18 }),
        seqLen: fc.integer({ min: 1, max: 1 << 20 }), normEps: fc.double({ min: 1e-12, max: 1, noNaN: true }),
        ropeTheta: fc.double({ min: 1, max: 1e7, noNaN: true }), tieEmbeddings: fc.boolean(),
        bosId: fc.nat(1000), eosId: fc.nat(1000), dimMult: fc.boolean(),
      })
      .map(({ kv, group, headDim, dimMult, ...r }) => {
        const nHeads = kv * group;
        return { ...r, nHeads, nKvHeads: kv, headDim, dim: dimMult ? nHeads * headDim : nHeads * headDim + 1 };
      });
    fc.assert(
      fc.property(cfg, (c) => {
        expect(right(parseLlamaConfig(JSON.parse(JSON.stringify(toHfConfig(c))), 'p.json'))).toEqual(c);
      }),
      { seed: 20240601, numRuns: 200 },
    );
  });
});

describe('loadLlamaConfig errors', () => {
  const tmp = tempDir('camelid-config-');

  it('names a missing file once, with no code repeated and nothing trailing', async () => {
    const nope = join(tmp.path, 'nope');
    expect(leftMessage(await loadLlamaConfig(nope)())).toBe(`${nope}: cannot read config (no such file or directory)`);
    expect(leftMessage(await loadLlama(nope)())).toBe(`${nope}: cannot open model (no such file or directory)`);
    expect(leftMessage(await loadLlama(join(tmp.path, 'model.pt'))())).toBe(`${join(tmp.path, 'model.pt')}: cannot open model (no such file or directory)`);
    await writeFile(join(tmp.path, 'model.pt'), 'x');
    expect(leftMessage(await loadLlama(join(tmp.path, 'model.pt'))())).toBe(
      `${join(tmp.path, 'model.pt')}: cannot tell the format of 'model.pt' (expected a folder, a .safetensors, a .index.json or a llama2.c .bin)`);
  });

  it('names a folder without config.json by its config.json path', async () => {
    expect(leftMessage(await loadLlamaConfig(tmp.path)())).toContain(join(tmp.path, 'config.json'));
  });

  it('reports invalid JSON with the file', async () => {
    const f = join(tmp.path, 'bad.json');
    await writeFile(f, '{"hidden_size": 64,');
    const msg = leftMessage(await loadLlamaConfig(f)());
    expect(msg).toMatch(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: invalid JSON \\([^)]+\\)$`));
  });

  it('reports a missing hidden_size with the file', async () => {
    const f = join(tmp.path, 'missing.json');
    const { hidden_size: _, ...rest } = minimal;
    await writeFile(f, JSON.stringify(rest));
    const msg = leftMessage(await loadLlamaConfig(f)());
    expect(msg).toContain(f);
    expect(msg).toContain('"hidden_size"');
  });
});

describe('checkVocab: a tokenizer must have exactly the model\'s vocab_size tokens', () => {
  const cfg = { vocabSize: 512 };
  it('accepts equal sizes', () => {
    expect(checkVocab(cfg, { vocabSize: 512 })).toEqual(E.right(undefined));
  });
  it('refuses a bigger or a smaller tokenizer, naming both sizes and both files', () => {
    expect(leftMessage(checkVocab(cfg, { vocabSize: 32000 }, { model: 'stories260K/hf', tokenizer: 'llama2/tokenizer.model' }))).toBe(
      'the tokenizer llama2/tokenizer.model has 32000 tokens but stories260K/hf has vocab_size 512: they do not belong together (pass the tokenizer the model was trained with)');
    expect(leftMessage(checkVocab({ vocabSize: 32000 }, { vocabSize: 512 }))).toBe(
      'the tokenizer has 512 tokens but the model has vocab_size 32000: they do not belong together (pass the tokenizer the model was trained with)');
  });
});
