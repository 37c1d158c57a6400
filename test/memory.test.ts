// Bounded host memory on the CPU interpreter when the caller never yields to the event loop (issue 17 §5): a loop
// that only awaits camelid's promises used to keep every graph node it ever built (446 MB after 200k iterations).

import { describe, expect, it } from 'vitest';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setBackend, toArray } from '../core/backend.js';
import { internedCount } from '../core/node.js';
import { tensor } from '../ops/create.js';
import { add, mul } from '../ops/elementwise.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const used = (): number => { gc(); const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };

describe('memory without yielding', () => {
  it('20k toArray(mul(add(tensor, 1), 2)) awaited back to back grow the heap by a bounded amount', async () => {
    setBackend('cpu');
    const step = async (i: number) => toArray(mul(add(tensor([i, 2, 3, 4]), 1), 2));
    expect(await step(1)).toEqual([4, 6, 8, 10]);
    for (let i = 0; i < 2000; i++) await step(i);
    const before = used();
    const N = 20_000;
    for (let i = 0; i < N; i++) await step(i);
    const grown = used() - before;
    // Before the fix each iteration kept its three nodes (about 2.2 kB): some 44 MB here. Now the nodes of past
    // iterations are collectable after at most NODES_PER_TURN new ones; 12 MB is a generous allowance for GC noise.
    expect(grown, `heap grew by ${(grown / 1e6).toFixed(1)} MB over ${N} iterations (${internedCount()} interned nodes)`).toBeLessThan(12e6);
  });
});
