// The pacing rule (core/device/pace.ts) on a fake clock: what a wait sleeps, and what it learns.

import { describe, expect, it } from 'vitest';
import { PACE_MIN_MS, Pacer } from '../core/device/pace.js';

/** One paced run: submit at `at`, wait from `waitAt`; the sleep ends when it should, the work at `end` or later. */
const run = (p: Pacer, key: string, at: number, waitAt: number, workEnds: number): number => {
  p.submitted(key, at);
  const w = p.begin(waitAt);
  const woke = waitAt + w.sleepMs;
  w.done(woke, Math.max(woke + 0.1, workEnds));
  return w.sleepMs;
};

describe('Pacer', () => {
  it('does not sleep or learn on a key\'s first run; learns 0.6 of the second (a spun wait); then sleeps 95% of it', () => {
    const p = new Pacer();
    expect(run(p, 'step', 0, 0, 100)).toBe(0);
    expect(p.estimate('step')).toBeUndefined();
    expect(run(p, 'step', 1000, 1000, 1100)).toBe(0);
    expect(p.estimate('step')).toBeCloseTo(60);
    expect(run(p, 'step', 2000, 2000, 2100)).toBeCloseTo(57); // 0.95 · 60
    expect(p.estimate('step')).toBeCloseTo(57 + 0.6 * 43); // woke at 57, then a spun wait to 100: 0.6 of it counts
  });

  it('an oversleep (the wait ends at once after waking) shortens the estimate by 15%', () => {
    const p = new Pacer();
    run(p, 'k', 0, 0, 200);
    run(p, 'k', 1000, 1000, 1200); // estimate 120
    run(p, 'k', 2000, 2000, 2100); // sleeps 114, the work ended at 100: overslept
    expect(p.estimate('k')).toBeCloseTo(0.85 * 120);
  });

  it('the sleep counts from the submit, and short work is never slept through', () => {
    const p = new Pacer();
    run(p, 'k', 0, 0, 100);
    run(p, 'k', 1000, 1000, 1200);
    expect(run(p, 'k', 2000, 2050, 2200)).toBeCloseTo(0.95 * 120 - 50); // 50 ms already passed since the submit
    expect(p.estimate('k')).toBeCloseTo(114 + 0.6 * 86); // the 50 ms before the wait ran unspun: counted whole
    const q = new Pacer();
    run(q, 's', 0, 0, 10);
    run(q, 's', 100, 100, 100 + PACE_MIN_MS); // estimate 0.6 · 15, under the minimum
    expect(q.estimate('s')!).toBeLessThan(PACE_MIN_MS);
    expect(run(q, 's', 200, 200, 210)).toBe(0);
  });

  it('unpaced work is not slept through, but a caller\'s minimum sleep is kept; keys are learned separately', () => {
    const p = new Pacer();
    p.submitted(undefined, 0);
    expect(p.begin(0).sleepMs).toBe(0);
    expect(p.begin(0, 30).sleepMs).toBe(30);
    run(p, 'a', 0, 0, 100); run(p, 'a', 1000, 1000, 1100);
    expect(p.estimate('b')).toBeUndefined();
    expect(p.estimate('a')).toBeCloseTo(60);
  });
});
