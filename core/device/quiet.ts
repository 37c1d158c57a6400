// Waiting on Dawn without spinning a core. dawn.node resolves GPU promises from a tick it re-queues through the
// global `setImmediate` (looked up on every tick) for as long as any promise is pending: a busy loop that takes
// a whole core. On a CPU adapter that core is one the kernels themselves need. While a quiet wait is pending,
// native callbacks given to `setImmediate` (Dawn's tick; JavaScript callbacks pass through untouched) are run
// from `setTimeout(…, 1)` instead: Dawn then polls about once a millisecond. The first SPIN_MS of a wait still
// spin, so short work (a decode step of a few milliseconds) is not delayed by the poll's granularity.

/** How long a wait spins before it polls. */
export const SPIN_MS = 2;

const immediate = globalThis.setImmediate;
let waiting = 0;

const isNative = (fn: unknown): boolean =>
  typeof fn === 'function' && Function.prototype.toString.call(fn).endsWith('{ [native code] }');

const throttled = ((fn: (...args: unknown[]) => void, ...args: unknown[]) =>
  isNative(fn) ? setTimeout(fn, 1, ...args) : immediate(fn, ...args)) as unknown as typeof setImmediate;

const quiet = (): void => { if (waiting++ === 0) globalThis.setImmediate = throttled; };
const loud = (): void => { if (--waiting === 0) globalThis.setImmediate = immediate; };

/**
 * Await `start()` (a Dawn promise); past `spinMs`, with Dawn's ticks throttled to ~1 kHz. Concurrent waits
 * compose: the throttle is removed when the last of them ends.
 */
export const quietly = async <T>(start: () => Promise<T>, spinMs = SPIN_MS): Promise<T> => {
  let quieted = false;
  const timer = setTimeout(() => { quieted = true; quiet(); }, spinMs);
  try {
    return await start();
  } finally {
    clearTimeout(timer);
    if (quieted) loud();
  }
};
