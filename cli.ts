#!/usr/bin/env node
// The camelid command line. `demo` runs the embedded default job; more subcommands arrive with the models.

import { runDemo } from './examples/spirals.js';

const usage = 'usage: camelid demo [--steps N]';

const main = async (argv: readonly string[]): Promise<number> => {
  const [cmd, ...rest] = argv;
  if (cmd === 'demo') {
    const i = rest.indexOf('--steps');
    const steps = i >= 0 ? Number(rest[i + 1]) : 300;
    if (!Number.isInteger(steps) || steps <= 0) { console.error(`camelid demo: --steps must be a positive integer, got '${rest[i + 1]}'`); return 2; }
    await runDemo(steps);
    return 0;
  }
  console.error(cmd ? `camelid: unknown command '${cmd}'\n${usage}` : usage);
  return 2;
};

main(process.argv.slice(2)).then((code) => process.exit(code), (e: unknown) => {
  console.error(`camelid: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
