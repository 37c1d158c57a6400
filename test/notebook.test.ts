// examples/llama.ipynb runs headless (jupyter nbconvert, tslab kernel) against the built package and the real
// stories260K checkpoint: no cell fails, the greedy text is llama2.c's, the loss matches the reference logits.
// Without jupyter or the tslab kernel the run is skipped with a warning, except in CI (CI=true), where it fails.

import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { loadTokenizer } from '../models/tokenizer/index.js';

const root = resolve(import.meta.dirname, '..');
const notebook = join(root, 'examples/llama.ipynb');
const fixtures = resolve(root, '../shared/fixtures/stories260K');
const RUN_TIMEOUT_MS = 300_000;
const GREEDY_TOKENS = 32; // what the notebook's greedy cell generates

const env = { ...process.env, CAMELID_BACKEND: 'cpu' };

/** Why the notebook cannot run here (jupyter, nbconvert or the tslab kernel missing), or null when it can. */
const missingToolchain = (): string | null => {
  const jupyter = (...args: string[]): string => execFileSync('jupyter', args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    jupyter('nbconvert', '--version');
  } catch (e) {
    return `\`jupyter nbconvert\` does not run (${(e as Error).message.split('\n')[0]})`;
  }
  try {
    const specs = (JSON.parse(jupyter('kernelspec', 'list', '--json')) as { kernelspecs: Record<string, unknown> }).kernelspecs;
    if (!('tslab' in specs)) return `no tslab kernel (kernels: ${Object.keys(specs).join(', ')})`;
  } catch (e) {
    return `\`jupyter kernelspec list\` failed (${(e as Error).message.split('\n')[0]})`;
  }
  try {
    execFileSync('tslab', ['--version'], { env, stdio: 'ignore' }); // the kernelspec starts `tslab` by name
  } catch (e) {
    return `the tslab kernel is registered but \`tslab\` does not run (${(e as Error).message.split('\n')[0]})`;
  }
  return null;
};

const HOW = 'apt-get install jupyter-nbconvert jupyter-client python3-notebook python3-ipykernel; npm install -g tslab@1.0.22; tslab install --python=/usr/bin/python3 (see .ci/run)';
const haveFixtures = existsSync(fixtures);
const missing = haveFixtures ? missingToolchain() : null;
const inCI = process.env.CI === 'true';
if (!haveFixtures) console.warn(`[notebook.test] SKIPPED: fixtures not found at ${fixtures}`);
else if (missing && !inCI) console.warn(`[notebook.test] SKIPPED: ${missing}. To run it: ${HOW}`);

interface Output { output_type: string; name?: string; text?: string | string[]; ename?: string; evalue?: string; traceback?: string[] }
interface Cell { id?: string; cell_type: string; source: string | string[]; execution_count?: number | null; outputs?: Output[] }
const joined = (s: string | string[] | undefined): string => (Array.isArray(s) ? s.join('') : s ?? '');
const stdout = (c: Cell): string => (c.outputs ?? []).filter((o) => o.output_type === 'stream' && o.name === 'stdout').map((o) => joined(o.text)).join('');
/** tslab reports compile and runtime errors as stderr text; other kernels as `error` outputs. */
const failures = (c: Cell): string[] => (c.outputs ?? []).flatMap((o) =>
  o.output_type === 'error' ? [`${o.ename}: ${o.evalue}\n${(o.traceback ?? []).join('\n')}`]
    : o.output_type === 'stream' && o.name === 'stderr' ? [joined(o.text)] : []);

const readCells = (text: string): Cell[] => (JSON.parse(text) as { cells: Cell[] }).cells;

