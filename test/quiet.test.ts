// Quiet waits (core/device/quiet.ts): past the spin window, native callbacks given to setImmediate (Dawn's tick)
// are deferred to a 1 ms timer while JavaScript callbacks run as before; the global is restored afterwards.

import { describe, expect, it } from 'vitest';
import { quietly } from '../core/device/quiet.js';

const tick = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Schedule a native callback (a bound function stringifies as native code) and a JavaScript one; report the order. */
const race = async (): Promise<string[]> => {
  const order: string[] = [];
  setImmediate(Array.prototype.push.bind(order, 'native'));
  setImmediate(() => order.push('js'));
  await new Promise<void>((r) => setImmediate(r));
  await tick(5);
  return order;
};

describe('quietly', () => {
  it('defers native ticks to a timer only while a wait is past its spin window, and restores setImmediate', async () => {
    const original = globalThis.setImmediate;
    expect(await race()).toEqual(['native', 'js']);
    let inside: string[] = [];
    await quietly(async () => { await tick(10); inside = await race(); }, 2);
    expect(inside).toEqual(['js', 'native']);
    expect(globalThis.setImmediate).toBe(original);
    const early = await quietly(() => race(), 50); // still spinning: untouched
    expect(early).toEqual(['native', 'js']);
    expect(globalThis.setImmediate).toBe(original);
  });

  it('overlapping waits keep the throttle until the last ends, also when one fails', async () => {
    const original = globalThis.setImmediate;
    const a = quietly(() => tick(30), 1);
    const b = quietly(async () => { await tick(10); throw new Error('lost'); }, 1);
    await expect(b).rejects.toThrow('lost');
    expect(globalThis.setImmediate).not.toBe(original);
    await a;
    expect(globalThis.setImmediate).toBe(original);
  });
});
