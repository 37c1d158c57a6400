// DPO (Rafailov et al. 2023) as pure functions: the preference losses of four sequence log-prob tensors, the
// per-sequence log-probs of a (chosen; rejected) batch in one forward, and the loss the generic step trains with
// (the reference from disabled LoRA adapters, a frozen copy, or cached log-probs in the batch). No data loading
// (recipes/prefs.ts), no optimizer or loop (step.ts, train.ts), no cache files (recipes/dpo-ref.ts).

import { ShapeError, fmt } from '../core/shape.js';
import type { Tensor } from '../core/tensor.js';
import type { LlamaConfig } from '../models/config.js';
import { forward, type LlamaParams } from '../models/llama.js';
import { add, cast, equal, expandDims, greater, iota, logicalNot, logSigmoid, logsumexp, maximum, mean, mul, neg, relu, slice, square, stopGradient, sub, sum, where } from '../ops/index.js';
import { div } from '../ops/math.js';
import { linear, type Weight } from '../ops/nn.js';
import { disable, withLora, type LoraAdapters } from '../models/lora.js';

/**
 * The loss family. Formulas (Δ = (π_c − π_r) − (ref_c − ref_r), z = β·Δ):
 * - 'sigmoid': −(1−ε)·logσ(z) − ε·logσ(−z) on summed log-probs (DPO eq. 7; ε > 0 is cDPO, Mitchell 2023; TRL
 *   dpo_trainer.py `sigmoid`, EasyLM `dpo_label_smoothing`, open-instruct dpo_utils.py `dpo`).
 * - 'hinge': relu(1 − z) on summed log-probs (SLiC-HF form; TRL `hinge`, unchanged from Nov 2023 to HEAD).
 * - 'ipo': (Δ̄ − 1/(2β))² on per-token averaged log-probs (Azar et al. 2023 eq. 17; TRL HEAD divides by the
 *   completion length, as does TRL since early 2024; EasyLM's `use_ipo` and TRL's Dec 2023 first version applied it
 *   to summed log-probs: we follow the length-normalised form the issue and TRL HEAD use).
 * - 'dpo_norm': 'sigmoid' on per-token averaged log-probs (open-instruct HEAD `dpo_norm`, TRL `sigmoid_norm`).
 * - 'simpo': no reference, −(1−ε)·logσ(β(π̄_c − π̄_r) − γ) − ε·logσ(−…) on averaged log-probs (Meng et al. 2024
 *   eq. 6). γ here is the margin on the reward scale, as in the paper; open-instruct and TRL's CPO take
 *   `gamma_beta_ratio` = γ/β instead (default 0.3, so our default γ is 0.3·β).
 */
export type DpoKind = 'sigmoid' | 'hinge' | 'ipo' | 'dpo_norm' | 'simpo';
export const DPO_KINDS: readonly DpoKind[] = ['sigmoid', 'hinge', 'ipo', 'dpo_norm', 'simpo'];

/** Kinds that compare per-token averaged log-probs (they need the token counts). */
export const averagedKind = (k: DpoKind): boolean => k === 'ipo' || k === 'dpo_norm' || k === 'simpo';

export interface DpoOpts {
  /** β, the strength of the KL constraint (Tulu 2: 0.1). */
  readonly beta: number;
  readonly kind?: DpoKind;
  /** ε ∈ [0, 0.5): the assumed rate of flipped labels (cDPO); sigmoid, dpo_norm and simpo only. Default 0. */
  readonly labelSmoothing?: number;
  /** SimPO's target reward margin γ. Default 0.3·β (open-instruct's gamma_beta_ratio 0.3). */
  readonly gamma?: number;
  /**
   * RPO (TRL's `rpo_alpha`, Pang et al. 2024): α times the chosen sides' mean per-token negative log-likelihood,
   * −Σπ_c / Σn_c over the batch, added to the loss, so the chosen answers keep their likelihood while the margin
   * grows. Needs chosenTokens. Default 0 (off).
   */
  readonly rpoAlpha?: number;
  /** (N,) trained tokens of each chosen / rejected sequence: required by the averaged kinds and by rpoAlpha. */
  readonly chosenTokens?: Tensor;
  readonly rejectedTokens?: Tensor;
}

