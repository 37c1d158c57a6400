// The training loop every recipe shares (SFT, LoRA, DPO, the demo): steps of a jitted train step over micro-batches
// picked by position, a progress bar on a TTY (plain lines otherwise), metrics.jsonl, periodic eval, atomic
// checkpoints and exact resume, and a stop naming the step and batch when the loss is not finite.

import { appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import cliProgress from 'cli-progress';
import { data, getBackend } from '../core/backend.js';
import { flatten, unflatten } from '../core/tree.js';
import type { Tensor } from '../core/tensor.js';
import { fromStorage } from '../ops/create.js';
import { checkpointName, pruneCheckpoints, writeCheckpoint, type TrainerState, type WriteHooks } from './checkpoint.js';
import type { Schedule } from './schedule.js';
import type { StepOut } from './step.js';
import { leafPaths } from './optim.js';

export class NonFiniteLossError extends Error { override name = 'NonFiniteLossError'; }

/** One logged step (a line of metrics.jsonl); aux metrics of the loss join it by name. */
export interface StepMetrics { readonly step: number; readonly loss: number; readonly lr: number; readonly gradNorm: number; readonly tokensPerSec: number; readonly [k: string]: number }

export interface TrainLoopOpts<P, S, F, B> {
  /** The (jitted) step, e.g. trainStep(loss, { optimizer, clipNorm }). */
  readonly step: (trainable: P, state: S, frozen: F, micro: readonly B[], lr: number) => Promise<StepOut<P, S>>;
  readonly trainable: P;
  readonly optState: S;
  readonly frozen: F;
  /** Micro-batch number i of the run (i is the data position: the same i gives the same batch, so resume is exact). */
  readonly batchAt: (i: number) => B;
  /** Free each micro-batch's tensors after its step (batches made per step; GPU buffers back to the pool). */
  readonly disposeBatches?: boolean;
  /** Says which data a micro-batch holds, for errors ("epoch 1, batch 17"). */
  readonly describeBatch?: (i: number) => string;
  /** Tokens a micro-batch processes (tokens/s). */
  readonly tokensOf?: (b: B) => number;
  readonly totalSteps: number;
  readonly gradAccum?: number;
  readonly schedule: Schedule;
  /** Output folder: metrics.jsonl, checkpoint-N folders, and the final model files. */
  readonly output: string;
  /** Writes the model files of a checkpoint (or the final model) into a folder. */
  readonly saveModel: (dir: string, trainable: P) => Promise<void>;
  /** Save a checkpoint every N steps (and always at the end); 0 = only at the end. */
  readonly saveEvery?: number;
  /** Complete checkpoints kept (older ones are removed once a newer one is complete). Default 1. */
  readonly keepCheckpoints?: number;
  readonly evalEvery?: number;
  readonly evalLoss?: (trainable: P, frozen: F) => Promise<number>;
  /** Where to continue from (a checkpoint's trainer_state.json); trainable and optState must be the checkpoint's. */
  readonly resume?: TrainerState;
  readonly key?: readonly [number, number];
  readonly logEvery?: number;
  readonly progress?: 'auto' | 'bar' | 'lines' | 'none';
  readonly log?: (line: string) => void;
  /** Stop after this step without the final save, as a killed run would (tests of resume). */
  readonly stopAfter?: number;
  readonly checkpointHooks?: WriteHooks;
  /** The run's settings, recorded in every checkpoint's trainer_state.json (`config`) so a checkpoint says how it was made. */
  readonly config?: unknown;
}

export interface TrainResult<P, S> {
  readonly trainable: P;
  readonly optState: S;
  readonly losses: readonly number[];
  readonly step: number;
}

/** On the interpreter a result keeps its whole graph alive (and every older step's through it): cut it. */
const detach = async <T>(tree: T): Promise<T> => {
  const { leaves, def } = flatten(tree);
  const fresh: Tensor[] = [];
  for (const l of leaves) fresh.push(fromStorage(await data(l), l.shape, l.dtype));
  return unflatten<T>(def, fresh);
};

/**
 * Runs `totalSteps` optimizer updates (from `resume.step` when resuming), each over `gradAccum` micro-batches.
 * @example
 * const r = await trainLoop({ step, trainable: params, optState: opt.init(params), frozen: null, batchAt, totalSteps: 100,
 *   schedule: linearWarmupDecay({ peak: 2e-5, warmupSteps: 3, totalSteps: 100 }), output: 'runs/x', saveModel });
 */
export const trainLoop = async <P, S, F, B>(o: TrainLoopOpts<P, S, F, B>): Promise<TrainResult<P, S>> => {
  const GA = o.gradAccum ?? 1;
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const metricsFile = join(o.output, 'metrics.jsonl');
  await mkdir(o.output, { recursive: true });
  const cpu = (await getBackend()).name === 'cpu';
  let trainable = o.trainable, state = o.optState;
  let step = o.resume?.step ?? 0, pos = o.resume?.dataPos ?? 0;
  const key = o.resume?.key ?? o.key ?? [0, 0];
  const losses: number[] = [];
  const mode = o.progress === 'auto' || o.progress === undefined ? (process.stderr.isTTY ? 'bar' : 'lines') : o.progress;
  const bar = mode === 'bar' ? new cliProgress.SingleBar({
    format: 'step {value}/{total} | loss {loss} | lr {lr} | {tps} tok/s{aux} | ETA {eta_formatted}', hideCursor: true,
  }, cliProgress.Presets.shades_classic) : null;
  bar?.start(o.totalSteps, step, { loss: '-', lr: '-', tps: '-', aux: '' });
  const save = async (s: number) => {
    const dir = join(o.output, checkpointName(s));
    const r = await writeCheckpoint(dir, { model: (d) => o.saveModel(d, trainable), optState: state, trainer: { step: s, dataPos: pos, key: [key[0], key[1]], config: o.config } }, o.checkpointHooks)();
    if (E.isLeft(r)) throw r.left;
    await pruneCheckpoints(o.output, o.keepCheckpoints ?? 1);
  };
  try {
    while (step < o.totalSteps) {
      const micro = Array.from({ length: GA }, (_, j) => o.batchAt(pos + j));
      const lr = o.schedule(step);
      const t0 = performance.now();
      const out = await o.step(trainable, state, o.frozen, micro, lr);
      const loss = (await data(out.loss))[0]!;
      const gradNorm = (await data(out.gradNorm))[0]!;
      const auxPaths = leafPaths(out.aux), auxLeaves = flatten(out.aux).leaves;
      const aux: Record<string, number> = {};
      for (const [i, t] of auxLeaves.entries()) aux[auxPaths[i] || 'aux'] = (await data(t))[0]!;
      const secs = (performance.now() - t0) / 1000;
      for (const t of [out.loss, out.gradNorm, ...auxLeaves]) t.dispose();
      if (o.disposeBatches) for (const t of flatten(micro).leaves) t.dispose();
      if (!Number.isFinite(loss)) {
        const which = Array.from({ length: GA }, (_, j) => o.describeBatch?.(pos + j) ?? `micro-batch ${pos + j}`).join(', ');
        throw new NonFiniteLossError(`loss is ${loss} at step ${step + 1} (${which}); stopped, the last complete checkpoint in ${o.output} is kept`);
      }
      trainable = cpu ? await detach(out.trainable) : out.trainable;
      state = cpu ? await detach(out.state) : out.state;
      step++;
      pos += GA;
      losses.push(loss);
      const tokens = o.tokensOf ? micro.reduce((a, b) => a + o.tokensOf!(b), 0) : 0;
      const m: StepMetrics = { step, loss, lr, gradNorm, tokensPerSec: tokens / secs, ...aux };
      // The loss's own metrics (DPO's rewards/accuracy, rewards/margin, …) on the progress line too.
      const auxText = (sep: string) => Object.entries(aux).map(([k, v]) => `${sep}${k} ${v.toFixed(3)}`).join('');
      if (step % (o.logEvery ?? 1) === 0 || step === o.totalSteps) {
        await appendFile(metricsFile, JSON.stringify(m) + '\n');
        if (mode === 'lines') log(`step ${step}/${o.totalSteps}  loss ${loss.toFixed(4)}  lr ${lr.toExponential(2)}  gradNorm ${gradNorm.toFixed(3)}  ${m.tokensPerSec.toFixed(0)} tok/s${auxText('  ')}`);
      }
      bar?.update(step, { loss: loss.toFixed(4), lr: lr.toExponential(2), tps: m.tokensPerSec.toFixed(0), aux: auxText(' | ') });
      if (o.evalLoss && o.evalEvery && (step % o.evalEvery === 0 || step === o.totalSteps)) {
        const evalLoss = await o.evalLoss(trainable, o.frozen);
        await appendFile(metricsFile, JSON.stringify({ step, evalLoss }) + '\n');
        if (mode === 'lines') log(`step ${step}/${o.totalSteps}  eval loss ${evalLoss.toFixed(4)}`);
      }
      if (step === o.totalSteps || (o.saveEvery && step % o.saveEvery === 0)) await save(step);
      if (o.stopAfter !== undefined && step >= o.stopAfter) return { trainable, optState: state, losses, step };
    }
  } finally {
    bar?.stop();
  }
  await o.saveModel(o.output, trainable);
  return { trainable, optState: state, losses, step };
};

