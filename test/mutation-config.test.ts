// `npm run mutate`'s folder table (test-tools/mutation-folders.mjs): every test file and mutated path it names
// exists, and every slow-test pattern still names a test (a renamed test would otherwise run again for each mutant
// it covers, unnoticed).
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FOLDERS, SLOW_TESTS, selected, testFiles } from '../test-tools/mutation-folders.mjs';

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

  it('refuses an unknown folder by name, listing the known ones', () => {
    expect(() => selected('recipes,nope')).toThrow(`mutate: unknown folder nope; known: ${Object.keys(FOLDERS).join(', ')}`);
    expect(selected('recipes, ops')).toEqual(['recipes', 'ops']);
  });
});
