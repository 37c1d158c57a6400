// The models layer's public API: Llama-2 (config, parameters, forward, loading, generation), safetensors, tokenizer.

export {
  parseLlamaConfig, loadLlamaConfig, toHfConfig, checkVocab, llama2_7b, llama2_13b, llama2_70b, codellama_7b,
  type LlamaConfig, type ConfigError, type ConfigIssue,
} from './config.js';
export {
  forward, initParams, emptyCache, cacheWrite, checkParams, layerShapes, topShapes, layerKeys,
  type LlamaParams, type LlamaLayer, type LayerKey, type KvCache, type KvLayer, type ForwardOpts, type CachedForwardOpts, type InitOpts,
} from './llama.js';
export { loadLlama, saveLlama, toHfTensors, HF_NAMES, type LoadError } from './load.js';
export { generate, generateIds, sampleRow, type GenerateOptions, type GenerateStep, type SampleOptions } from './generate.js';
export { loadTokenizer, tokenizerFromModelProto, tokenizerFromJson, tokenizerFromLlama2c, type Tokenizer, type TokenizerError } from './tokenizer/index.js';
export { lora, withLora, merge, disable, checkAdapters, loraScale, LORA_TARGETS, type LoraAdapters, type LoraOpts, type LoraPair, type LoraTarget, type WithLoraOpts } from './lora.js';
export { saveAdapters, loadAdapters, peftKey, ADAPTER_CONFIG, ADAPTER_WEIGHTS } from './peft.js';
export { quantizeNf4, dequantizeNf4, absmaxOf, nf4Weight, quantizeBase, projectionBytes, NF4_CODE, DYNAMIC_MAP, type Nf4Quantized, type Nf4Nested, type QuantizeOpts, type Nf4Weight } from './nf4.js';
export { loadBnb4bit, saveBnb4bit, bnbTensors, readBnb, nf4FromWeight } from './bnb.js';
