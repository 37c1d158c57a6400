// Hand-made mutants of the WebGPU compiler (scheduler and WGSL templates), which StrykerJS cannot drive cheaply:
// each is applied (one exact text replacement), the GPU differential tests that should notice it are run, and the
// file is restored; the script prints which mutants were killed. It works on a copy of the tree
// (.scratch-mutants/tree, git-ignored), so the checkout is never left mutated, even if the run is stopped.
//
//   node --import tsx test-tools/compiler-mutants.ts [--only id,id] [--list]
//
// A baseline run (no mutant) of the same test files must pass first. Each mutant's text must occur exactly once
// in its file: one that no longer matches (the code moved on) is reported as stale, not as killed.

import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

interface Mutant {
  readonly id: string;
  readonly file: string;
  readonly find: string;
  readonly replace: string;
  /** What goes wrong, and which tests should see it. */
  readonly why: string;
  readonly tests: readonly string[];
}

export const MUTANTS: readonly Mutant[] = [
  {
    id: 'slice-cover',
    file: 'core/schedule/slices.ts',
    find: ', 0) === numel(x.shape));',
    replace: ', 0) <= numel(x.shape));',
    why: 'a slice group that covers a stored value only in part is accepted: the rest of that value is never written',
    tests: ['schedule-shapes'],
  },
  {
    id: 'once-budget',
    file: 'core/schedule/materialise.ts',
    find: 'const once = uses <= 64 && uses > 1;',
    replace: 'const once = uses <= 128 && uses > 1;',
    why: 'operands wider than one tile get the one-tile least budget (values stay right: only the graph-shape tests see it)',
    tests: ['schedule-shapes'],
  },
  {
    id: 'row-fold-width',
    file: 'core/schedule/rows.ts',
    find: 'const ROW_EPILOGUE_MAX_N = 64;',
    replace: 'const ROW_EPILOGUE_MAX_N = 128;',
    why: 'row kernels fold into matmuls whose rows span more than one tile',
    tests: ['schedule-shapes', 'rows'],
  },
  {
    id: 'matmul-k-tail',
    file: 'core/wgsl/matmul.ts',
    find: "const cs = [needK ? `k < ${u(K)}` : '', ",
    replace: "const cs = ['', ",
    why: 'scalar operand loads past K are no longer zeroed: a K tail sums products of the next rows',
    tests: ['matmul-kernel'],
  },
  {
    id: 'mask-zero',
    file: 'core/wgsl/fused.ts',
    find: 'v = `select(${literal(0, x.dtype)}, ${this.render(s)}, ${cond})`',
    replace: 'v = `select(${literal(1, x.dtype)}, ${this.render(s)}, ${cond})`',
    why: 'a masked load (outside a pad) reads 1 instead of 0',
    tests: ['schedule-shapes'],
  },
  {
    id: 'merge-offset',
    file: 'core/wgsl/merge.ts',
    find: 'let r = q - ${first}u;',
    replace: 'let r = q;',
    // Equivalent for parts whose grid is (n, 1, 1): r % n wraps back onto the right workgroup. merge.test's merged
    // matmuls (2-D grids) see it; schedule-shapes' merged row and elementwise kernels do not.
    why: 'in a shared dispatch, every part after the first with a 2-D or 3-D grid runs the wrong workgroups',
    tests: ['merge'],
  },
  // The WGSL that op records hand the compiler (left out of StrykerJS's mutants: test-tools/stryker-wgsl-ignorer.mjs).
  {
    id: 'sigmoid-wgsl',
    file: 'ops/elementwise.ts',
    find: 'return select(e, 1.0, x >= 0.0) / (1.0 + e);',
    replace: 'return select(1.0, e, x >= 0.0) / (1.0 + e);',
    why: "the sigmoid prelude takes the other branch: σ(x) becomes σ(−x) on WebGPU",
    tests: ['edges'],
  },
  {
    id: 'pow-wgsl',
    file: 'ops/elementwise.ts',
    find: "out === 'f32' ? `cml_pow(${x}, ${p})`",
    replace: "out === 'f32' ? `cml_pow(${p}, ${x})`",
    why: 'pow with a tensor exponent swaps base and exponent on WebGPU',
    tests: ['edges'],
  },
];

