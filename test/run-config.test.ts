// The config fields SFT and DPO share (recipes/run-config.ts): each number codec at its boundaries, with the
// failure naming the field, and every shared field accepting a value of its kind and refusing another.
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { describe, expect, it } from 'vitest';
import { count, nonNeg, numberField, posInt, positive, trainFields } from '../recipes/run-config.js';

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
    expect(E.isLeft(codec.decode({ schedule: 'step' }))).toBe(true); // not one of linear, cosine, constant
    expect(E.isLeft(codec.decode({ variant: 'tulu' }))).toBe(true); // not one of hf-legacy, hf, easylm
  });
});
