// Pacing waits on a CPU adapter. dawn.node spins a core while any GPU promise is pending, and lavapipe needs that
// core for the kernels themselves. Work that repeats under a key (a compiled step) has its GPU time learned; the
// next wait for it first sleeps through most of that time, so the spin covers only the tail. Pure bookkeeping:
// the caller supplies the clock and does the sleeping.

/** Work under this long is waited for at once: a timer's overshoot would cost more than the spin. */
export const PACE_MIN_MS = 15;
/** A wait ending this soon after waking means the work had already finished during the sleep. */
const INSTANT_MS = 2;

/** What a wait needs: how long to sleep first, and what to learn once the wait is over. */
export interface Wait { readonly sleepMs: number; readonly done: (woke: number, end: number) => void }

export class Pacer {
  private pending: { key: string; at: number } | null = null;
  private readonly gpuMs = new Map<string, number>();
  private readonly seen = new Set<string>();

  /** A submit at `now`: paced under `key`, or (undefined) work that is not paced. */
  submitted(key: string | undefined, now: number): void {
    this.pending = key === undefined ? null : { key, at: now };
  }

  /** The learned GPU time of a key (undefined until its second run has been waited for). */
  estimate(key: string): number | undefined {
    return this.gpuMs.get(key);
  }

  /**
   * A wait beginning at `now` (sleeping at least `atLeastMs`). Sleep `sleepMs`, wait, then call `done(woke, end)`
   * with the times the sleep ended and the wait ended. The first run of a key is not learned (it may include
   * Dawn's lazy pipeline compiles); a first estimate is 0.6 of a wait that spun from the submit (spinning ran the
   * work ~1.6× slower); a wait that ended at once after waking overslept, and shortens the estimate by 15%;
   * otherwise the wait's end is the work's end.
   */
  begin(now: number, atLeastMs = 0): Wait {
    const p = this.pending;
    this.pending = null;
    if (p === null) return { sleepMs: atLeastMs, done: () => {} };
    const est = this.gpuMs.get(p.key);
    const sleepMs = Math.max(atLeastMs, est === undefined || est < PACE_MIN_MS ? 0 : p.at + 0.95 * est - now);
    const slept = sleepMs > 1;
    return {
      sleepMs: slept ? sleepMs : 0,
      done: (woke, end) => {
        if (!this.seen.has(p.key)) { this.seen.add(p.key); return; }
        const took = end - p.at;
        this.gpuMs.set(p.key, est === undefined ? 0.6 * took : slept && end - woke < INSTANT_MS ? 0.85 * est : took);
      },
    };
  }
}
