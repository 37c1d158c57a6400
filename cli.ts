#!/usr/bin/env node
// The camelid command line. Each command is a module exporting a commander `Command`; this file adds them to
// `program`, gives every command the same error handling (one line `camelid <cmd>: message`, exit code 2 for
// usage and file problems, 1 for anything else) and runs it when executed as a script.

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { demoCommand } from './recipes/demo/cli.js';
import { makeGenerateCommand } from './models/cli-generate.js';
import { chatPrompt } from './recipes/chat.js';
import { UsageError } from './models/cli-options.js';
import { evalCommand } from './recipes/cli-eval.js';
import { sftCommand } from './recipes/cli-sft.js';
import { dpoCommand } from './recipes/cli-dpo.js';
import { mergeCommand } from './recipes/cli-merge.js';

export const program = new Command('camelid')
  .description('a functional tensor DSL and autodiff framework on WebGPU, with Llama-2 recipes');

program.addCommand(demoCommand);
// --chat wraps the prompt in Tulu's template: a recipe fact, so the template comes from here (models knows no recipe).
export const generateCommand = makeGenerateCommand((tok, text) => chatPrompt(tok, [{ role: 'user', content: text }]));
program.addCommand(generateCommand);
program.addCommand(evalCommand);
program.addCommand(sftCommand);
program.addCommand(dpoCommand);
program.addCommand(mergeCommand);

export interface CliIo { readonly writeOut: (s: string) => void; readonly writeErr: (s: string) => void }
const stdio: CliIo = { writeOut: (s) => void process.stdout.write(s), writeErr: (s) => void process.stderr.write(s) };

/** A commander error raised while parsing `cmd`'s arguments (commander's own message starts with `error: `). */
class ParseExit extends Error {
  constructor(readonly error: CommanderError, readonly cmd: Command) { super(error.message); }
}

const commandPath = (cmd: Command): string => (cmd.parent ? `${commandPath(cmd.parent)} ${cmd.name()}` : cmd.name());

// Every command, those added later included, reports through runCli rather than printing and exiting itself.
// Set up once per command; the output goes to the current call's io.
let io: CliIo = stdio;
let running: Command = program;
const configured = new WeakSet<Command>();
const configure = (cmd: Command): void => {
  if (!configured.has(cmd)) {
    configured.add(cmd);
    cmd.exitOverride((e) => { throw new ParseExit(e, cmd); });
    cmd.configureOutput({ writeOut: (s) => io.writeOut(s), writeErr: (s) => io.writeErr(s), outputError: () => {} });
  }
  for (const sub of cmd.commands) configure(sub);
};
program.hook('preAction', (_self, action) => { running = action; });

// commander prefixes a bad option value with `option '--x <X>' argument 'v' is invalid.`: our parsers' own
// messages already name the flag and the value.
const cleanMessage = (e: CommanderError): string =>
  e.message.replace(/^error: /, '').replace(/^option '[^']*' argument '[\s\S]*' is invalid\. /, '');

/**
 * Run the command line `argv` (without node and the script); resolves to the process exit code.
 * @example await runCli(['generate', '--help']) // 0, the flags printed
 */
export const runCli = async (argv: readonly string[], out: CliIo = stdio): Promise<number> => {
  io = out;
  running = program;
  configure(program);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof ParseExit) {
      if (e.error.exitCode === 0) return 0; // --help, help <cmd>
      const path = commandPath(e.cmd);
      // With no command at all, commander has printed the usage already.
      if (e.error.code !== 'commander.help') io.writeErr(`${path}: ${cleanMessage(e.error)} (see '${path} --help')\n`);
      return 2;
    }
    if (e instanceof UsageError) { io.writeErr(`${commandPath(running)}: ${e.message}\n`); return 2; }
    io.writeErr(`${commandPath(running)}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
};

const invokedAsScript = (): boolean => {
  try {
    return realpathSync(process.argv[1] ?? '') === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
};

if (invokedAsScript()) {
  // process.exit, not exitCode: an open GPU device would keep the event loop alive.
  void runCli(process.argv.slice(2)).then((code) => process.exit(code));
}
