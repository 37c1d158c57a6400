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
    // Woke at 57, then a spun wait to 100: 0.6 of it counts, 82.8; the estimate is the least learned time.
    expect(p.estimate('step')).toBeCloseTo(60);
    run(p, 'step', 3000, 3000, 3050); // sleeps 57, overslept: 0.85 · 60
    expect(p.estimate('step')).toBeCloseTo(51);
  });

  it('one slow run does not raise the sleeps that follow; a slowdown lasting the window of 4 does', () => {
    const p = new Pacer();
    run(p, 'tok', 0, 0, 40);
    run(p, 'tok', 100, 100, 150); // learned 30
    expect(run(p, 'tok', 200, 200, 500)).toBeCloseTo(28.5); // a 300 ms stall: learned 28.5 + 0.6 · 271.5
    expect(p.estimate('tok')).toBeCloseTo(30);
    expect(run(p, 'tok', 600, 600, 650)).toBeCloseTo(28.5); // not 95% of the stall
    const q = new Pacer();
    run(q, 'k', 0, 0, 100);
    for (let i = 1; i <= 5; i++) run(q, 'k', 1000 * i, 1000 * i, 1000 * i + (i === 1 ? 50 : 200)); // 30, then slower
    expect(q.estimate('k')!).toBeGreaterThan(100);
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
    expect(p.estimate('k')).toBeCloseTo(120); // learned 114 + 0.6 · 86 (the 50 ms before the wait ran unspun, counted whole)
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
