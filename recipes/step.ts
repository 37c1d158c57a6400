// The generic training step: from any loss over (trainable, frozen, batch), one jitted function doing forward,
// backward, gradient accumulation, clipping and the optimizer update, with the trainable tree and the optimizer
// state donated. SFT, LoRA (trainable = adapters, frozen = base) and DPO all build their step here.

import { isTensor, type Tensor } from '../core/tensor.js';
import { flatten, unflatten, zipTrees, type Tree } from '../core/tree.js';
import { jit } from '../core/jit.js';
import { realize } from '../core/backend.js';
import { add, mul } from '../ops/elementwise.js';
import { valueAndGrad } from '../ops/grad.js';
import { clipByGlobalNorm, globalNorm, type Lr, type Optimizer } from './optim.js';

/** A loss: a scalar tensor, or one with auxiliary metrics (a tree of tensors, averaged over micro-batches). */
export type LossOut = Tensor | { readonly loss: Tensor; readonly aux: Tree };
export type LossFn<P, F, B> = (trainable: P, frozen: F, batch: B) => LossOut;

export interface StepOpts<S> {
  readonly optimizer: Optimizer<S>;
  /** Clip the (accumulated) gradient to this global norm (torch clip_grad_norm_); absent or 0: no clipping. */
  readonly clipNorm?: number;
}

export interface StepOut<P, S> {
  readonly trainable: P;
  readonly state: S;
  readonly loss: Tensor; // () mean of the micro-batch losses
  readonly gradNorm: Tensor; // () global norm of the accumulated gradient before clipping
  readonly aux: Tree;
}

/** The step's body: (trainable, state, frozen, micro-batches, lr) → StepOut. */
/** The jitted step; `kernels` and `dispatches` describe its plan for the last shapes called. */
export interface TrainStep<P, S, F, B> {
  (trainable: P, state: S, frozen: F, micro: readonly B[], lr: number): Promise<StepOut<P, S>>;
  readonly kernels: number;
  readonly dispatches: number;
  /** Frees the compiled plans' scratch buffers now (a later call compiles again from the shader cache). */
  dispose(): void;
}

export type StepFn<P, S, F, B> = (trainable: P, state: S, frozen: F, micro: readonly B[], lr: Lr) => StepOut<P, S>;

/**
 * The un-jitted step. Gradient accumulation: the loss is the mean of the micro-batch losses, so the gradient is
 * the mean of the micro-batch gradients (what accelerate's `accumulate()` gets by scaling each micro-batch loss by
 * 1/GA, and optax.MultiSteps by averaging; RECIPES-FACTS §7); one clip and one update follow.
 * @example const out = stepBody(loss, { optimizer: adamw({ lr: 1e-3 }) })(params, state, null, [batch], 1e-3);
 */
export const stepBody = <P, S, F, B>(lossFn: LossFn<P, F, B>, opts: StepOpts<S>): StepFn<P, S, F, B> => (trainable, state, frozen, micro, lr) => {
  if (micro.length === 0) throw new TypeError('train step: no micro-batches');
  const scale = 1 / micro.length;
  const total = (p: P): readonly [Tensor, Tree] => {
    let loss: Tensor | null = null;
    let aux: Tree = null;
    for (const b of micro) {
      const out = lossFn(p, frozen, b);
      const [l, a] = isTensor(out) ? [out, null] : [out.loss, out.aux];
      loss = loss ? add(loss, mul(l, scale)) : mul(l, scale); // ()
      const scaled = flatten(a).leaves.length ? zipTrees([a], ([x]) => mul(x!, scale)) : a;
      aux = aux === null ? scaled : zipTrees([aux, scaled], ([x, y]) => add(x!, y!));
    }
    return [loss!, aux] as const;
  };
  const [[loss, aux], grads] = valueAndGrad(total, { hasAux: true })(trainable);
  const clip = opts.clipNorm ? clipByGlobalNorm(grads, opts.clipNorm) : { grads, norm: globalNorm(grads) };
  const [np, ns] = opts.optimizer.update(clip.grads, state, trainable, lr);
  // Return the trainable tree in its own structure (the optimizer rebuilt it from flatten's definition).
  return { trainable: unflatten<P>(flatten(trainable).def, flatten(np).leaves), state: ns, loss, gradNorm: clip.norm, aux };
};

/**
 * The jitted step: one plan per (shapes of trainable, state, frozen, micro-batches) with trainable and state
 * donated; `lr` is a per-call scalar. After the first call, a step records one command buffer and allocates nothing.
 * @example
 * const step = trainStep((p, _f, b: { tokens: Tensor; labels: Tensor }) => sftLoss(cfg, p, b.tokens, b.labels), { optimizer: opt, clipNorm: 1 });
 * const { trainable, state: s, loss } = await step(params, state, null, [batch], schedule(i));
 */
export const trainStep = <P, S, F, B>(lossFn: LossFn<P, F, B>, opts: StepOpts<S>): TrainStep<P, S, F, B> => {
  const step = jit((trainable: P, state: S, frozen: F, micro: readonly B[], lr: Tensor) => stepBody(lossFn, opts)(trainable, state, frozen, micro, lr), { donate: [0, 1] });
  const call = async (trainable: P, state: S, frozen: F, micro: readonly B[], lr: number): Promise<StepOut<P, S>> => {
    // A compiled step binds buffers: lazy inputs (fresh init, optimizer zeros) are computed once here.
    const lazy = [trainable, state, frozen, micro].flatMap((x) => flatten(x).leaves).filter((t) => !t.node.realized);
    if (lazy.length) await realize(...lazy);
    return step(trainable, state, frozen, micro, lr);
  };
  Object.defineProperty(call, 'kernels', { get: () => step.kernels });
  Object.defineProperty(call, 'dispatches', { get: () => step.dispatches });
  Object.defineProperty(call, 'dispose', { value: () => step.dispose() });
  return call as TrainStep<P, S, F, B>;
};
