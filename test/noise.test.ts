// No noise a user cannot act on (issue 17): Dawn's limit notices stay out of stderr (§8).

import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { gpuDevice } from './gpu.js';

const root = resolve(import.meta.dirname, '..');

describe('Dawn notices (§8)', () => {
  // The child's stderr is a file, as with `2> log` (a terminal or a shell pipe behaves alike): Node's own 'pipe' stdio
  // is a socket, which cannot be reopened, and there camelid leaves stderr alone.
  const run = (code: string) => {
    const dir = mkdtempSync(join(tmpdir(), 'camelid-stderr-test-'));
    const fd = openSync(join(dir, 'stderr'), 'w');
    try {
      const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code],
        { cwd: root, encoding: 'utf8', env: { ...process.env, CAMELID_DAWN_LOG: '' }, timeout: 120_000, stdio: ['ignore', 'pipe', fd] });
      return { status: r.status, stdout: r.stdout, stderr: readFileSync(join(dir, 'stderr'), 'utf8') };
    } finally {
      closeSync(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('filterNativeStderr drops the limit notices written to fd 2 and passes every other line through', () => {
    const r = run(`import { writeSync } from 'node:fs';
import { filterNativeStderr, DAWN_LIMIT_NOTICE } from './core/device/stderr.ts';
process.stderr.write('before\\n');
const v = filterNativeStderr(() => { writeSync(2, 'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.\\nkeep me\\nWarning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.\\n'); return 42; }, DAWN_LIMIT_NOTICE);
process.stderr.write('after\\n');
console.log(v);`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe('42\n');
    expect(r.stderr).toBe('before\nkeep me\nafter\n');
  });

  it.skipIf(!gpuDevice)('opening the device prints nothing to stderr', () => {
    const r = run(`import { openDevice } from './core/device/open.ts';
const d = await openDevice()();
console.log(d._tag);
if (d._tag === 'Right') d.right.destroy();`);
    expect(r.stdout).toBe('Right\n');
    expect(r.stderr).not.toMatch(/artificially reduced/);
    expect(r.stderr).toBe('');
  });
});
