// The notebooks in examples/ run headless (jupyter nbconvert, tslab kernel) against the built package and the real
// stories260K checkpoint, on the CPU interpreter: no cell fails, and each one's printed figures are checked.
// llama.ipynb: the greedy text is llama2.c's, the loss matches the reference logits. sft.ipynb: the label mask
// trains exactly the reply, the loss falls, the chart is an SVG. lora-qlora.ipynb: merged = adapted, NF4 error within
// its bound, bytes per parameter. dpo.ipynb: ln 2 at the start, held-out reward accuracy and margin rise.
// Without jupyter or the tslab kernel the runs are skipped with a warning, except in CI (CI=true), where they fail.

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
const fixtures = resolve(root, '../shared/fixtures/stories260K');
const RUN_TIMEOUT_MS = 420_000; // per notebook; each takes well under a minute of CPU on an idle machine
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

interface Output {
  output_type: string; name?: string; text?: string | string[]; ename?: string; evalue?: string; traceback?: string[];
  data?: Record<string, string | string[]>;
}
interface Cell { id?: string; cell_type: string; source: string | string[]; execution_count?: number | null; outputs?: Output[] }
const joined = (s: string | string[] | undefined): string => (Array.isArray(s) ? s.join('') : s ?? '');
const stdout = (c: Cell): string => (c.outputs ?? []).filter((o) => o.output_type === 'stream' && o.name === 'stdout').map((o) => joined(o.text)).join('');
/** tslab reports compile and runtime errors as stderr text; other kernels as `error` outputs. */
const failures = (c: Cell): string[] => (c.outputs ?? []).flatMap((o) =>
  o.output_type === 'error' ? [`${o.ename}: ${o.evalue}\n${(o.traceback ?? []).join('\n')}`]
    : o.output_type === 'stream' && o.name === 'stderr' ? [joined(o.text)] : []);

const readCells = (text: string): Cell[] => (JSON.parse(text) as { cells: Cell[] }).cells;
/** The SVG documents a cell displayed (tslab's display.svg: display_data with image/svg+xml). */
const svgs = (c: Cell): string[] => (c.outputs ?? []).flatMap((o) =>
  o.output_type === 'display_data' && o.data?.['image/svg+xml'] !== undefined ? [joined(o.data['image/svg+xml'])] : []);

/** The numbers a pattern captures in a cell's stdout; fails naming the cell when it does not match. */
const numbers = (c: Cell, re: RegExp): number[] => {
  const m = re.exec(stdout(c));
  if (!m) throw new Error(`cell ${c.id}: no match for ${re} in its output:\n${stdout(c)}`);
  return m.slice(1).map(Number);
};

/**
 * Executes examples/<name> headless into a temporary folder and returns its cells, after checking that no cell
 * failed and every code cell printed or displayed something (tslab leaves execution_count null, so output is how
 * a cell shows it ran).
 */
