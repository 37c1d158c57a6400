// The supervised fine-tuning loss: next-token cross-entropy on the labelled (assistant) tokens of a padded batch,
// with the causal shift inside (position t predicts labels[t+1]) and the two reductions Tulu 2's trainers use.

import type { Tensor } from '../core/tensor.js';
import { DTypeError, fmt, ShapeError } from '../core/shape.js';
import { add, cast, equal, iota, logicalNot, mul, sub, where } from '../ops/elementwise.js';
import { maximum } from '../ops/elementwise.js';
import { div } from '../ops/math.js';
import { expandDims, pad, slice } from '../ops/movement.js';
import { logsumexp, sum } from '../ops/reduce.js';
import { forward, type LlamaParams } from '../models/llama.js';
import type { Weight } from '../ops/nn.js';
import type { LlamaConfig } from '../models/config.js';

/** The ignored label (PyTorch CrossEntropyLoss ignore_index; open-instruct masks prompts with it). */
export const IGNORE_LABEL = -100;

/**
 * 'mean': every example weighs the same: the mean over examples of each example's mean token loss (open-instruct
 * finetune.py `--reduce_loss mean`, its default: Hugging Face's loss is the token mean of a micro-batch of one
 * example per device, averaged over accumulation steps; RECIPES-FACTS §3.4).
 * 'sum': every trained token weighs the same: Σ token losses / Σ trained tokens of the batch (EasyLM
 * `cross_entropy_loss_and_accuracy`: −Σ logp·mask / Σ mask over the micro-batch; open-instruct's `--reduce_loss sum`
 * is the token-weighted variant of the same idea, unnormalised).
 */
export type LossReduction = 'mean' | 'sum';

/**
 * Labels shifted one to the left, the last column ignored: target[b, t] = labels[b, t+1].
 * @example shiftLabels(labels) // (B, T) i32 → (B, T) i32
 */
export const shiftLabels = (labels: Tensor): Tensor => {
  const [B, T] = labels.shape as [number, number];
  // Padding fills with 0, so shift labels+100 and subtract 100 after: the new last column becomes −100.
  const next = slice(add(labels, -IGNORE_LABEL), [0, 1], [B, T]); // (B, T−1)
  return sub(pad(next, [[0, 0], [0, 1]]), -IGNORE_LABEL); // (B, T)
};

/**
 * Per-position negative log-likelihood of `targets` under `logits`, 0 where the target is ignored, and the mask.
 * @example const { nll, mask } = tokenNll(logits, targets) // (B, T, V), (B, T) → (B, T), (B, T)
 */
export const tokenNll = (logits: Tensor, targets: Tensor): { nll: Tensor; mask: Tensor } => {
  const V = logits.shape[logits.rank - 1]!;
  const hit = equal(expandDims(targets, -1), iota(V, targets.dtype)); // (B, T, V)
  const picked = sum(where(hit, logits, 0), -1); // (B, T)
  const mask = cast(logicalNot(equal(targets, IGNORE_LABEL)), logits.dtype); // (B, T)
  return { nll: mul(sub(logsumexp(logits, -1), picked), mask), mask }; // (B, T) each
};

/**
 * Reduce masked token losses by `reduction` (see LossReduction).
 * @example reduceNll(nll, mask, 'sum') // (B, T), (B, T) → ()
 */
export const reduceNll = (nll: Tensor, mask: Tensor, reduction: LossReduction): Tensor => {
  if (reduction === 'sum') return div(sum(nll), maximum(sum(mask), 1)); // ()
  const perRow = div(sum(nll, -1), maximum(sum(mask, -1), 1)); // (B,)
  const rows = cast(logicalNot(equal(sum(mask, -1), 0)), nll.dtype); // (B,) rows with a trained token
  return div(sum(perRow), maximum(sum(rows), 1)); // ()
};

/**
 * The SFT loss of a Llama model on a batch: tokens (B, T) i32 and labels (B, T) i32 aligned with them (label =
 * token id where trained, −100 elsewhere, as encodeChat makes them); the shift happens here.
 * @example
 * const loss = sftLoss(cfg, params, tokens, labels, { reduction: 'mean' }); // ()
 * const [l, g] = valueAndGrad((p: LlamaParams) => sftLoss(cfg, p, tokens, labels))(params);
 */
export const sftLoss = (cfg: LlamaConfig, params: LlamaParams<Weight>, tokens: Tensor, labels: Tensor, opts: { reduction?: LossReduction } = {}): Tensor => {
  if (labels.dtype !== 'i32') throw new DTypeError(`sftLoss: labels must be i32, got ${labels.dtype}${fmt(labels.shape)}`);
  if (labels.rank !== 2 || tokens.rank !== 2 || labels.shape[0] !== tokens.shape[0] || labels.shape[1] !== tokens.shape[1]) {
    throw new ShapeError(`sftLoss: tokens ${fmt(tokens.shape)} and labels ${fmt(labels.shape)} must both be (B, T)`);
  }
  const logits = forward(cfg, params, tokens); // (B, T, V)
  const { nll, mask } = tokenNll(logits, shiftLabels(labels)); // (B, T) each
  return reduceNll(nll, mask, opts.reduction ?? 'mean'); // ()
};
