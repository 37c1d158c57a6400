// CAMELID_TRACE_COMPILES's first-dispatch timing (core/device/trace.ts) with a scripted queue: a pipeline's first
// dispatch is charged from the end of the work submitted before it to its own end, once per pipeline.

import { describe, expect, it } from 'vitest';
import { FirstDispatchTracer } from '../core/device/trace.js';

/** A queue whose submitted work finishes when the test says, at a time the test sets. */
const scriptedQueue = () => {
  const pending: (() => void)[] = [];
  const queue = { onSubmittedWorkDone: () => new Promise<undefined>((r) => pending.push(() => r(undefined))) } as unknown as GPUQueue;
  return { queue, finishNext: () => pending.shift()!() };
};

describe('first-dispatch tracing', () => {
  it('times each pipeline once, from the previous work\'s end to its own, and sums them', async () => {
    const { queue, finishNext } = scriptedQueue();
    const lines: string[] = [];
    const tr = new FirstDispatchTracer(() => queue, (l) => lines.push(l));
    const a = { label: 'k0:matmul' } as GPUComputePipeline, b = { label: 'k1:row' } as GPUComputePipeline;
    let now = 1000;
    const realNow = performance.now.bind(performance);
    performance.now = () => now;
    try {
      expect(tr.isFirst(a)).toBe(true);
      tr.submitted(); // earlier work
      tr.submitted(a); // a's first dispatch
      expect(tr.isFirst(a)).toBe(false);
      tr.submitted(); // a again, later: not timed
      const finish = async (at: number) => { now = at; finishNext(); await new Promise((r) => setTimeout(r, 0)); };
      await finish(3000); // the earlier work ends at 3 s
      await finish(8500); // a's first dispatch ends 5.5 s later: its compile
      await finish(9000);
      tr.submitted(b);
      await finish(9250);
    } finally {
      performance.now = realNow;
    }
    expect(lines).toEqual([
      "camelid: first dispatch of 'k0:matmul' took 5.5 s (1 pipelines, 5.5 s in first dispatches so far)\n",
      "camelid: first dispatch of 'k1:row' took 0.3 s (2 pipelines, 5.8 s in first dispatches so far)\n",
    ]);
    expect(tr.count).toBe(2);
    expect(tr.total).toBeCloseTo(5.75, 12);
  });
});
