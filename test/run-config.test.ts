// The config fields SFT and DPO share (recipes/run-config.ts): each number codec at its boundaries, with the
// failure naming the field, every shared field accepting a value of its kind and refusing another, and how a layer
// of settings is checked and the layers merged over the defaults and a preset.
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { describe, expect, it } from 'vitest';
import { count, mergeLayers, nonNeg, numberField, parseLayer, posInt, positive, trainFields, unknownKeys, type RunLayer } from '../recipes/run-config.js';

const why = (c: t.Decoder<unknown, unknown>, u: unknown): string | null => {
  const r = c.decode(u);
  return E.isRight(r) ? null : r.left.map((e) => e.message).join('; ');
};

describe('run config number fields', () => {
  it('accept exactly the numbers they name, and say which field failed and why', () => {
    const cases: [t.Decoder<unknown, unknown>, unknown[], unknown[], string][] = [
      [posInt('batchSize'), [1, 2, 2 ** 53 - 1], [0, -1, 1.5, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, '4', null], 'batchSize must be an integer > 0'],
      [count('seed'), [0, 1, 42], [-1, 0.5, Number.NaN, '0'], 'seed must be an integer ≥ 0'],
      [nonNeg('lr'), [0, 1e-12, 2.5], [-1e-12, Number.NaN, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, '1e-5'], 'lr must be a number ≥ 0'],
      [positive('eps'), [1e-12, 1], [0, -1, Number.NaN, Number.POSITIVE_INFINITY, true], 'eps must be a number > 0'],
    ];
    for (const [codec, good, bad, message] of cases) {
      for (const g of good) expect(why(codec, g), `${message}: ${String(g)}`).toBeNull();
      for (const b of bad) expect(why(codec, b), `${message}: ${String(b)}`).toBe(message);
    }
    const even = numberField('n', (x) => x % 2 === 0, 'even');
    expect([why(even, 4), why(even, 3)]).toEqual([null, 'n must be even']);
    expect(even.is(3)).toBe(true); // `is` is the type guard (a number), the range is the decoder's
    expect(even.is('3')).toBe(false);
    expect(even.encode(5)).toBe(5);
  });

  it('every shared training field takes a value of its kind and refuses another', () => {
    const good: Record<keyof typeof trainFields, unknown> = {
      model: 'm', tokenizer: 't.model', output: 'runs/x', maxSeqLen: 8, batchSize: 2, gradAccum: 1, epochs: 1, steps: 10, lr: 2e-5,
      schedule: 'cosine', warmupRatio: 0.03, weightDecay: 0, b1: 0.9, b2: 0.999, eps: 1e-8, clipNorm: 1, seed: 0, variant: 'hf',
      padToMultiple: 8, saveEvery: 0, keepCheckpoints: 1, logEvery: 1, resume: 'runs/x', lora: { r: 8, alpha: 16 }, qlora: true,
    };
    const codec = t.exact(t.partial(trainFields));
    expect(E.isRight(codec.decode(good))).toBe(true);
    for (const k of Object.keys(good) as (keyof typeof trainFields)[]) {
      const bad = typeof good[k] === 'string' ? 7 : 'seven';
      expect(E.isLeft(codec.decode({ ...good, [k]: bad })), k).toBe(true);
    }
    // Each number field's refusal names that field (a copied posInt('batchSize') under another key would not).
    for (const k of (Object.keys(good) as (keyof typeof trainFields)[]).filter((x) => typeof good[x] === 'number')) {
      const r = parseLayer(t.partial(trainFields), Object.keys(trainFields), { [k]: -1.5 }, 'f');
      expect(E.isLeft(r) && r.left, k).toMatch(new RegExp(`^f: ${k}: ${k} must be `));
    }
    expect(E.isLeft(codec.decode({ schedule: 'step' }))).toBe(true); // not one of linear, cosine, constant
    expect(E.isLeft(codec.decode({ variant: 'tulu' }))).toBe(true); // not one of hf-legacy, hf, easylm
  });
});

