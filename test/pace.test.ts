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
  it('does not sleep or learn on a key\'s first run; learns the second (submit to end); then sleeps 95% of it', () => {
    const p = new Pacer();
    expect(run(p, 'step', 0, 0, 100)).toBe(0);
    expect(p.estimate('step')).toBeUndefined();
    expect(run(p, 'step', 1000, 1000, 1100)).toBe(0);
    expect(p.estimate('step')).toBeCloseTo(100);
    expect(run(p, 'step', 2000, 2000, 2120)).toBeCloseTo(95); // 0.95 · 100
    // Woke at 95, the work ended at 120: learned 120; the estimate is the least learned time.
    expect(p.estimate('step')).toBeCloseTo(100);
    run(p, 'step', 3000, 3000, 3050); // sleeps 95, overslept: 0.85 · 100
    expect(p.estimate('step')).toBeCloseTo(85);
  });

  it('one slow run does not raise the sleeps that follow; a slowdown lasting the window of 4 does', () => {
    const p = new Pacer();
    run(p, 'tok', 0, 0, 40);
    run(p, 'tok', 100, 100, 130); // learned 30
    expect(run(p, 'tok', 200, 200, 500)).toBeCloseTo(28.5); // a 300 ms stall, learned whole
    expect(p.estimate('tok')).toBeCloseTo(30);
    expect(run(p, 'tok', 600, 600, 630)).toBeCloseTo(28.5); // not 95% of the stall
    const q = new Pacer();
    run(q, 'k', 0, 0, 100);
    for (let i = 1; i <= 5; i++) run(q, 'k', 1000 * i, 1000 * i, 1000 * i + (i === 1 ? 30 : 200)); // 30, then slower
    expect(q.estimate('k')!).toBeGreaterThan(100);
  });

  it('an oversleep (the wait ends at once after waking) shortens the estimate by 15%', () => {
    const p = new Pacer();
    run(p, 'k', 0, 0, 200);
    run(p, 'k', 1000, 1000, 1120); // estimate 120
    run(p, 'k', 2000, 2000, 2100); // sleeps 114, the work ended at 100: overslept
    expect(p.estimate('k')).toBeCloseTo(0.85 * 120);
  });

  it('the sleep counts from the submit, and short work is never slept through', () => {
    const p = new Pacer();
    run(p, 'k', 0, 0, 100);
    run(p, 'k', 1000, 1000, 1120);
    expect(run(p, 'k', 2000, 2050, 2200)).toBeCloseTo(0.95 * 120 - 50); // 50 ms already passed since the submit
    expect(p.estimate('k')).toBeCloseTo(120); // learned 200 this time; the estimate is the least
    const q = new Pacer();
    run(q, 's', 0, 0, 10);
    q.submitted('s', 100);
    const unknown = q.begin(100); // nothing learned yet: not known to be short
    unknown.done(100, 100 + PACE_MIN_MS - 5);
    expect(unknown.short).toBe(false);
    expect(q.estimate('s')!).toBeLessThan(PACE_MIN_MS);
    q.submitted('s', 200);
    const w = q.begin(200); // known short: not slept through, and waited for by spinning
    expect([w.sleepMs, w.short]).toEqual([0, true]);
  });

  it('unpaced work is not slept through, but a caller\'s minimum sleep is kept; keys are learned separately', () => {
    const p = new Pacer();
    p.submitted(undefined, 0);
    expect(p.begin(0).sleepMs).toBe(0);
    expect(p.begin(0, 30).sleepMs).toBe(30);
    run(p, 'a', 0, 0, 100); run(p, 'a', 1000, 1000, 1100);
    expect(p.estimate('b')).toBeUndefined();
    expect(p.estimate('a')).toBeCloseTo(100);
  });
});
