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