const root = resolve(import.meta.dirname, '..');
const scratch = join(root, '.scratch-mutants');
const tree = join(scratch, 'tree');

/** A copy of the checkout's files (tracked and untracked, not ignored), node_modules and fixtures linked. */
const copyTree = (): void => {
  rmSync(tree, { recursive: true, force: true });
  const ls = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' });
  if (ls.status !== 0) throw new Error(`compiler-mutants: git ls-files failed: ${ls.stderr}`);
  for (const f of ls.stdout.split('\0').filter(Boolean)) {
    if (!existsSync(join(root, f))) continue; // deleted in the working tree
    mkdirSync(dirname(join(tree, f)), { recursive: true });
    cpSync(join(root, f), join(tree, f));
  }
  symlinkSync(join(root, 'node_modules'), join(tree, 'node_modules'));
  // Tests find fixtures at ../../shared from test/: here .scratch-mutants/shared.
  const shared = resolve(root, '../shared');
  if (existsSync(shared) && !existsSync(join(scratch, 'shared'))) symlinkSync(shared, join(scratch, 'shared'));
};

const runTests = (tests: readonly string[]): { ok: boolean; seconds: number; tail: string } => {
  const t0 = Date.now();
  const r = spawnSync(join(tree, 'node_modules', '.bin', 'vitest'), ['run', ...tests.map((t) => `test/${t}.test.ts`)], {
    cwd: tree, encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp' }, timeout: 30 * 60_000,
  });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const tail = out.split('\n').filter((l) => /FAIL|Tests |Error:/.test(l)).slice(0, 6).join('\n');
  return { ok: r.status === 0, seconds: (Date.now() - t0) / 1000, tail };
};

const main = (): void => {
  const args = process.argv.slice(2);
  if (args.includes('--list')) {
    for (const m of MUTANTS) console.log(`${m.id.padEnd(16)} ${m.file}: ${m.why} [${m.tests.join(', ')}]`);
    return;
  }
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1]!.split(',') : null;
  const unknown = only?.filter((id) => !MUTANTS.some((m) => m.id === id)) ?? [];
  if (unknown.length) throw new Error(`compiler-mutants: unknown mutant ${unknown.join(', ')}; --list shows them`);
  const chosen = MUTANTS.filter((m) => !only || only.includes(m.id));
  copyTree();
  const files = [...new Set(chosen.flatMap((m) => m.tests))];
  const base = runTests(files);
  console.log(`baseline (${files.join(', ')}): ${base.ok ? 'pass' : 'FAIL'} in ${base.seconds.toFixed(0)} s`);
  if (!base.ok) { console.log(base.tail); process.exit(2); }
  const results: string[] = [];
  for (const m of chosen) {
    const path = join(tree, m.file);
    const orig = readFileSync(path, 'utf8');
    const at = orig.split(m.find).length - 1;
    if (at !== 1) { results.push(`${m.id.padEnd(16)} STALE (its text occurs ${at} times in ${m.file})`); continue; }
    try {
      writeFileSync(path, orig.replace(m.find, m.replace));
      const r = runTests(m.tests);
      results.push(`${m.id.padEnd(16)} ${r.ok ? 'SURVIVED' : 'killed'} (${m.tests.join(', ')}, ${r.seconds.toFixed(0)} s): ${m.why}`);
      if (!r.ok && r.tail) results.push(`  ${r.tail.split('\n').join('\n  ')}`);
    } finally {
      writeFileSync(path, orig);
    }
  }
  console.log(`\n${results.join('\n')}`);
  const killed = chosen.filter((m) => results.some((l) => l.startsWith(m.id.padEnd(16)) && l.includes(' killed '))).length;
  console.log(`\n${killed} of ${chosen.length} compiler mutants killed`);
};

main();
