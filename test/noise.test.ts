// No noise a user cannot act on (issue 17): a tensor collected without dispose() is not reported unless
// CAMELID_TRACE_LEAKS asks, never for camelid's own tensors (§7); Dawn's limit notices stay out of stderr (§8).

import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as C from '../index.js';
import { generateIds } from '../models/generate.js';
import { initParams } from '../models/llama.js';
import { gpuDevice } from './gpu.js';
import { tinyLlama } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** Collect, then give FinalizationRegistry callbacks (which run between macrotasks) a few turns. */
const collect = async () => {
  for (let i = 0; i < 4; i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
};
const root = resolve(import.meta.dirname, '..');
const LEAK = /garbage-collected without dispose/;

describe.skipIf(!gpuDevice)('leak reports (§7, WebGPU)', () => {
  afterEach(() => { delete process.env.CAMELID_TRACE_LEAKS; vi.restoreAllMocks(); });

  const dropComputed = async () => { expect(await C.toArray(C.mul(C.tensor([1, 2, 3]), 2))).toEqual([2, 4, 6]); };

  it('by default a collected tensor is freed silently: its buffer goes back to the pool', async () => {
    C.setBackend('webgpu');
    const warn = vi.spyOn(console, 'warn');
    await collect();
    const before = (await C.deviceCounters())!.bytesInUse;
    await dropComputed();
    await collect();
    expect(warn.mock.calls.filter((c) => LEAK.test(String(c[0])))).toEqual([]);
    expect((await C.deviceCounters())!.bytesInUse).toBeLessThanOrEqual(before);
  });

  it('CAMELID_TRACE_LEAKS reports a computed tensor with its shape and where it was realised', async () => {
    C.setBackend('webgpu');
    process.env.CAMELID_TRACE_LEAKS = '1';
    const warn = vi.spyOn(console, 'warn');
    await dropComputed();
    await collect();
    const reports = warn.mock.calls.map((c) => String(c[0])).filter((m) => LEAK.test(m));
    expect(reports.some((m) => m.includes('f32 [3]') && m.includes('noise.test.ts'))).toBe(true);
  });

  it('CAMELID_TRACE_LEAKS does not report camelid\'s own tensors: uploads of host data, sampling in generate', async () => {
    C.setBackend('webgpu');
    const tiny = tinyLlama({ nLayers: 1, seqLen: 8, tieEmbeddings: true });
    const params = initParams(tiny, C.key(5), { std: 1 });
    await C.realize(...C.leaves(params));
    process.env.CAMELID_TRACE_LEAKS = '1';
    const warn = vi.spyOn(console, 'warn');
    // A host tensor used on the device: its upload is camelid's copy, not a computed value.
    const x = C.tensor([1, 2]);
    const y = C.add(x, 1);
    expect(await C.toArray(y)).toEqual([2, 3]);
    y.dispose();
    const [ids] = await generateIds(tiny, params, [[1, 3]], { maxTokens: 3, temperature: 1, stop: [] });
    expect(ids!.length).toBe(3);
    await collect();
    expect(warn.mock.calls.map((c) => String(c[0])).filter((m) => LEAK.test(m))).toEqual([]);
  });
});

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