const execute = async (name: string): Promise<{ cells: Cell[]; byId: (id: string) => Cell }> => {
  if (!existsSync(join(root, 'dist/index.js'))) throw new Error('dist/index.js is missing: the notebooks import the built package, run `npm run build` first');
  const dir = await mkdtemp(join(tmpdir(), 'camelid-notebook-'));
  try {
    const out = join(dir, name.replace(/\.ipynb$/, '.out.ipynb'));
    const t0 = performance.now();
    // --allow-errors: the executed notebook is always written, so a failure names its cell and message below.
    await promisify(execFile)('jupyter', [
      'nbconvert', '--to', 'notebook', '--execute', '--allow-errors',
      `--ExecutePreprocessor.timeout=${RUN_TIMEOUT_MS / 1000}`, join(root, 'examples', name), '--output', out,
    ], { env, cwd: root, timeout: RUN_TIMEOUT_MS, maxBuffer: 16 << 20 }).catch((e: Error & { stderr?: string }) => {
      throw new Error(`jupyter nbconvert failed: ${e.message}\n${(e.stderr ?? '').slice(-4000)}`);
    });
    console.log(`[notebook.test] examples/${name} executed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const cells = readCells(await readFile(out, 'utf8'));
    const code = cells.filter((c) => c.cell_type === 'code');
    const failed = code.flatMap((c) => failures(c).map((f) => `cell ${c.id}:\n${joined(c.source)}\n--- output ---\n${f}`));
    if (failed.length > 0) throw new Error(`examples/${name}: ${failed.length} cell(s) failed\n\n${failed.join('\n\n')}`);
    for (const c of code) expect(stdout(c) !== '' || svgs(c).length > 0, `cell ${c.id} printed and displayed nothing`).toBe(true);
    const byId = (id: string): Cell => {
      const c = cells.find((c) => c.id === id);
      if (!c) throw new Error(`examples/${name} has no cell with id '${id}'`);
      return c;
    };
    return { cells, byId };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
};

/** An SVG document as Vega renders it: an <svg> root with marks inside. */
const expectChart = (svg: string | undefined): void => {
  expect(svg, 'no SVG displayed').toBeDefined();
  expect(svg!.trimStart().startsWith('<svg')).toBe(true);
  expect(svg!.trimEnd().endsWith('</svg>')).toBe(true);
  expect(svg).toContain('<path'); // lines and bars are paths
};

const NOTEBOOKS = ['llama.ipynb', 'sft.ipynb', 'lora-qlora.ipynb', 'dpo.ipynb'];
const canRun = haveFixtures && missing === null;

describe('examples/*.ipynb', () => {
  it.each(NOTEBOOKS)('%s is committed with its outputs cleared', (name) => {
    for (const c of readCells(readFileSync(join(root, 'examples', name), 'utf8')).filter((c) => c.cell_type === 'code')) {
      expect(c.outputs, `${name} cell ${c.id}`).toEqual([]);
      expect(c.execution_count, `${name} cell ${c.id}`).toBeNull();
    }
  });

  it.runIf(haveFixtures && missing !== null && inCI)('has its notebook toolchain in CI', () => {
    throw new Error(`CI=true but the notebooks cannot run: ${missing}. Install it: ${HOW}`);
  });

  it.runIf(canRun)('llama.ipynb runs headless under the tslab kernel: greedy text and loss match the references', async () => {
    const { cells, byId } = await execute('llama.ipynb');
    // every code cell of this notebook prints
    for (const c of cells.filter((c) => c.cell_type === 'code')) expect(stdout(c), `cell ${c.id} printed nothing`).not.toBe('');

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
  }, RUN_TIMEOUT_MS + 60_000);

  it.runIf(canRun)('sft.ipynb: the mask trains exactly the reply, the SFT loss falls, the loss chart is an SVG', async () => {
    const { byId } = await execute('sft.ipynb');
    // The token table: the reply's tokens (and </s>) carry their ids as labels, everything before is -100.
    const rows = stdout(byId('encode')).split('\n').map((l) => /^\s*(\d+)\s+(".*")\s+(\d+)\s+(-100|\d+)/.exec(l)).filter((m) => m !== null);
    expect(rows.length).toBeGreaterThan(20);
    const firstTrained = rows.findIndex((m) => m[4] !== '-100');
    expect(firstTrained).toBeGreaterThan(0);
    for (const [i, m] of rows.entries()) expect(m[4], `row ${i}`).toBe(i < firstTrained ? '-100' : m[3]);
    expect(JSON.parse(rows[firstTrained - 1]![2]!)).toBe('<0x0A>'); // the header's newline is the last masked token
    expect(JSON.parse(rows[rows.length - 1]![2]!)).toBe('</s>');
    expect(stdout(byId('encode'))).toContain('trained: "Lily met a big dog in the park."');

    const [first, last, evalFirst, evalLast] = numbers(byId('train'), /train loss first (\S+) last (\S+); eval loss (\S+) → (\S+);/);
    expect(last).toBeLessThan(first! / 4); // measured 3.50 → 0.19
    expect(evalLast).toBeLessThan(evalFirst!); // measured 3.87 → 1.65
    expect(svgs(byId('chart'))).toHaveLength(1);
    expectChart(svgs(byId('chart'))[0]);
    expect(stdout(byId('chart'))).toMatch(/chart: 25 points/); // 20 train steps + 5 evals
    expect(stdout(byId('generate'))).toMatch(/fine-tuned\s+"[^"]+"/);
  }, RUN_TIMEOUT_MS + 60_000);

  it.runIf(canRun)('lora-qlora.ipynb: adapters start at the base, merged = adapted, NF4 error within its bound, bytes per parameter', async () => {
    const { byId } = await execute('lora-qlora.ipynb');
    expect(numbers(byId('adapters'), /at initialisation \(B = 0\): max \|adapted − base\| logit = (\S+)/)[0]).toBe(0);
    // stories260K: per layer r·(in + out) over q k v o (64+64, 64+32, 64+32, 64+64), gate, down, up (64+172 each), r = 4
    expect(numbers(byId('adapters'), /trainable (\d+) of (\d+)/)).toEqual([5 * 4 * (128 + 96 + 96 + 128 + 3 * 236), 260032]);
    const losses = numbers(byId('data'), /LoRA: loss (\S+)(?: \S+)* (\S+) \(/);
    expect(losses[1]).toBeLessThan(losses[0]! / 2);
    expect(numbers(byId('merge'), /merged vs adapted: max \|Δ logit\| = (\S+)/)[0]).toBeLessThan(1e-4);
    expect(numbers(byId('merge'), /disabled vs base: +max \|Δ logit\| = (\S+)/)[0]).toBe(0);
    expect(numbers(byId('merge'), /move the logits by max (\S+)/)[0]).toBeGreaterThan(0.1);
    // NF4: |error| ≤ half the widest gap of bitsandbytes' code book, (1 − 0.6961928)/2 = 0.1519036 (RECIPES-FACTS §6.2)
    const [worst, bound] = numbers(byId('nf4'), /max \|error\|\/absmax (\S+) \(half the widest NF4 gap: (\S+)\)/);
    expect(bound).toBeCloseTo((1 - 0.6961928009986877) / 2, 4);
    expect(worst).toBeLessThanOrEqual(bound! + 1e-4);
    expectChart(svgs(byId('nf4'))[0]);
    // bytes per parameter: 4 bits + one f32 absmax per 64 = 0.5625; double quantisation 0.5 + 1/64 + small = ~0.516
    const [plain, dq] = numbers(byId('memory'), /NF4 \+ f32 absmax (\S+)\s+NF4 \+ double quantisation (\S+)/);
    expect(plain).toBe(0.5625);
    expect(dq).toBeGreaterThan(0.5 + 1 / 64);
    expect(dq).toBeLessThan(0.52);
    // Llama-2-7B, r = 64 on all seven projections: 32 · 64 · (4·(4096+4096) + 3·(4096+11008)) = 159,907,840
    expect(stdout(byId('memory'))).toContain('159.9M adapter parameters');
    expect(svgs(byId('qlora'))).toHaveLength(1);
    expectChart(svgs(byId('qlora'))[0]);
    expect(numbers(byId('qmerge'), /QLoRA merged vs adapted: max \|Δ logit\| = (\S+)/)[0]).toBeLessThan(1e-4);
  }, RUN_TIMEOUT_MS + 60_000);

  it.runIf(canRun)('dpo.ipynb: ln 2 before training, held-out reward accuracy and margin rise, curves as SVG', async () => {
    const { byId } = await execute('dpo.ipynb');
    const [loss0, acc0, margin0] = numbers(byId('batch'), /held-out: loss (\S+) \(ln 2 = \S+\), reward accuracy (\S+), margin (\S+)/);
    expect(loss0).toBeCloseTo(Math.LN2, 4); // policy = reference: every reward 0
    expect(acc0).toBe(0); // ties count as wrong
    expect(margin0).toBe(0);
    const [accBefore, accAfter, marginBefore, marginAfter] = numbers(byId('train'), /held-out reward accuracy (\S+) -> (\S+), margin (\S+) -> (\S+)/);
    expect(accBefore).toBe(0);
    expect(accAfter).toBeGreaterThanOrEqual(0.75); // measured 1.00 on the 4 held-out pairs
    expect(marginAfter).toBeGreaterThan(marginBefore! + 0.5); // measured 0 → 1.99
    expect(svgs(byId('chart'))).toHaveLength(1);
    expectChart(svgs(byId('chart'))[0]);
  }, RUN_TIMEOUT_MS + 60_000);
});
