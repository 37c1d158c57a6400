// Quiet waits (core/device/quiet.ts): past the spin window, native callbacks given to setImmediate (Dawn's tick)
// are deferred to a 1 ms timer while JavaScript callbacks run as before; the global is restored afterwards.

import { describe, expect, it, vi } from 'vitest';
import { quietly } from '../core/device/quiet.js';

const tick = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Schedule a native callback (a bound function stringifies as native code) and a JavaScript one through the global
 * setImmediate; report which of them went to a 1 ms timer instead (deterministic, unlike their order under load).
 */
const deferred = async (): Promise<string[]> => {
  const native = Array.prototype.push.bind([], 'native');
  const js = () => undefined;
  const timer = vi.spyOn(globalThis, 'setTimeout');
  try {
    setImmediate(native);
    setImmediate(js);
    return timer.mock.calls.flatMap(([fn, ms]) => (fn === native && ms === 1 ? ['native'] : fn === js ? ['js'] : []));
  } finally {
    timer.mockRestore();
    await tick(5);
  }
};

describe('quietly', () => {
  it('defers native ticks to a timer only while a wait is past its spin window, and restores setImmediate', async () => {
    const original = globalThis.setImmediate;
    expect(await deferred()).toEqual([]);
    let inside: string[] = [];
    await quietly(async () => { await tick(10); inside = await deferred(); }, 2);
    expect(inside).toEqual(['native']);
    expect(globalThis.setImmediate).toBe(original);
    const early = await quietly(() => deferred(), 50); // still spinning: untouched
    expect(early).toEqual([]);
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
