// `npm run mutate`'s folder table (test-tools/mutation-folders.mjs): every test file and mutated path it names
// exists, and every slow-test pattern still names a test (a renamed test would otherwise run again for each mutant
// it covers, unnoticed).
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FOLDERS, SLOW_TESTS, selected, testFiles } from '../test-tools/mutation-folders.mjs';
import { summarise } from '../test-tools/mutation-summary.js';

const root = resolve(import.meta.dirname, '..');

describe('mutation folders', () => {
  it('name test files and mutated paths that exist', () => {
    for (const f of testFiles(Object.keys(FOLDERS))) expect(existsSync(resolve(root, f)), f).toBe(true);
    for (const [name, { mutate }] of Object.entries(FOLDERS)) {
      for (const g of mutate.filter((x) => !x.startsWith('!'))) expect(existsSync(resolve(root, g.split('*')[0]!)), `${name}: ${g}`).toBe(true);
    }
  });

  it('skip only tests that exist: each slow pattern is in one of the test files', () => {
    const text = testFiles(Object.keys(FOLDERS)).map((f) => readFileSync(resolve(root, f), 'utf8')).join('\n');
    for (const s of SLOW_TESTS) expect(text.includes(s.pattern), s.pattern).toBe(true);
  });

  it('the recipe runs are mutated by their own run only, and scored under recipes', () => {
    for (const f of FOLDERS['recipes-runs']!.mutate) expect(FOLDERS.recipes!.mutate, f).toContain(`!${f}`);
    const one = { files: { 'recipes/sft.ts': { mutants: [{ mutatorName: 'x', status: 'Killed', location: { start: { line: 1, column: 1 } } }] } } };
    expect(summarise(one).scores.map((s) => s.folder)).toEqual(['recipes']);
  });

  it('refuses an unknown folder by name, listing the known ones', () => {
    expect(() => selected('recipes,nope')).toThrow(`mutate: unknown folder nope; known: ${Object.keys(FOLDERS).join(', ')}`);
    expect(selected('recipes, ops')).toEqual(['recipes', 'ops']);
  });
});

describe('mutation summary', () => {
  const m = (status: string, line = 1) => ({ mutatorName: 'EqualityOperator', replacement: 'a <= b', status, location: { start: { line, column: 3 } } });
  it('scores folders and files as (killed + timed out) / valid, errors and ignored left out; a later report replaces a file', () => {
    const first = { files: {
      '/x/sandbox-1/ops/a.ts': { mutants: [m('Killed'), m('Survived', 2), m('Timeout'), m('NoCoverage', 4), m('CompileError'), m('Ignored')] },
      '/x/sandbox-1/ops/b.ts': { mutants: [m('Survived', 7)] },
    } };
    const second = { files: { 'ops/b.ts': { mutants: [m('Killed'), m('Killed')] }, 'recipes/c.ts': { mutants: [m('Survived', 9)] } } };
    const one = summarise(first);
    expect(one.scores).toEqual([{ folder: 'ops', killed: 1, timeout: 1, survived: 2, noCoverage: 1, errors: 1, ignored: 1, score: 2 / 5 }]);
    expect(one.survivors).toEqual(['ops/a.ts:2:3 EqualityOperator → a <= b', 'ops/a.ts:4:3 (no test reaches it) EqualityOperator → a <= b', 'ops/b.ts:7:3 EqualityOperator → a <= b']);
    const both = summarise(first, second);
    expect(both.scores.map((s) => [s.folder, s.score])).toEqual([['ops', 4 / 6], ['recipes', 0]]);
    expect(both.files.map((s) => [s.folder, s.killed, s.survived])).toEqual([['ops/a.ts', 1, 1], ['ops/b.ts', 2, 0], ['recipes/c.ts', 0, 1]]);
  });
});
