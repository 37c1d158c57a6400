// The command line, as a user runs it (from the build): the reference continuation, and one-line errors with a
// non-zero exit code for bad arguments or files.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = resolve(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const fixtures = resolve(root, '../shared/fixtures/stories260K');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, CAMELID_BACKEND: 'cpu' }, timeout: 120_000 });

describe('camelid CLI', () => {
  it('is built', () => expect(existsSync(cli), 'run `npm run build` first').toBe(true));

  it.skipIf(!existsSync(fixtures))('generate --temperature 0 prints the reference continuation', () => {
    const ref = (JSON.parse(readFileSync(join(fixtures, 'expected.json'), 'utf8')) as { cases: { runc_stdout: string }[] }).cases[0]!.runc_stdout;
    const r = run('generate', '--model', join(fixtures, 'hf'), '--prompt', 'Once upon a time', '--temperature', '0', '--max-tokens', '40');
    expect(r.status, r.stderr).toBe(0);
    const out = r.stdout.trimEnd();
    expect(out.length).toBeGreaterThan(100);
    expect(ref.startsWith(out.slice(0, Math.min(out.length, ref.trimEnd().length)))).toBe(true);
  });

  it('bad arguments and files: one line on stderr, exit code 2', () => {
    for (const args of [
      ['generate', '--prompt', 'x'],
      ['generate', '--model', '/nonexistent/model', '--prompt', 'x'],
      ['generate', '--model', fixtures, '--prompt', 'x', '--temperature', 'hot'],
      ['generate', '--model', fixtures, '--prompt', 'x', '--bogus', '1'],
      ['frobnicate'],
    ]) {
      const r = run(...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')[0]).toMatch(/^camelid/);
    }
  });
});
