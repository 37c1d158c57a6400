#!/usr/bin/env node
// The camelid command line: `demo` runs the embedded default job; `generate` continues a prompt with a checkpoint.

import { runDemo } from './examples/spirals.js';
import { parseGenerateArgs, runGenerate, UsageError } from './models/cli-generate.js';

const usage = `usage:
  camelid demo [--steps N]
  camelid generate --model DIR|FILE.bin --prompt TEXT [--tokenizer PATH --max-tokens N --temperature T --top-p P --seed S]`;

const main = async (argv: readonly string[]): Promise<number> => {
  const [cmd, ...rest] = argv;
  if (cmd === 'demo') {
    const i = rest.indexOf('--steps');
    const steps = i >= 0 ? Number(rest[i + 1]) : 300;
    if (!Number.isInteger(steps) || steps <= 0) { console.error(`camelid demo: --steps must be a positive integer, got '${rest[i + 1]}'`); return 2; }
    await runDemo(steps);
    return 0;
  }
  if (cmd === 'generate') {
    try {
      await runGenerate(parseGenerateArgs(rest), (s) => process.stdout.write(s));
      return 0;
    } catch (e) {
      if (e instanceof UsageError) { console.error(`camelid generate: ${e.message}`); return 2; }
      throw e;
    }
  }
  console.error(cmd ? `camelid: unknown command '${cmd}'\n${usage}` : usage);
  return 2;
};

main(process.argv.slice(2)).then((code) => process.exit(code), (e: unknown) => {
  console.error(`camelid: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
