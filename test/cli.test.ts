// The command line, as a user runs it (from the build): the reference continuation, and one-line errors with a
// non-zero exit code for bad arguments or files.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { generateCommand, program, runCli } from '../cli.js';
import { fixture } from './helpers.js';

const root = resolve(import.meta.dirname, '..');
const cli = join(root, 'dist', 'cli.js');
const { path: fixtures, have } = fixture('stories260K', 'the CLI runs on stories260K');
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, CAMELID_BACKEND: 'cpu' }, timeout: 120_000 });

describe('camelid CLI', () => {
  it('is built', () => expect(existsSync(cli), 'run `npm run build` first').toBe(true));

  it.skipIf(!have)('generate --temperature 0 prints the reference continuation', () => {
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

// In-process: the same program the built CLI runs, with its output captured.
const cliIn = async (...argv: string[]) => {
  let out = '', err = '';
  const code = await runCli(argv, { writeOut: (s) => { out += s; }, writeErr: (s) => { err += s; } });
  return { code, out, err };
};

describe('camelid CLI, parsed by commander (in-process)', () => {
  it('--help lists every command; <cmd> --help lists its flags; both exit 0', async () => {
    const top = await cliIn('--help');
    expect(top.code).toBe(0);
    for (const c of program.commands) expect(top.out).toContain(c.name());
    const gen = await cliIn('generate', '--help');
    expect(gen.code).toBe(0);
    for (const f of ['--model', '--prompt', '--tokenizer', '--max-tokens', '--temperature', '--top-p', '--seed']) expect(gen.out).toContain(f);
    expect((await cliIn('demo', '--help')).out).toContain('--steps');
    expect((await cliIn('help', 'generate')).out).toContain('--top-p');
  });

  it('no command: the usage on stderr, exit 2', async () => {
    const r = await cliIn();
    expect(r.code).toBe(2);
    expect(r.err).toContain('Usage: camelid');
  });

  it('every command rejects an unknown flag and extra arguments with one line and exit code 2', async () => {
    const names = program.commands.map((c) => c.name()).filter((n) => n !== 'help');
    expect(names).toEqual(expect.arrayContaining(['demo', 'generate']));
    for (const name of names) {
      // commander reports a missing required option before an unknown one: give the required ones a value.
      const required = program.commands.find((c) => c.name() === name)!.options.filter((o) => o.mandatory).flatMap((o) => [o.long!, '1']);
      const r = await cliIn(name, ...required, '--bogus', '1');
      expect(r.code, name).toBe(2);
      expect(r.err, name).toBe(`camelid ${name}: unknown option '--bogus' (see 'camelid ${name} --help')\n`);
    }
    const extra = await cliIn('demo', 'now');
    expect(extra.code).toBe(2);
    expect(extra.err).toMatch(/^camelid demo: too many arguments/);
  });

  it('unknown commands and top-level flags are refused with exit code 2', async () => {
    expect(await cliIn('frobnicate')).toEqual({ code: 2, out: '', err: "camelid: unknown command 'frobnicate' (see 'camelid --help')\n" });
    expect((await cliIn('--bogus')).err).toMatch(/^camelid: unknown option '--bogus'/);
  });

  it('numbers: --opt=value and --opt value are parsed alike; bad values name the flag and the value', async () => {
    for (const [args, msg] of [
      [['demo', '--steps=0'], "--steps must be a positive integer or three (pretrain,sft,dpo), got '0'"],
      [['demo', '--steps', '2.5'], "--steps must be a positive integer or three (pretrain,sft,dpo), got '2.5'"],
      [['demo', '--steps='], "--steps must be a positive integer or three (pretrain,sft,dpo), got ''"],
      [['demo', '--steps', '4,4'], "--steps must be a positive integer or three (pretrain,sft,dpo), got '4,4'"],
      [['generate', '--temperature', 'hot'], "--temperature must be ≥ 0, got 'hot'"],
      [['generate', '--temperature=-1'], "--temperature must be ≥ 0, got '-1'"],
      [['generate', '--top-p', '0'], "--top-p must be in (0, 1], got '0'"],
      [['generate', '--top-p=1.5'], "--top-p must be in (0, 1], got '1.5'"],
      [['generate', '--max-tokens', 'NaN'], "--max-tokens must be a positive integer, got 'NaN'"],
      [['generate', '--seed=-3'], "--seed must be a non-negative integer, got '-3'"],
    ] as const) {
      const r = await cliIn(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err, args.join(' ')).toBe(`camelid ${args[0]}: ${msg} (see 'camelid ${args[0]} --help')\n`);
    }
    // Good values in both spellings reach the command (which then stops at the missing model).
    const r = await cliIn('generate', '--model=/nonexistent/m', '--prompt', 'x', '--max-tokens=5', '--temperature', '0', '--top-p=0.5', '--seed', '7');
    expect(r.code).toBe(2);
    expect(generateCommand.opts()).toMatchObject({ model: '/nonexistent/m', prompt: 'x', maxTokens: 5, temperature: 0, topP: 0.5, seed: 7 });
  });

  it('generate: the required flags are named', async () => {
    expect((await cliIn('generate', '--prompt', 'x')).err).toBe('camelid generate: --model DIR (or a llama2.c .bin) is required\n');
    expect((await cliIn('generate', '--model', 'm')).err).toBe('camelid generate: --prompt TEXT is required\n');
    expect((await cliIn('generate', '--model')).err).toMatch(/^camelid generate: option '--model <DIR\|FILE.bin>' argument missing/);
  });
});

describe.skipIf(!have)('camelid generate: model and tokenizer (in-process)', () => {
  const ref = () => (JSON.parse(readFileSync(join(fixtures, 'expected.json'), 'utf8')) as { cases: { runc_stdout: string }[] }).cases[0]!.runc_stdout;
  // generate streams to process.stdout: capture it.
  const withStdout = async (argv: string[]) => {
    let stdout = '';
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => { stdout += String(s); return true; });
    try { return { ...(await cliIn(...argv)), stdout }; } finally { spy.mockRestore(); }
  };

  it('a tokenizer of another size is refused before anything is printed, naming both sizes and files', async () => {
    const tok = resolve(fixtures, '../llama2-tokenizer-32k/tokenizer.model');
    const model = join(fixtures, 'hf');
    const r = await withStdout(['generate', '--model', model, '--tokenizer', tok, '--prompt', 'Once upon a time']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.err).toBe(`camelid generate: the tokenizer ${tok} has 32000 tokens but ${model} has vocab_size 512: they do not belong together (pass the tokenizer the model was trained with)\n`);
  });

  it('a missing model is reported as the missing model', async () => {
    const r = await withStdout(['generate', '--model', '/nonexistent/model', '--prompt', 'x']);
    expect(r.code).toBe(2);
    expect(r.err).toBe('camelid generate: /nonexistent/model: cannot open model (no such file or directory)\n');
  });

  it("--tokenizer tok512.bin (llama2.c's format) gives run.c's greedy continuation", async () => {
    const r = await withStdout(['generate', '--model', join(fixtures, 'stories260K.bin'), '--tokenizer', join(fixtures, 'tok512.bin'), '--prompt', 'Once upon a time', '--temperature=0', '--max-tokens=30']);
    expect(r.code, r.err).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(60);
    expect(ref().startsWith(r.stdout.trimEnd())).toBe(true);
  });
});