export interface DpoOut {
  /** () mean over the N pairs. */
  readonly loss: Tensor;
  /** (N,) β·(π_c − ref_c) (of averaged log-probs for the averaged kinds; β·π̄_c for simpo), no gradient. */
  readonly chosenRewards: Tensor;
  /** (N,) β·(π_r − ref_r), as chosenRewards. */
  readonly rejectedRewards: Tensor;
  /** () fraction of pairs with chosenReward > rejectedReward (ties count as wrong, as TRL's `>`). */
  readonly accuracy: Tensor;
  /** () mean of chosenReward − rejectedReward. */
  readonly margin: Tensor;
}

const check = (name: string, t: Tensor | null, N: number, dtype: string): void => {
  if (!t) return;
  if (t.rank !== 1 || t.shape[0] !== N || t.dtype !== dtype) throw new ShapeError(`dpoLoss: ${name} must be ${dtype}(${N},) like policyChosen, got ${t.dtype}${fmt(t.shape)}`);
};

/**
 * The DPO loss family over sequence log-probs (each (N,), summed over the trained tokens) of the policy and the
 * reference; `refChosen`/`refRejected` may be null for 'simpo' only. Gradients flow into the policy log-probs.
 * @example
 * const { loss, chosenRewards, accuracy } = dpoLoss(pc, pr, rc, rr, { beta: 0.1 }); // (N,) ×4 → () loss
 */
