// Pacing waits on a CPU adapter. dawn.node spins a core while any GPU promise is pending, and lavapipe needs that
// core for the kernels themselves. Work that repeats under a key (a compiled step) has its GPU time learned; the
// next wait for it first sleeps through most of that time, and the tail is polled (quiet.ts) unless the work is
// short. Pure bookkeeping: the caller supplies the clock and does the sleeping.

/** Work under this long is waited for at once: a timer's overshoot would cost more than the spin. */
export const PACE_MIN_MS = 15;
/** A wait ending this soon after waking means the work had already finished during the sleep. */
const INSTANT_MS = 2;
/** The estimate is the least of a key's last few learned times: one slow run (a GC pause, a busy host) is ignored. */
const WINDOW = 4;

/**
 * What a wait needs: how long to sleep first, whether the work is known to be short (under PACE_MIN_MS: waiting
 * for it may spin, where polling's granularity would cost more), and what to learn once the wait is over.
 */
export interface Wait { readonly sleepMs: number; readonly short: boolean; readonly done: (woke: number, end: number) => void }

export class Pacer {
  private pending: { key: string; at: number } | null = null;
  private readonly gpuMs = new Map<string, number[]>();
  private readonly seen = new Set<string>();

  /** A submit at `now`: paced under `key`, or (undefined) work that is not paced. */
  submitted(key: string | undefined, now: number): void {
    this.pending = key === undefined ? null : { key, at: now };
  }

  /** The learned GPU time of a key (undefined until its second run has been waited for). */
  estimate(key: string): number | undefined {
    const xs = this.gpuMs.get(key);
    return xs === undefined ? undefined : Math.min(...xs);
  }

  /**
   * A wait beginning at `now` (sleeping at least `atLeastMs`). Sleep `sleepMs`, wait, then call `done(woke, end)`
   * with the times the sleep ended and the wait ended. The first run of a key is not learned (it may include
   * Dawn's lazy pipeline compiles). A wait that ended at once after waking overslept, and shortens the estimate by
   * 15%; otherwise the work took the time from the submit to the end of the wait (a paced wait polls, so the
   * work's tail ran at full speed). One slow run (a GC pause, a busy host) once made a batch-1 decode (3–5 ms per
   * token) sleep 30–80 ms per token, 15% less each token; the estimate is the least of the last WINDOW learned
   * times, which one slow run does not move.
   */
  begin(now: number, atLeastMs = 0): Wait {
    const p = this.pending;
    this.pending = null;
    if (p === null) return { sleepMs: atLeastMs, short: false, done: () => {} };
    const est = this.estimate(p.key);
    const sleepMs = Math.max(atLeastMs, est === undefined || est < PACE_MIN_MS ? 0 : p.at + 0.95 * est - now);
    const slept = sleepMs > 1;
    return {
      sleepMs: slept ? sleepMs : 0,
      short: est !== undefined && est < PACE_MIN_MS,
      done: (woke, end) => {
        if (!this.seen.has(p.key)) { this.seen.add(p.key); return; }
        const overslept = est !== undefined && slept && end - woke < INSTANT_MS;
        const xs = this.gpuMs.get(p.key) ?? [];
        xs.push(overslept ? 0.85 * est : end - p.at);
        this.gpuMs.set(p.key, xs.slice(-WINDOW));
      },
    };
  }
}
