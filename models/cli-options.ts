// What every `camelid` command shares: the usage error (a one-line message, exit code 2) and commander option
// parsers for numbers that reject a bad value naming the flag. cli.ts turns both into `camelid <cmd>: message`.

import { InvalidArgumentError } from 'commander';

/** A problem with the user's arguments or files: cli.ts prints `camelid <cmd>: message` and exits with code 2. */
export class UsageError extends Error { override name = 'UsageError'; }

/**
 * A commander option parser for a finite number that `ok` accepts; anything else fails naming the flag and value.
 * @example new Command('x').option('--lr <X>', 'learning rate', numberArg('--lr', 'a positive number', (x) => x > 0), 1e-3)
 */
export const numberArg = (flag: string, what: string, ok: (x: number) => boolean) => (v: string): number => {
  const x = v.trim() === '' ? Number.NaN : Number(v); // Number('') is 0
  if (!Number.isFinite(x) || !ok(x)) throw new InvalidArgumentError(`${flag} must be ${what}, got '${v}'`);
  return x;
};

/** @example .option('--steps <N>', 'steps', positiveInt('--steps'), 300) */
export const positiveInt = (flag: string) => numberArg(flag, 'a positive integer', (x) => Number.isSafeInteger(x) && x > 0);
/** @example .option('--seed <S>', 'seed', nonNegativeInt('--seed'), 0) */
export const nonNegativeInt = (flag: string) => numberArg(flag, 'a non-negative integer', (x) => Number.isSafeInteger(x) && x >= 0);
/** @example .option('--temperature <T>', 'temperature', nonNegative('--temperature'), 0.8) */
export const nonNegative = (flag: string) => numberArg(flag, '≥ 0', (x) => x >= 0);
/** @example .option('--lr <X>', 'learning rate', positive('--lr')) */
export const positive = (flag: string) => numberArg(flag, '> 0', (x) => x > 0);
/** A probability in (0, 1]. @example .option('--top-p <P>', 'nucleus', unitInterval('--top-p'), 0.9) */
export const unitInterval = (flag: string) => numberArg(flag, 'in (0, 1]', (x) => x > 0 && x <= 1);
