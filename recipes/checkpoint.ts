// Training checkpoints: a folder holding the model files (a Hugging Face folder for SFT, adapters for LoRA: the
// caller writes them), optimizer.safetensors (the optimizer state, leaves named by tree path) and
// trainer_state.json (step, RNG key, data position). Written atomically: everything goes into a temporary folder,
// each file is fsynced, then one rename publishes it, so a run killed at any moment leaves the last complete one.

import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import * as t from 'io-ts';
import { data } from '../core/backend.js';
import { fmt, sameShape } from '../core/shape.js';
import type { Tensor } from '../core/tensor.js';
import { flatten, unflatten } from '../core/tree.js';
import { fromStorage } from '../ops/create.js';
import { openCheckpoint, writeSafetensors } from '../models/safetensors.js';
import { leafPaths } from './optim.js';

export class CheckpointWriteError extends Error { override name = 'CheckpointWriteError'; }

/** What a run needs besides weights and optimizer state to continue exactly where it stopped. */
export const TrainerState = t.type({
  /** Optimizer updates done. */
  step: t.number,
  /** Micro-batches consumed (the data position). */
  dataPos: t.number,
  /** The run's RNG key (two u32 words). */
  key: t.tuple([t.number, t.number]),
});
export type TrainerState = t.TypeOf<typeof TrainerState> & { readonly [k: string]: unknown };

export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_FILE = 'trainer_state.json';
export const checkpointName = (step: number): string => `checkpoint-${step}`;

export interface CheckpointParts {
  /** Writes the model's files into the (temporary) folder it is given. */
  readonly model: (dir: string) => Promise<void>;
  readonly optState: unknown;
  readonly trainer: TrainerState;
}

export interface WriteHooks {
  /** Called after each file is complete (tests use it to simulate a crash midway by throwing). */
  readonly afterFile?: (name: string) => void | Promise<void>;
}