export const dpoLoss = (policyChosen: Tensor, policyRejected: Tensor, refChosen: Tensor | null, refRejected: Tensor | null, opts: DpoOpts): DpoOut => {
  const { beta, kind = 'sigmoid', labelSmoothing: eps = 0, gamma = 0.3 * beta, rpoAlpha = 0 } = opts;
  if (!(rpoAlpha >= 0) || !Number.isFinite(rpoAlpha)) throw new RangeError(`dpoLoss: rpoAlpha must be a non-negative number, got ${rpoAlpha}`);
  if (rpoAlpha > 0 && !opts.chosenTokens) throw new ShapeError('dpoLoss: rpoAlpha averages the chosen sides over their tokens: pass chosenTokens');
  if (!DPO_KINDS.includes(kind)) throw new RangeError(`dpoLoss: unknown kind '${String(kind)}' (expected one of ${DPO_KINDS.join(', ')})`);
  if (!(beta > 0) || !Number.isFinite(beta)) throw new RangeError(`dpoLoss: beta must be a positive number, got ${beta}`);
  if (!(eps >= 0 && eps < 0.5)) throw new RangeError(`dpoLoss: labelSmoothing must be in [0, 0.5), got ${eps}`);
  if (eps > 0 && (kind === 'hinge' || kind === 'ipo')) throw new RangeError(`dpoLoss: labelSmoothing applies to sigmoid, dpo_norm and simpo, not '${kind}'`);
  if (policyChosen.rank !== 1) throw new ShapeError(`dpoLoss: policyChosen must be (N,), got ${fmt(policyChosen.shape)}`);
  const [N, dt] = [policyChosen.shape[0]!, policyChosen.dtype];
  check('policyRejected', policyRejected, N, dt);
  check('refChosen', refChosen, N, dt);
  check('refRejected', refRejected, N, dt);
  check('chosenTokens', opts.chosenTokens ?? null, N, dt);
  check('rejectedTokens', opts.rejectedTokens ?? null, N, dt);
  if (kind !== 'simpo' && (!refChosen || !refRejected)) throw new ShapeError(`dpoLoss: kind '${kind}' needs reference log-probs (only simpo goes without)`);
  // Averaged kinds compare Σ logp / max(n, 1) (open-instruct's clamp(min=1)): each side over its own tokens.
  const { chosenTokens: nc, rejectedTokens: nr } = opts;
  if (averagedKind(kind) && (!nc || !nr)) throw new ShapeError(`dpoLoss: kind '${kind}' averages over tokens: pass chosenTokens and rejectedTokens`);
  const [chosenScale, rejectedScale] = averagedKind(kind)
    ? [(x: Tensor) => div(x, maximum(nc!, 1)), (x: Tensor) => div(x, maximum(nr!, 1))]
    : [(x: Tensor) => x, (x: Tensor) => x];
  // simpo scores the policy alone (references, if given, are not read).
  const sc = kind === 'simpo' ? chosenScale(policyChosen) : sub(chosenScale(policyChosen), chosenScale(refChosen!)); // (N,) chosen score (log-ratio)
  const sr = kind === 'simpo' ? rejectedScale(policyRejected) : sub(rejectedScale(policyRejected), rejectedScale(refRejected!)); // (N,)
  const delta = sub(sc, sr); // (N,)
  const smoothSigmoid = (z: Tensor) => (eps === 0 ? neg(logSigmoid(z)) : sub(mul(logSigmoid(z), -(1 - eps)), mul(logSigmoid(neg(z)), eps))); // (N,)
  const perPair =
    kind === 'hinge' ? relu(sub(1, mul(delta, beta)))
    : kind === 'ipo' ? square(sub(delta, 1 / (2 * beta)))
    : kind === 'simpo' ? smoothSigmoid(sub(mul(delta, beta), gamma))
    : smoothSigmoid(mul(delta, beta)); // (N,)
  const chosenRewards = stopGradient(mul(sc, beta)); // (N,)
  const rejectedRewards = stopGradient(mul(sr, beta)); // (N,)
  // RPO: + α · (−Σ π_c / Σ n_c), the chosen tokens' mean NLL (TRL: cross-entropy over the chosen half's labels).
  const nll = rpoAlpha > 0 ? neg(div(sum(policyChosen), maximum(sum(opts.chosenTokens!), 1))) : null; // ()
  return {
    loss: nll ? add(mean(perPair), mul(nll, rpoAlpha)) : mean(perPair), // ()
    chosenRewards,
    rejectedRewards,
    accuracy: mean(cast(greater(chosenRewards, rejectedRewards), dt)), // ()
    margin: mean(sub(chosenRewards, rejectedRewards)), // ()
  };
};

export interface SeqLogprobs {
  /** (B,) Σ over trained positions of log softmax(logits_{t−1})[labels_t]. */
  readonly logps: Tensor;
  /** (B,) the number of trained positions (labels ≠ −100 after the first), in the log-probs' dtype. */
  readonly tokens: Tensor;
}

export interface SeqLogprobsOpts {
  /** Apply the LM head to this many positions at a time (smaller transient logits); default all at once. */
  readonly chunk?: number;
  readonly ignoreIndex?: number;
}

/**
 * Per-sequence summed log-probabilities of the labels, with the causal shift inside (position t predicts label
 * t+1; −100 ignored), from the model's hidden states and the LM head: each chunk's logits feed a one-hot select
 * (iota compare) and a logsumexp, and nothing else reads them.
 * @example const { logps, tokens } = sequenceLogprobs(cfg, params, ids, labels) // (B, T) i32 ×2 → (B,), (B,)
 */