describe('examples/llama.ipynb', () => {
  it('is committed with its outputs cleared', () => {
    for (const c of readCells(readFileSync(notebook, 'utf8')).filter((c) => c.cell_type === 'code')) {
      expect(c.outputs, `cell ${c.id}`).toEqual([]);
      expect(c.execution_count, `cell ${c.id}`).toBeNull();
    }
  });

  it.runIf(haveFixtures && missing !== null && inCI)('has its notebook toolchain in CI', () => {
    throw new Error(`CI=true but the notebook cannot run: ${missing}. Install it: ${HOW}`);
  });

  it.runIf(haveFixtures && missing === null)('runs headless under the tslab kernel: greedy text and loss match the references', async () => {
    if (!existsSync(join(root, 'dist/index.js'))) throw new Error('dist/index.js is missing: the notebook imports the built package, run `npm run build` first');
    const dir = await mkdtemp(join(tmpdir(), 'camelid-notebook-'));
    try {
      const out = join(dir, 'llama.out.ipynb');
      const t0 = performance.now();
      // --allow-errors: the executed notebook is always written, so a failure names its cell and message below.
      await promisify(execFile)('jupyter', [
        'nbconvert', '--to', 'notebook', '--execute', '--allow-errors',
        `--ExecutePreprocessor.timeout=${RUN_TIMEOUT_MS / 1000}`, notebook, '--output', out,
      ], { env, cwd: root, timeout: RUN_TIMEOUT_MS, maxBuffer: 16 << 20 }).catch((e: Error & { stderr?: string }) => {
        throw new Error(`jupyter nbconvert failed: ${e.message}\n${(e.stderr ?? '').slice(-4000)}`);
      });
      console.log(`[notebook.test] examples/llama.ipynb executed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      const cells = readCells(await readFile(out, 'utf8'));
      const code = cells.filter((c) => c.cell_type === 'code');
      const failed = code.flatMap((c) => failures(c).map((f) => `cell ${c.id}:\n${joined(c.source)}\n--- output ---\n${f}`));
      if (failed.length > 0) throw new Error(`examples/llama.ipynb: ${failed.length} cell(s) failed\n\n${failed.join('\n\n')}`);
      // tslab leaves execution_count null; every code cell of this notebook prints, so output means it ran.
      for (const c of code) expect(stdout(c), `cell ${c.id} printed nothing`).not.toBe('');
      const byId = (id: string): Cell => {
        const c = cells.find((c) => c.id === id);
        if (!c) throw new Error(`examples/llama.ipynb has no cell with id '${id}'`);
        return c;
      };

      interface Case { prompt_ids: number[]; generated_ids: number[]; logits_file: string; logits_shape: [number, number] }
      const ref = (JSON.parse(await readFile(join(fixtures, 'expected.json'), 'utf8')) as { cases: Case[] }).cases[0]!;
      const tok = await loadTokenizer(join(fixtures, 'tok512.model'))();
      if (E.isLeft(tok)) throw new Error(tok.left.message);
      const greedyText = tok.right.decode([...ref.prompt_ids, ...ref.generated_ids.slice(0, GREEDY_TOKENS)]);
      expect(stdout(byId('greedy'))).toContain(greedyText);

      // The prompt's cross-entropy from llama2.c's logits: row t predicts token t + 1.
      const [, V] = ref.logits_shape;
      const buf = await readFile(join(fixtures, ref.logits_file));
      const logits = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
      let nll = 0;
      for (let t = 0; t < ref.prompt_ids.length - 1; t++) {
        const row = logits.subarray(t * V, (t + 1) * V);
        const m = Math.max(...row);
        const lse = m + Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0));
        nll += lse - row[ref.prompt_ids[t + 1]!]!;
      }
      const printed = /loss (\S+) nats\/token, global gradient norm (\S+)/.exec(stdout(byId('gradient')));
      expect(printed, stdout(byId('gradient'))).not.toBeNull();
      expect(Number(printed![1])).toBeCloseTo(nll / (ref.prompt_ids.length - 1), 3);
      expect(Number(printed![2])).toBeGreaterThan(0);
      expect(Number.isFinite(Number(printed![2]))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, RUN_TIMEOUT_MS + 60_000);
});
