// Learning-rate schedules: plain host functions of the update index s = 0, 1, … (the value given to the s-th
// optimizer update). The training step takes the result as a run-time scalar, so a schedule never recompiles it.

/** A schedule: the learning rate of update s (0-based, as torch's LambdaLR sees it). */
export type Schedule = (s: number) => number;

export interface WarmupDecayOpts {
  readonly peak: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
}

/**
 * Warmup steps from a ratio as open-instruct computes them: int(T·ratio), a floor (finetune.py `get_scheduler`).
 * @example warmupFromRatio(100, 0.03) // 3
 */
export const warmupFromRatio = (totalSteps: number, ratio: number): number => Math.floor(totalSteps * ratio);

/**
 * Hugging Face `get_linear_schedule_with_warmup`: lr·s/max(1, W) while s < W, then lr·max(0, (T − s)/max(1, T − W))
 * (transformers/optimization.py); with W > 0 the first update gets lr 0.
 * @example linearWarmupDecay({ peak: 2e-5, warmupSteps: 3, totalSteps: 100 })(0) // 0
 */
export const linearWarmupDecay = ({ peak, warmupSteps: W, totalSteps: T }: WarmupDecayOpts): Schedule => (s) =>
  s < W ? (peak * s) / Math.max(1, W) : peak * Math.max(0, (T - s) / Math.max(1, T - W));

/**
 * Hugging Face `get_cosine_schedule_with_warmup` (half a cycle): linear warmup, then
 * lr·max(0, ½(1 + cos(π·p))) with p = (s − W)/max(1, T − W).
 * @example cosineWarmupDecay({ peak: 1, warmupSteps: 0, totalSteps: 4 })(2) // 0.5
 */
export const cosineWarmupDecay = ({ peak, warmupSteps: W, totalSteps: T }: WarmupDecayOpts): Schedule => (s) => {
  if (s < W) return (peak * s) / Math.max(1, W);
  const p = (s - W) / Math.max(1, T - W);
  return peak * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * p)));
};

/**
 * A constant rate, after an optional linear warmup (Hugging Face `get_constant_schedule_with_warmup`).
 * @example constant({ peak: 1e-4 })(10) // 1e-4
 */
export const constant = ({ peak, warmupSteps: W = 0 }: { peak: number; warmupSteps?: number }): Schedule => (s) =>
  s < W ? (peak * s) / Math.max(1, W) : peak;

export type ScheduleName = 'linear' | 'cosine' | 'constant';

/**
 * A schedule by name (the config's `schedule` field).
 * @example makeSchedule('cosine', { peak: 1e-4, warmupSteps: 10, totalSteps: 1000 })(10) // 1e-4
 */
export const makeSchedule = (name: ScheduleName, o: WarmupDecayOpts): Schedule =>
  name === 'linear' ? linearWarmupDecay(o) : name === 'cosine' ? cosineWarmupDecay(o) : constant(o);
