// Native stderr around one synchronous call into Dawn: Dawn prints notices with fprintf(stderr) (fd 2), out of
// JavaScript's reach. While the call runs, fd 2 points at a temporary file; afterwards every line except the
// notices a user cannot act on is written back to the real stderr. Node has no dup(), so the real stderr is
// reopened by path: this works for a terminal, a file and a shell pipe on Linux and macOS; elsewhere, or when fd 2
// cannot be reopened (a socket, as Node's child_process 'pipe' gives), the call simply runs as is.

import { closeSync, fstatSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Dawn's notices when it clamps an adapter's limits to its own maxima (every Vulkan adapter whose driver reports
 * more than 16 dynamic buffers, lavapipe included). camelid uses no dynamic offsets: nothing to act on.
 */
export const DAWN_LIMIT_NOTICE = /^Warning: maxDynamic(?:Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

/** How fd 2 can be reopened as itself (an equivalent description, appending). */
const selfPath = (fd: number): string | null =>
  process.platform === 'linux' ? `/proc/self/fd/${fd}` : process.platform === 'darwin' ? `/dev/fd/${fd}` : null;

/**
 * Run `f` (synchronous) with native writes to fd 2 captured; lines matching `drop` are discarded, the others are
 * written to stderr once `f` returns or throws. CAMELID_DAWN_LOG=1 keeps everything (nothing is captured).
 * @example const p = filterNativeStderr(() => gpu.requestAdapter(), DAWN_LIMIT_NOTICE);
 */
export const filterNativeStderr = <T>(f: () => T, drop: RegExp): T => {
  const self = selfPath(2);
  if (self === null || process.env.CAMELID_DAWN_LOG || !isOpen(0) || !isOpen(1)) return f();
  let saved = -1, capture = '', swapped = false;
  try {
    saved = openSync(self, 'a');
    capture = join(tmpdir(), `camelid-stderr-${process.pid}-${Date.now()}.log`);
    // fd 2 is the lowest free descriptor once closed (0 and 1 are open), so the file takes its place.
    closeSync(2);
    swapped = true;
    const fd = openSync(capture, 'w+');
    if (fd !== 2) { closeSync(fd); throw new Error('fd 2 was not reused'); }
  } catch {
    if (swapped) restore(saved);
    else if (saved >= 0) closeSync(saved);
    if (capture) rmSync(capture, { force: true });
    return f();
  }
  try {
    return f();
  } finally {
    restore(saved);
    let text = '';
    try { text = readFileSync(capture, 'utf8'); } catch { /* nothing was written */ }
    rmSync(capture, { force: true });
    const kept = text.split('\n').filter((l, i, all) => !(drop.test(l) || (l === '' && i === all.length - 1)));
    if (kept.length > 0) writeSync(2, `${kept.join('\n')}\n`);
  }
};

const isOpen = (fd: number): boolean => { try { fstatSync(fd); return true; } catch { return false; } };

/** Point fd 2 back at the description `saved` reopened, and close `saved`. */
const restore = (saved: number): void => {
  try { closeSync(2); } catch { /* already closed */ }
  const fd = openSync(selfPath(saved)!, 'a');
  if (fd !== 2) closeSync(fd);
  closeSync(saved);
};
