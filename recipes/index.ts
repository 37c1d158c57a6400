// The recipes layer's public API (Tulu 2: chat format, data, SFT, LoRA, DPO). Each helper adds its own line.

export {
  encodeChat, chatPrompt, pyStrip, IGNORE, CHAT_VARIANTS, ChatError,
  type Role, type Message, type ChatVariant, type EncodeChatOpts,
} from './chat.js';
export {
  loadChatData, readChatRows, parseChatRow, describeData, makeBatches, batchTensors, defaultPadId, seededPermutation, ChatRow, ChatMessage,
  type Example, type Batch, type BatchOpts, type DataError, type DataSource, type LoadChatOpts, type FileStats, type ChatData,
} from './data.js';
export {
  parsePrefs, readPrefs, toPair, encodePairs, makePrefBatches, prefBatchTensors, shuffledOrder, PrefError, MessagesPrefRow, StringPrefRow,
  type PrefPair, type ParsedPrefs, type EncodedPair, type EncodePairsOpts, type PrefBatch, type PrefBatchOpts,
} from './prefs.js';
export { sftLoss, shiftLabels, tokenNll, reduceNll, IGNORE_LABEL, type LossReduction } from './loss.js';
export { adamw, clipByGlobalNorm, globalNorm, leafPaths, type Optimizer, type AdamState, type AdamwOpts, type Lr } from './optim.js';
export { linearWarmupDecay, cosineWarmupDecay, constant, warmupFromRatio, makeSchedule, type Schedule, type ScheduleName, type WarmupDecayOpts } from './schedule.js';
export { trainStep, stepBody, type TrainStep, type StepFn, type StepOut, type StepOpts, type LossFn, type LossOut } from './step.js';
export { trainLoop, NonFiniteLossError, type TrainLoopOpts, type TrainResult, type StepMetrics } from './train.js';
export {
  writeCheckpoint, readOptState, readTrainerState, resolveCheckpoint, listCheckpoints, pruneCheckpoints, checkpointName, copyInto,
  TrainerState, CheckpointWriteError, type CheckpointParts, type WriteHooks,
} from './checkpoint.js';
export { runSft, parseSftConfig, resolveSftConfig, SFT_DEFAULTS, TULU2_SFT, SFT_KEYS, type SftConfig, type SftConfigPartial, type SftRun } from './sft.js';
export {
  dpoLoss, sequenceLogprobs, pairLogprobs, dpoLossFn, loraReference, frozenReference, cachedReference, averagedKind, DPO_KINDS,
  type DpoKind, type DpoOpts, type DpoOut, type SeqLogprobs, type SeqLogprobsOpts, type PairLogprobs, type DpoBatch, type DpoModel, type DpoMetrics, type DpoLossFn,
} from './dpo.js';
export { computeRefLogps, cachedRefLogps, refCacheKey, hashPairs, hashParams, refBatch, type RefLogps, type RefCacheParts, type RefPassOpts } from './dpo-ref.js';
export { runDpo, parseDpoConfig, resolveDpoConfig, DPO_DEFAULTS, TULU2_DPO, DPO_KEYS, type DpoConfig, type DpoConfigPartial, type DpoRun } from './dpo-run.js';
export { chartSvg, svgToPng, type LineChart, type Point } from './chart.js';
export {
  readMmlu, readGsm8k, parseCsv, mmluPrompt, gsmPrompt, lastNumber, sameNumber, accuracy, nextTokenLogits, evalMultipleChoice, greedyContinuations, greedyReplies, evalGsm8k,
  type EvalError, type McItem, type McSet, type GsmItem, type Accuracy, type McResult, type GenResult,
} from './eval.js';