export const sequenceLogprobs = (cfg: LlamaConfig, params: LlamaParams<Weight>, tokens: Tensor, labels: Tensor, opts: SeqLogprobsOpts = {}): SeqLogprobs => {
  if (tokens.rank !== 2 || labels.rank !== 2 || tokens.shape[0] !== labels.shape[0] || tokens.shape[1] !== labels.shape[1] || labels.dtype !== 'i32') {
    throw new ShapeError(`sequenceLogprobs: tokens ${tokens.dtype}${fmt(tokens.shape)} and labels ${labels.dtype}${fmt(labels.shape)} must both be (B, T), labels i32`);
  }
  const [B, T] = tokens.shape as [number, number];
  if (T < 2) throw new ShapeError(`sequenceLogprobs: sequences need at least 2 positions to predict a label, got T = ${T}`);
  const hidden = forward(cfg, params, tokens, { hidden: true }); // (B, T, dim)
  const head = cfg.tieEmbeddings ? params.tokEmb : params.out!; // (V, dim)
  const V = cfg.vocabSize;
  const chunk = Math.max(1, Math.min(opts.chunk ?? T - 1, T - 1));
  const ignore = opts.ignoreIndex ?? -100;
  let logps: Tensor | null = null, count: Tensor | null = null;
  for (let lo = 0; lo < T - 1; lo += chunk) {
    const hi = Math.min(lo + chunk, T - 1);
    const h = slice(hidden, [0, lo, 0], [B, hi, hidden.shape[2]!]); // (B, C, dim): positions lo … hi−1
    const next = slice(labels, [0, lo + 1], [B, hi + 1]); // (B, C): the labels they predict
    const logits = linear(h, head); // (B, C, V)
    const picked = sum(where(equal(expandDims(next, -1), iota(V, 'i32')), logits, 0), -1); // (B, C)
    const mask = cast(logicalNot(equal(next, ignore)), logits.dtype); // (B, C)
    const lp = sum(mul(sub(picked, logsumexp(logits, -1)), mask), -1); // (B,)
    const n = sum(mask, -1); // (B,)
    [logps, count] = logps && count ? [add(logps, lp), add(count, n)] : [lp, n];
  }
  return { logps: logps!, tokens: count! };
};

export interface PairLogprobs {
  readonly chosen: Tensor; // (N,) summed log-probs of the chosen rows
  readonly rejected: Tensor; // (N,)
  readonly chosenTokens: Tensor; // (N,) trained tokens
  readonly rejectedTokens: Tensor; // (N,)
}

/**
 * Log-probs of N pairs stored as 2N rows (chosen rows first, then the rejected ones, as prefs.ts batches them),
 * in one forward of the whole (2N, T) batch, split after.
 * @example const { chosen, rejected } = pairLogprobs(cfg, params, tokens, labels) // (2N, T) ×2 → (N,) each
 */
export const pairLogprobs = (cfg: LlamaConfig, params: LlamaParams<Weight>, tokens: Tensor, labels: Tensor, opts: SeqLogprobsOpts = {}): PairLogprobs => {
  const B = tokens.shape[0]!;
  if (B % 2 !== 0) throw new ShapeError(`pairLogprobs: a batch of pairs has an even number of rows (chosen then rejected), got ${fmt(tokens.shape)}`);
  const N = B / 2;
  const { logps, tokens: n } = sequenceLogprobs(cfg, params, tokens, labels, opts); // (2N,) each
  const half = (x: Tensor, i: 0 | 1) => slice(x, [i * N], [(i + 1) * N]); // (N,)
  return { chosen: half(logps, 0), rejected: half(logps, 1), chosenTokens: half(n, 0), rejectedTokens: half(n, 1) };
};

/** A DPO micro-batch: N pairs as 2N rows, with the reference log-probs when they come from a cache. */
export interface DpoBatch {
  readonly tokens: Tensor; // (2N, T) i32: chosen rows, then rejected
  readonly labels: Tensor; // (2N, T) i32
  readonly refChosen?: Tensor; // (N,) cached reference log-probs (summed)
  readonly refRejected?: Tensor; // (N,)
}

