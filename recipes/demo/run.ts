// `camelid demo`: Tulu 2 in miniature on data, a tokenizer and a model camelid makes itself. A tiny Llama is
// pretrained on plain task text, instruction-tuned (SFT, assistant-only labels) on Tulu-format chats, then tuned
// with DPO through LoRA adapters (the reference is the disabled adapter) on new problems, the right answer chosen
// over the model's own wrong one; greedy exact-match accuracy on held-out prompts is measured after every stage.
// The supervised data follows the prompts' format requests only one time in four (tasks.ts): SFT learns the
// slip, the preferences correct it. Writes each stage's Hugging Face checkpoint, metrics.jsonl, a summary and a chart
// to the output folder.

import { mkdir, readFile, writeFile, appendFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { getBackend, realize } from '../../core/backend.js';
import { flatten } from '../../core/tree.js';
import type { Tensor } from '../../core/tensor.js';
import { key } from '../../ops/random.js';
import type { LlamaConfig } from '../../models/config.js';
import { initParams, type LlamaParams } from '../../models/llama.js';
import { saveLlama } from '../../models/load.js';
import { loadTokenizer, type Tokenizer } from '../../models/tokenizer/index.js';
import { encodeChat, type Message } from '../chat.js';
import { batchTensors, makeBatches, type Batch, type Example } from '../data.js';
import { sftLoss } from '../loss.js';
import { adamw } from '../optim.js';
import { linearWarmupDecay, warmupFromRatio } from '../schedule.js';
import { trainStep } from '../step.js';
import { trainLoop } from '../train.js';
import { greedyContinuations, greedyReplies } from '../eval.js';
import { dpoLossFn, loraReference, type DpoBatch } from '../dpo.js';
import { encodePairs, makePrefBatches, prefBatchTensors } from '../prefs.js';
import { lora, merge, type LoraAdapters } from '../../models/lora.js';
import { saveAdapters } from '../../models/peft.js';
import type { Weight } from '../../ops/nn.js';
import { followsFormat, isCorrect, LETTERS, tasks, type Task } from './tasks.js';
import { trainTokenizer } from './tokenizer.js';

export interface DemoOpts {
  readonly out: string;
  readonly seed: number;
  /** A short run (150 + 300 + 30 steps) for tests and a first look. */
  readonly quick: boolean;
  /** Steps of each stage (pretrain, SFT, DPO); default by `quick`. */
  readonly steps?: { readonly pretrain: number; readonly sft: number; readonly dpo: number };
  readonly log: (line: string) => void;
  readonly progress?: 'auto' | 'bar' | 'lines' | 'none';
}

export interface StageResult {
  readonly stage: string;
  readonly accuracy: number;
  readonly correct: number;
  readonly n: number;
  /** Held-out prompts with a format request, and how many replies followed it. */
  readonly format: { readonly followed: number; readonly asked: number };
  /** Exact match of the same problems asked as plain text, the answer continuing it (see Prompting). */
  readonly plain: { readonly accuracy: number; readonly correct: number };
  /** DPO only: its batches' reward accuracy and margin at the first and the last logged step. */
  readonly rewards?: { readonly accuracy: readonly [number, number]; readonly margin: readonly [number, number] };
  readonly loss: number | null; // the stage's last training loss
  readonly seconds: number;
  readonly tokensPerSec: number | null;
  readonly checkpoint: string | null;
}

/** The model: a Llama-2 block structure at toy size (stories260K-like widths). */
export const demoConfig = (vocabSize: number): LlamaConfig => ({
  dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, headDim: 8, vocabSize, seqLen: 64,
  normEps: 1e-5, ropeTheta: 10000, tieEmbeddings: false, bosId: 1, eosId: 2,
});

const T = 32; // every batch is padded to 32 tokens: one compiled step per stage
const BATCH = 32;
/** Held-out prompts (200: a standard error of at most 3.5 points), scored in batches of EVAL_BATCH. */
const HELD_OUT = 200;
/** One compiled prefill and decode step serves every evaluation and the DPO stage's own answers. */
const EVAL_BATCH = 50;

const chat = (t: Task, answer: string): Message[] => [{ role: 'user', content: t.prompt }, { role: 'assistant', content: answer }];

/** Plain text for pretraining: the problem and its demonstration, no chat markers, every token trained. */
const plainExample = (tok: Tokenizer, t: Task): Example => {
  const ids = [...tok.encode(`${t.prompt} ${t.shown}`), tok.eosId].slice(0, T);
  return { ids, labels: [-100, ...ids.slice(1)] };
};

/**
 * How a model is asked: 'chat', a Tulu user turn (how open-instruct evaluates tuned models), or 'plain', the problem
 * as text that the answer continues (how it evaluates base models, without the chat template; the pretraining format).
 */
export type Prompting = 'plain' | 'chat';

/** Greedy answers to the problems, in the evaluation's batches (its compiled shapes). */
const greedyAnswers = async (cfg: LlamaConfig, params: LlamaParams, tok: Tokenizer, ts: readonly Task[], prompt: Prompting = 'chat'): Promise<string[]> => {
  const opts = { maxTokens: 8, batchSize: EVAL_BATCH };
  const replies = prompt === 'chat'
    ? await greedyReplies(cfg, params, tok, ts.map((t) => [{ role: 'user' as const, content: t.prompt }]), opts)
    : await greedyContinuations(cfg, params, tok, ts.map((t) => tok.encode(t.prompt)), opts);
  return replies.map((a) => a.trim());
};

/** Exact match of greedy replies to the held-out prompts asked as chats and in plain text; format requests followed in the chats. */
const accuracyOf = async (cfg: LlamaConfig, params: LlamaParams, tok: Tokenizer, held: readonly Task[]): Promise<{ scores: Pick<StageResult, 'accuracy' | 'correct' | 'n' | 'format' | 'plain'>; replies: string[] }> => {
  const right = (replies: readonly string[]) => held.filter((t, i) => isCorrect(t, replies[i]!)).length;
  const replies = await greedyAnswers(cfg, params, tok, held, 'chat');
  const plain = right(await greedyAnswers(cfg, params, tok, held, 'plain'));
  const asked = held.flatMap((t, i) => (t.format ? [replies[i]!] : []));
  const correct = right(replies);
  const format = { followed: asked.filter(followsFormat).length, asked: asked.length };
  return { scores: { accuracy: correct / held.length, correct, n: held.length, format, plain: { accuracy: plain / held.length, correct: plain } }, replies };
};

/** Saves a stage's model as a Hugging Face folder with the demo's tokenizer beside it. */
const saveStage = (cfg: LlamaConfig, tokJson: string) => async (d: string, params: LlamaParams): Promise<void> => {
  const r = await saveLlama(d, cfg, params)();
  if (E.isLeft(r)) throw new Error(r.left.message);
  await writeFile(join(d, 'tokenizer.json'), tokJson);
};

/** One supervised stage (pretraining or SFT): AdamW with linear warmup/decay through the shared loop. */
const supervised = async (o: {
  name: string; cfg: LlamaConfig; params: LlamaParams; examples: readonly Example[]; steps: number; lr: number; seed: number;
  out: string; tokJson: string; progress: DemoOpts['progress']; log: (s: string) => void;
}): Promise<{ params: LlamaParams; loss: number; tokensPerSec: number }> => {
  const { cfg } = o;
  const perEpoch = Math.floor(o.examples.length / BATCH);
  const batches: Batch[] = [];
  for (let e = 0; batches.length < o.steps; e++) batches.push(...makeBatches(o.examples, { batchSize: BATCH, padId: cfg.eosId, seed: o.seed, epoch: e, padToMultiple: T, dropLast: true }).slice(0, perEpoch));
  const optimizer = adamw({ lr: o.lr });
  const step = trainStep((p: LlamaParams, _f: null, b: { tokens: Tensor; labels: Tensor }) => sftLoss(cfg, p, b.tokens, b.labels), { optimizer, clipNorm: 1 });
  const t0 = performance.now();
  const r = await trainLoop({
    step, trainable: o.params, optState: optimizer.init(o.params), frozen: null,
    batchAt: (i) => batchTensors(batches[i]!), tokensOf: () => BATCH * T, totalSteps: o.steps,
    schedule: linearWarmupDecay({ peak: o.lr, warmupSteps: warmupFromRatio(o.steps, 0.03), totalSteps: o.steps }),
    output: o.out, saveModel: saveStage(cfg, o.tokJson), logEvery: 10, progress: o.progress ?? 'auto', log: o.log,
  });
  return { params: r.trainable, loss: r.losses.at(-1)!, tokensPerSec: (o.steps * BATCH * T) / ((performance.now() - t0) / 1000) };
};

/**
 * Preference pairs: chosen = the right answer; rejected = the model's own answer where it is wrong (on-policy, as
 * iterative RPO (Pang et al. 2024) takes its rejected side from the model's wrong generations), else the problem's
 * generated plausible mistake. `own` covers a prefix of `ts` (the rest use the generated mistakes).
 */
export const preferencePairs = (ts: readonly Task[], own: readonly string[] = []): { chosen: Message[]; rejected: Message[] }[] =>
  ts.map((t, i) => {
    const mine = own[i];
    return { chosen: chat(t, t.answer), rejected: chat(t, mine !== undefined && mine !== '' && !isCorrect(t, mine) ? mine : t.wrong) };
  });

/** DPO (sigmoid, β 0.1, with RPO's NLL term) through LoRA adapters r 8 on `base`; checkpoints hold the adapter and the merged model. */
export const dpoStage = async (o: {
  cfg: LlamaConfig; base: LlamaParams; tok: Tokenizer; tokJson: string; pairs: readonly { chosen: Message[]; rejected: Message[] }[];
  steps: number; seed: number; out: string; progress: DemoOpts['progress']; log: (s: string) => void; lr?: number; rpoAlpha?: number;
}): Promise<{ trainable: LoraAdapters; losses: readonly number[] }> => {
  const { cfg, base } = o;
  const { pairs } = encodePairs(o.tok, o.pairs, { maxSeqLen: T });
  const half = BATCH / 2;
  const prefBatches = Array.from({ length: Math.ceil(o.steps / Math.floor(pairs.length / half)) }, (_, e) =>
    makePrefBatches(pairs, { batchSize: half, padId: cfg.eosId, seed: o.seed, epoch: e, padToMultiple: T, keepLast: false })).flat();
  const adapters0 = lora(base, { r: 8, alpha: 16, dropout: 0, key: key(o.seed + 1) });
  const lr = o.lr ?? 2e-3;
  const optimizer = adamw({ lr });
  // RPO (α 1, the paper's): the chosen answers' NLL keeps their likelihood up; plain DPO lowered both sides' log-probs
  // here and greedy exact match fell after DPO (26% → 18% in a --quick run).
  const step = trainStep(dpoLossFn(cfg, loraReference, { beta: 0.1, kind: 'sigmoid', rpoAlpha: o.rpoAlpha ?? 1 }), { optimizer, clipNorm: 1 });
  return trainLoop({
    step, trainable: adapters0, optState: optimizer.init(adapters0), frozen: base as LlamaParams<Weight>,
    batchAt: (i): DpoBatch => prefBatchTensors(prefBatches[i]!), tokensOf: () => BATCH * T, totalSteps: o.steps,
    schedule: linearWarmupDecay({ peak: lr, warmupSteps: warmupFromRatio(o.steps, 0.1), totalSteps: o.steps }),
    output: o.out, logEvery: 5, progress: o.progress ?? 'auto', log: o.log,
    saveModel: async (d, a: LoraAdapters) => {
      const s = await saveAdapters(join(d, 'adapter'), a)();
      if (E.isLeft(s)) throw new Error(s.left.message);
      await saveStage(cfg, o.tokJson)(d, merge(base, a));
    },
  });
};

/**
 * Runs the whole pipeline; returns one row per stage (untrained, pretrain, sft, dpo).
 * @example const rows = await runDemo({ out: 'camelid-demo', seed: 0, quick: true, log: console.log });
 */
export const runDemo = async (o: DemoOpts): Promise<StageResult[]> => {
  const backend = (await getBackend()).name;
  const steps = o.steps ?? (o.quick ? { pretrain: 150, sft: 300, dpo: 30 } : { pretrain: 1500, sft: 1000, dpo: 200 });
  const nHeld = HELD_OUT;
  await rm(o.out, { recursive: true, force: true });
  await mkdir(o.out, { recursive: true });
  o.log(`camelid demo on ${backend}${backend === 'webgpu' ? ' (each kernel compiles for this adapter when it first runs: on a CPU Vulkan driver a first run takes minutes, on quicker kernels while the tuned ones compile in the background; later runs reuse the shader cache)' : ''}`);

  // Data: problems for training and different ones held out; the tokenizer learnt from their text.
  const train = tasks(o.seed, 4000);
  const seen = new Set(train.map((t) => t.prompt));
  const held = tasks(o.seed + 1_000_003, 4 * nHeld).filter((t) => !seen.has(t.prompt)).slice(0, nHeld);
  const tokJson = JSON.stringify(trainTokenizer(train.map((t) => `<|user|>\n${t.prompt}\n<|assistant|>\n${t.answer}`), 80, `${LETTERS}${LETTERS.toUpperCase()}0123456789[]`));
  await writeFile(join(o.out, 'tokenizer.json'), tokJson);
  const tokE = await loadTokenizer(join(o.out, 'tokenizer.json'))();
  if (E.isLeft(tokE)) throw new Error(tokE.left.message);
  const tok = tokE.right;
  const cfg = demoConfig(tok.vocabSize);
  o.log(`data: ${train.length} generated problems (${held.length} others held out), tokenizer of ${tok.vocabSize} pieces; model: ${cfg.nLayers} layers, dim ${cfg.dim}`);

  const rows: StageResult[] = [];
  const record = async (r: StageResult) => {
    rows.push(r);
    await appendFile(join(o.out, 'metrics.jsonl'), JSON.stringify({ stage: r.stage, accuracy: r.accuracy, correct: r.correct, n: r.n, format: r.format, plain: r.plain, loss: r.loss, seconds: r.seconds, ...(r.rewards ? { rewards: r.rewards } : {}) }) + '\n');
    o.log(`${r.stage}: exact match ${(100 * r.accuracy).toFixed(1)}% (${r.correct}/${r.n}; asked in plain text ${r.plain.correct}/${r.n}), format requests followed ${r.format.followed}/${r.format.asked}${r.loss !== null ? `, final loss ${r.loss.toFixed(3)}` : ''}${r.rewards ? `, reward accuracy ${r.rewards.accuracy.map((x) => x.toFixed(2)).join(' → ')}, margin ${r.rewards.margin.map((x) => x.toFixed(2)).join(' → ')}` : ''}, ${r.seconds.toFixed(1)} s`);
    held.slice(0, 3).forEach((t, i) => o.log(`  ${t.prompt} → ${JSON.stringify(acc.replies[i]!.trim())} ${isCorrect(t, acc.replies[i]!) ? '✓' : `✗ (${t.answer})`}`));
  };

  let params = initParams(cfg, key(o.seed));
  await realize(...flatten(params).leaves); // once, not fused into every first use
  let t0 = performance.now();
  let acc = await accuracyOf(cfg, params, tok, held);
  await record({ stage: 'untrained', ...acc.scores, loss: null, seconds: (performance.now() - t0) / 1000, tokensPerSec: null, checkpoint: null });

  for (const [name, examples, n, lr] of [
    ['pretrain', train.map((t) => plainExample(tok, t)), steps.pretrain, 3e-3],
    ['sft', train.map((t) => encodeChat(tok, chat(t, t.shown), { maxSeqLen: T })), steps.sft, 1e-3],
  ] as const) {
    t0 = performance.now();
    const dir = join(o.out, name);
    const s = await supervised({ name, cfg, params, examples, steps: n, lr, seed: o.seed, out: dir, tokJson, progress: o.progress, log: o.log });
    params = s.params;
    acc = await accuracyOf(cfg, params, tok, held);
    await record({ stage: name, ...acc.scores, loss: s.loss, seconds: (performance.now() - t0) / 1000, tokensPerSec: s.tokensPerSec, checkpoint: dir });
  }
  // DPO through LoRA adapters on the SFT model: chosen = the right answer, rejected = the model's own greedy answer
  // where it is wrong (on-policy), else a plausible mistake; the reference is the model with the adapters disabled.
  t0 = performance.now();
  const dir = join(o.out, 'dpo');
  // New problems, as Tulu 2's DPO prompts are not its SFT data's (never the held-out ones): one epoch of pairs.
  const heldOut = new Set(held.map((t) => t.prompt));
  const asked = tasks(o.seed + 2_000_003, 2 * steps.dpo * (BATCH / 2)).filter((t) => !heldOut.has(t.prompt)).slice(0, steps.dpo * (BATCH / 2));
  const own = await greedyAnswers(cfg, params, tok, asked);
  o.log(`dpo: the SFT model's own answers to ${own.length} new problems, ${own.filter((a, i) => !isCorrect(asked[i]!, a)).length} of them wrong, are rejected answers (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const base = params;
  const r = await dpoStage({ cfg, base, tok, tokJson, pairs: preferencePairs(asked, own), steps: steps.dpo, seed: o.seed, out: dir, progress: o.progress, log: o.log });
  params = merge(base, r.trainable);
  await realize(...flatten(params).leaves); // dense once, not recomputed inside every evaluation kernel
  acc = await accuracyOf(cfg, params, tok, held);
  const secs = (performance.now() - t0) / 1000;
  const logged = (await readFile(join(dir, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>).filter((m) => 'rewards/accuracy' in m);
  const ends = (k: string): [number, number] => [logged[0]![k]!, logged.at(-1)![k]!];
  await record({
    stage: 'dpo', ...acc.scores, loss: r.losses.at(-1)!,
    seconds: secs, tokensPerSec: (steps.dpo * BATCH * T) / secs, checkpoint: dir,
    ...(logged.length > 0 ? { rewards: { accuracy: ends('rewards/accuracy'), margin: ends('rewards/margin') } } : {}),
  });
  return rows;
};