describe('layers of settings', () => {
  const codec = t.exact(t.partial({ lr: nonNeg('lr'), name: t.string, data: t.array(t.string) }));
  const keys = ['lr', 'name', 'data'];

  it('a layer is an object of known keys, each checked; failures name the source, the path and why', () => {
    expect(parseLayer(codec, keys, { lr: 1, name: 'x' }, 'f.json')).toEqual(E.right({ lr: 1, name: 'x' }));
    for (const raw of [null, [1], 'lr=1', 3]) expect(parseLayer(codec, keys, raw, 'f.json')).toEqual(E.left('f.json: expected a JSON object of settings'));
    expect(parseLayer(codec, keys, { lr: 1, lerning: 2 }, 'f.json')).toEqual(E.left("f.json: unknown key 'lerning' (known: lr, name, data)"));
    expect(parseLayer(codec, keys, { a: 1, b: 2 }, 'flags')).toEqual(E.left("flags: unknown keys 'a', 'b' (known: lr, name, data)"));
    expect(parseLayer(codec, keys, { lr: -1, name: 3 }, 'f.json')).toEqual(E.left('f.json: lr: lr must be a number ≥ 0; name: expected string, got 3'));
    expect(parseLayer(codec, keys, { data: ['a', 7] }, 'f.json')).toEqual(E.left('f.json: data.1: expected string, got 7'));
    // An intersection (bare, or under t.exact) adds its member's index to io-ts's path: the message leaves it out.
    const entry = t.intersection([t.type({ path: t.string }), t.partial({ weight: nonNeg('weight') })]);
    for (const item of [entry, t.exact(entry)]) {
      const c = t.partial({ data: t.array(item) });
      expect(parseLayer(c, ['data'], { data: [{ path: 'a' }, { weight: 1 }] }, 'f')).toEqual(E.left('f: data.1.path: expected string, got undefined'));
      expect(parseLayer(c, ['data'], { data: [{ path: 'a', weight: -1 }] }, 'f')).toEqual(E.left('f: data.0.weight: weight must be a number ≥ 0'));
    }
    expect([unknownKeys(['x']), unknownKeys(['x', 'y'])]).toEqual(["unknown key 'x'", "unknown keys 'x', 'y'"]);
  });

  type L = RunLayer & { lr?: number };
  const defaults: L = { lr: 1, epochs: 3 };
  const presets: Record<string, L> = { fast: { lr: 5, epochs: 1 }, slow: { lr: 0.5 } };
  const need = { model: 'm', data: ['d'], output: 'o' };

  it('merge: defaults ← the last preset named ← each layer in order; the required fields', () => {
    expect(mergeLayers(defaults, presets, [{ ...need }])).toEqual(E.right({ lr: 1, epochs: 3, ...need }));
    expect(mergeLayers(defaults, presets, [{ preset: 'fast', ...need }])).toEqual(E.right({ preset: 'fast', lr: 5, epochs: 1, ...need }));
    // the flags' preset wins over the file's, and any layer's own lr over both presets
    expect(mergeLayers(defaults, presets, [{ preset: 'fast', ...need }, { preset: 'slow' }])).toEqual(E.right({ preset: 'slow', lr: 0.5, epochs: 3, ...need }));
    expect(mergeLayers(defaults, presets, [{ preset: 'fast', lr: 2, ...need }, { lr: 3 }])).toEqual(E.right({ preset: 'fast', lr: 3, epochs: 1, ...need }));
    expect(mergeLayers(defaults, presets, [{ model: 'm' }])).toEqual(E.left('config: missing data, output'));
    expect(mergeLayers(defaults, presets, [{}])).toEqual(E.left('config: missing model, data, output'));
    expect(mergeLayers(defaults, presets, [{ ...need, data: [] }])).toEqual(E.left('config: data lists no file'));
  });

  it('merge: steps in a layer replace the default or preset epochs; epochs and steps both in layers are an error', () => {
    expect(mergeLayers(defaults, presets, [{ preset: 'fast', ...need }, { steps: 7 }])).toEqual(E.right({ preset: 'fast', lr: 5, steps: 7, ...need }));
    expect(mergeLayers<L>({ ...defaults, steps: 2 }, presets, [{ ...need }])).toEqual(E.left('config: give epochs or steps, not both'));
    expect(mergeLayers(defaults, presets, [{ ...need, epochs: 2 }, { steps: 7 }])).toEqual(E.left('config: give epochs or steps, not both'));
    expect(mergeLayers(defaults, presets, [{ ...need, epochs: 2 }])).toEqual(E.right({ lr: 1, epochs: 2, ...need }));
  });
});