/** Where the policy's parameters, and the reference's when a step computes them, come from. */
export interface DpoModel<P, F> {
  readonly policy: (trainable: P, frozen: F) => LlamaParams<Weight>;
  /** Absent: every batch carries cached reference log-probs (or the kind is simpo). */
  readonly reference?: (trainable: P, frozen: F) => LlamaParams<Weight>;
}

/** (a) LoRA: trainable = adapters, frozen = the base; the reference is the same base with the adapters disabled
 * (open-instruct `disable_adapter()`, TRL without a ref_model): no second copy of the weights. */
export const loraReference: DpoModel<LoraAdapters, LlamaParams<Weight>> = {
  policy: (a, base) => withLora(base, a),
  reference: (a, base) => disable(withLora(base, a)),
};

/** (c) Full fine-tuning: trainable = the policy, frozen = a separate frozen copy (EasyLM's reference params). */
export const frozenReference: DpoModel<LlamaParams, LlamaParams<Weight>> = { policy: (p) => p, reference: (_p, ref) => ref };

/** (b) Cached reference log-probs in every batch: the policy alone is run; `policy` says how to build it. */
export const cachedReference = <P, F>(policy: (trainable: P, frozen: F) => LlamaParams<Weight>): DpoModel<P, F> => ({ policy });

/** Metric names (TRL's and open-instruct's), each a () mean over the batch's pairs. */
export type DpoMetrics = {
  readonly 'rewards/chosen': Tensor;
  readonly 'rewards/rejected': Tensor;
  readonly 'rewards/accuracy': Tensor;
  readonly 'rewards/margin': Tensor;
  readonly 'logps/chosen': Tensor;
  readonly 'logps/rejected': Tensor;
};

/** A LossFn (step.ts) whose metrics are typed. */
export type DpoLossFn<P, F> = (trainable: P, frozen: F, batch: DpoBatch) => { readonly loss: Tensor; readonly aux: DpoMetrics };

/**
 * The loss the generic step (step.ts `trainStep`) trains with: policy log-probs of the batch in one forward, the
 * reference's from the batch (cache) or from `model.reference` (no gradient), `dpoLoss`, and the reward metrics.
 * @example const step = trainStep(dpoLossFn(cfg, loraReference, { beta: 0.1 }), { optimizer: adamw({ lr: 5e-7 }) })
 */
export const dpoLossFn = <P, F>(cfg: LlamaConfig, model: DpoModel<P, F>, opts: DpoOpts & SeqLogprobsOpts): DpoLossFn<P, F> => (trainable, frozen, batch) => {
  const pol = pairLogprobs(cfg, model.policy(trainable, frozen), batch.tokens, batch.labels, opts);
  let ref: { c: Tensor; r: Tensor } | null = null;
  if (!batch.refChosen !== !batch.refRejected) throw new TypeError(`dpoLossFn: the batch has ${batch.refChosen ? 'refChosen but no refRejected' : 'refRejected but no refChosen'}: cached reference log-probs come in pairs`);
  if (batch.refChosen && batch.refRejected) ref = { c: batch.refChosen, r: batch.refRejected };
  else if (model.reference && opts.kind !== 'simpo') {
    const r = pairLogprobs(cfg, model.reference(trainable, frozen), batch.tokens, batch.labels, opts);
    ref = { c: stopGradient(r.chosen), r: stopGradient(r.rejected) };
  }
  const out = dpoLoss(pol.chosen, pol.rejected, ref?.c ?? null, ref?.r ?? null, { ...opts, chosenTokens: pol.chosenTokens, rejectedTokens: pol.rejectedTokens });
  const aux: DpoMetrics = {
    'rewards/chosen': mean(out.chosenRewards), 'rewards/rejected': mean(out.rejectedRewards), 'rewards/accuracy': out.accuracy,
    'rewards/margin': out.margin, 'logps/chosen': mean(stopGradient(pol.chosen)), 'logps/rejected': mean(stopGradient(pol.rejected)),
  };
  return { loss: out.loss, aux };
};
