// The spirals example really learns: the spiral MLP's loss falls well below chance (ln 2 ≈ 0.693).

import { expect, it } from 'vitest';
import { setBackend } from '../index.js';
import { trainSpirals } from '../examples/spirals.js';

it('the spirals example: loss falls from above ln 2 to below 0.45 in 250 SGD steps', async () => {
  setBackend('cpu');
  const losses = await trainSpirals(250, () => {});
  expect(losses[0]!).toBeGreaterThan(Math.LN2);
  expect(losses[losses.length - 1]!).toBeLessThan(0.45);
});