const fsyncPath = async (path: string): Promise<void> => {
  const fh = await open(path, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
};

/**
 * Copies a file into a folder (the tokenizer beside a checkpoint), keeping its name unless `as` is given.
 * @example await copyInto('tok512.model', dir, 'tokenizer.model');
 */
export const copyInto = async (file: string, dir: string, as?: string): Promise<void> => { await copyFile(file, join(dir, as ?? basename(file))); };

/**
 * Writes a checkpoint folder at `dir` atomically: `dir.tmp` first, fsynced file by file, then renamed. A folder
 * already at `dir` (the same step saved again) is replaced only once the new one is complete.
 * @example await writeCheckpoint(join(out, checkpointName(step)), { model: (d) => save(d), optState, trainer })();
 */
export const writeCheckpoint = (dir: string, parts: CheckpointParts, hooks: WriteHooks = {}): TaskEither<CheckpointWriteError, string> => async () => {
  const tmp = `${dir}.tmp`;
  try {
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    await parts.model(tmp);
    for (const f of await readdir(tmp)) { await fsyncPath(join(tmp, f)); await hooks.afterFile?.(f); }
    const { leaves } = flatten(parts.optState);
    const names = leafPaths(parts.optState);
    const written = await writeSafetensors(join(tmp, OPTIMIZER_FILE), leaves.map((l, i) => ({
      name: names[i] || 'value', dtype: 'F32' as const, shape: l.shape, data: async () => Float32Array.from(await data(l)),
    })))();
    if (E.isLeft(written)) throw new Error(written.left.message);
    await fsyncPath(join(tmp, OPTIMIZER_FILE));
    await hooks.afterFile?.(OPTIMIZER_FILE);
    await writeFile(join(tmp, TRAINER_FILE), JSON.stringify(parts.trainer, null, 2) + '\n');
    await fsyncPath(join(tmp, TRAINER_FILE));
    await hooks.afterFile?.(TRAINER_FILE);
    await fsyncPath(tmp);
    const old = `${dir}.old`;
    const existed = await stat(dir).then(() => true, () => false);
    if (existed) { await rm(old, { recursive: true, force: true }); await rename(dir, old); }
    await rename(tmp, dir);
    await fsyncPath(dirname(dir));
    if (existed) await rm(old, { recursive: true, force: true });
    return E.right(dir);
  } catch (e) {
    return E.left(new CheckpointWriteError(`checkpoint ${dir}: write failed (${e instanceof Error ? e.message : String(e)}); the previous checkpoint is untouched`));
  }
};

/**
 * Complete checkpoints in an output folder, oldest first (temporary folders of an interrupted write are ignored).
 * @example (await listCheckpoints('runs/sft')).at(-1)?.dir // runs/sft/checkpoint-200
 */
export const listCheckpoints = async (out: string): Promise<{ step: number; dir: string }[]> => {
  const names = await readdir(out).catch(() => [] as string[]);
  return names.flatMap((n) => { const m = /^checkpoint-(\d+)$/.exec(n); return m ? [{ step: Number(m[1]), dir: join(out, n) }] : []; }).sort((a, b) => a.step - b.step);
};

/**
 * Removes all complete checkpoints but the newest `keep`.
 * @example await pruneCheckpoints('runs/sft', 2);
 */
export const pruneCheckpoints = async (out: string, keep: number): Promise<void> => {
  const all = await listCheckpoints(out);
  for (const c of all.slice(0, Math.max(0, all.length - keep))) await rm(c.dir, { recursive: true, force: true });
};

/**
 * The checkpoint to resume from: `path` itself when it holds trainer_state.json, else its newest checkpoint-N.
 * @example const dir = await resolveCheckpoint('runs/sft'); // runs/sft/checkpoint-200
 */
export const resolveCheckpoint = async (path: string): Promise<E.Either<Error, string>> => {
  if (await stat(join(path, TRAINER_FILE)).then(() => true, () => false)) return E.right(path);
  const all = await listCheckpoints(path);
  const last = all[all.length - 1];
  return last ? E.right(last.dir) : E.left(new Error(`resume: ${path} holds no ${TRAINER_FILE} and no complete checkpoint-N folder`));
};

/**
 * trainer_state.json, checked.
 * @example const { step, dataPos } = orThrow(await readTrainerState(dir));
 */
export const readTrainerState = async (dir: string): Promise<E.Either<Error, TrainerState>> => {
  const file = join(dir, TRAINER_FILE);
  try {
    const raw: unknown = JSON.parse(await readFile(file, 'utf8'));
    const r = TrainerState.decode(raw);
    if (E.isLeft(r)) return E.left(new Error(`${file}: expected {step, dataPos, key: [u32, u32]}`));
    return E.right(raw as TrainerState);
  } catch (e) {
    return E.left(new Error(`${file}: cannot read (${e instanceof Error ? e.message : String(e)})`));
  }
};

/**
 * Reads optimizer.safetensors into a tree shaped like `template` (e.g. `optimizer.init(params)`), checking that
 * every leaf is there with its shape.
 * @example const state = orThrow(await readOptState(dir, opt.init(params)));
 */
export const readOptState = async <S>(dir: string, template: S): Promise<E.Either<Error, S>> => {
  const file = join(dir, OPTIMIZER_FILE);
  const ck = await openCheckpoint(file)();
  if (E.isLeft(ck)) return E.left(new Error(ck.left.message));
  try {
    const { leaves, def } = flatten(template);
    const names = leafPaths(template);
    const out: Tensor[] = [];
    for (const [i, l] of leaves.entries()) {
      const name = names[i] || 'value';
      const info = ck.right.info(name);
      if (!info) return E.left(new Error(`${file}: optimizer state '${name}' missing`));
      if (!sameShape(info.shape, l.shape)) return E.left(new Error(`${file}: optimizer state '${name}' is ${fmt(info.shape)}, expected ${fmt(l.shape)}`));
      const arr = await ck.right.read(name)();
      if (E.isLeft(arr)) return E.left(new Error(arr.left.message));
      out.push(fromStorage(l.dtype === 'f32' ? arr.right : Float64Array.from(arr.right), l.shape, l.dtype));
    }
    return E.right(unflatten<S>(def, out));
  } finally {
    await ck.right.close();
  }
};
