// What `camelid sft` and `camelid dpo` read alike from a command line: flag values as config fields (numbers parsed,
// the codec then checks them), the settings (the --config file's layer, then the flags' layer over it, merged by the
// recipe), and the --progress mode. Every problem is a one-line message for a usage error.

import { readFile } from 'node:fs/promises';
import * as E from 'fp-ts/lib/Either.js';
import { UsageError } from '../models/cli-options.js';

/**
 * Flag values as config fields: the listed keys parsed as numbers (a non-number is a UsageError naming the flag),
 * `--config` and unset flags left out, other values as given or as `convert` returns them.
 * @example numberFlags({ lr: '1e-5', variant: 'hf' }, new Set(['lr'])) // { lr: 1e-5, variant: 'hf' }
 */
export const numberFlags = (o: Record<string, unknown>, numberKeys: ReadonlySet<string>, convert: Record<string, (v: unknown) => unknown> = {}): Record<string, unknown> => {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined || k === 'config') continue;
    if (numberKeys.has(k)) {
      const x = String(v).trim() === '' ? Number.NaN : Number(v);
      if (!Number.isFinite(x)) throw new UsageError(`--${k} must be a number, got '${String(v)}'`);
      out[k] = x;
    } else out[k] = convert[k] ? convert[k](v) : v;
  }
  return out;
};

/** A recipe's reading of its settings: one layer checked (naming its source), and the layers merged. */
export interface SettingsReader<L, C> {
  readonly parse: (raw: unknown, source: string) => E.Either<string, L>;
  readonly resolve: (layers: readonly L[]) => E.Either<string, C>;
  readonly flags: (o: Record<string, unknown>) => Record<string, unknown>;
}

/** The settings of a command line: the --config file's layer (if given), then the flags' over it (--progress is not a setting). */
export const commandSettings = async <L, C>(o: Record<string, unknown>, r: SettingsReader<L, C>): Promise<E.Either<string, C>> => {
  const layers: L[] = [];
  if (typeof o.config === 'string') {
    let raw: unknown;
    try { raw = JSON.parse(await readFile(o.config, 'utf8')); } catch (e) { return E.left(`${o.config}: cannot read JSON (${e instanceof Error ? e.message : String(e)})`); }
    const fileLayer = r.parse(raw, o.config);
    if (E.isLeft(fileLayer)) return fileLayer;
    layers.push(fileLayer.right);
  }
  const { progress: _p, ...flags } = o;
  const flagLayer = r.parse(r.flags(flags), 'flags');
  if (E.isLeft(flagLayer)) return flagLayer;
  layers.push(flagLayer.right);
  return r.resolve(layers);
};

export type ProgressMode = 'auto' | 'bar' | 'lines' | 'none';
/** --progress's value, checked. */
export const progressMode = (v: unknown): ProgressMode => {
  const mode = String(v);
  if (!['auto', 'bar', 'lines', 'none'].includes(mode)) throw new UsageError(`--progress must be auto, bar, lines or none, got '${mode}'`);
  return mode as ProgressMode;
};
