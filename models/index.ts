// The models layer's public API: Llama-2 (config, parameters, forward, loading, generation), safetensors, tokenizer.

export {
  parseLlamaConfig, loadLlamaConfig, toHfConfig, llama2_7b, llama2_13b, llama2_70b, codellama_7b,
  type LlamaConfig, type ConfigError, type ConfigIssue,
} from './config.js';
export {
  forward, initParams, emptyCache, cacheWrite, checkParams, layerShapes, topShapes, layerKeys,
  type LlamaParams, type LlamaLayer, type LayerKey, type KvCache, type KvLayer, type ForwardOpts, type CachedForwardOpts, type InitOpts,
} from './llama.js';
export { loadLlama, saveLlama, toHfTensors, HF_NAMES, type LoadError } from './load.js';
export { generate, generateIds, sampleRow, type GenerateOptions, type GenerateStep, type SampleOptions } from './generate.js';
export { loadTokenizer, tokenizerFromModelProto, tokenizerFromJson, type Tokenizer, type TokenizerError } from './tokenizer/index.js';
