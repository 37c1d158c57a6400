// Llama model configuration: the Hugging Face `config.json` codec (lenient: unknown keys ignored), its mapping to
// our camelCase `LlamaConfig`, and the published Llama-2 / CodeLlama presets. Plain data: no tensors, no model code.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import * as t from 'io-ts';
import { ioProblem } from './safetensors/header.js';

/** A Llama-architecture model's shape and numerics, named as in the model code. */
export interface LlamaConfig {
  readonly dim: number; // hidden_size
  readonly hiddenDim: number; // intermediate_size (SwiGLU width)
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number; // < nHeads: grouped-query attention
  readonly headDim: number;
  readonly vocabSize: number;
  readonly seqLen: number; // max_position_embeddings
  readonly normEps: number;
  readonly ropeTheta: number;
  readonly tieEmbeddings: boolean; // output projection shares the token embedding
  readonly bosId: number;
  readonly eosId: number;
}

/** One thing wrong with a config: which field, what was expected, what was found. */
export interface ConfigIssue {
  readonly field: string;
  readonly expected: string;
  readonly got: string;
}

export interface ConfigError {
  readonly _tag: 'ConfigError';
  readonly file: string;
  readonly issues: readonly ConfigIssue[];
  readonly message: string;
}

export const configError = (file: string, issues: readonly ConfigIssue[], what = 'invalid Llama config'): ConfigError => ({
  _tag: 'ConfigError',
  file,
  issues,
  message: `${file}: ${what}` + (issues.length ? ': ' : '') + issues.map((i) => `field "${i.field}": expected ${i.expected}, got ${i.got}`).join('; '),
});

const refined = (name: string, ok: (u: unknown) => boolean): t.Type<number, number, unknown> =>
  new t.Type<number, number, unknown>(
    name,
    (u): u is number => ok(u),
    (u, c) => (ok(u) ? t.success(u as number) : t.failure(u, c)),
    t.identity,
  );

const PositiveInt = refined('a positive integer', (u) => typeof u === 'number' && Number.isSafeInteger(u) && u > 0);
const NonNegativeInt = refined('a non-negative integer', (u) => typeof u === 'number' && Number.isSafeInteger(u) && u >= 0);
const PositiveNumber = refined('a positive finite number', (u) => typeof u === 'number' && Number.isFinite(u) && u > 0);

// Absent or JSON null both mean "use the default"; io-ts `t.type` hands a missing key to its codec as undefined.
const optional = <A>(codec: t.Type<A, A, unknown>): t.Type<A | undefined, A | undefined, unknown> =>
  new t.Type<A | undefined, A | undefined, unknown>(
    `${codec.name} (or absent)`,
    (u): u is A | undefined => u === undefined || codec.is(u),
    (u, c) => (u === undefined || u === null ? t.success(undefined) : codec.validate(u, c)),
    t.identity,
  );

/**
 * Hugging Face `LlamaForCausalLM` config.json. Keys we do not model are ignored, except those that would change the
 * computation silently (RoPE scaling, biases, another activation): those must be absent, null or the Llama value.
 */
export const HfLlamaConfig = t.type({
  hidden_size: PositiveInt,
  intermediate_size: PositiveInt,
  num_hidden_layers: PositiveInt,
  num_attention_heads: PositiveInt,
  vocab_size: PositiveInt,
  rms_norm_eps: PositiveNumber,
  num_key_value_heads: optional(PositiveInt),
  head_dim: optional(PositiveInt),
  rope_theta: optional(PositiveNumber),
  tie_word_embeddings: optional(t.boolean),
  max_position_embeddings: optional(PositiveInt),
  bos_token_id: optional(NonNegativeInt),
  eos_token_id: optional(NonNegativeInt),
  hidden_act: optional(t.literal('silu')),
  rope_scaling: optional(new t.Type<never>('null (RoPE scaling is unsupported)', (_): _ is never => false, t.failure, t.identity)),
  attention_bias: optional(t.literal(false)),
  mlp_bias: optional(t.literal(false)),
});
export type HfLlamaConfig = t.TypeOf<typeof HfLlamaConfig>;

const show = (u: unknown): string => {
  if (u === undefined) return 'nothing (field missing)';
  const s = JSON.stringify(u) ?? String(u);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

/** io-ts errors → one issue per field path, naming the expected type and the value found. */
export const reportIoTsErrors = (errors: t.Errors): ConfigIssue[] => {
  const seen = new Map<string, ConfigIssue>();
  for (const e of errors) {
    const field = e.context.slice(1).map((c) => c.key).join('.') || '(root)';
    const type = e.context[e.context.length - 1]?.type;
    // An object codec's name lists every field (hundreds of characters): say what kind of value was expected.
    const expected = type instanceof t.InterfaceType ? 'a JSON object' : type?.name ?? 'a valid value';
    if (!seen.has(field)) seen.set(field, { field, expected, got: show(e.value) });
  }
  return [...seen.values()];
};

const fromHf = (hf: HfLlamaConfig): E.Either<ConfigIssue[], LlamaConfig> => {
  const nHeads = hf.num_attention_heads;
  const nKvHeads = hf.num_key_value_heads ?? nHeads;
  const issues: ConfigIssue[] = [];
  if (hf.head_dim === undefined && hf.hidden_size % nHeads !== 0)
    issues.push({ field: 'hidden_size', expected: `a multiple of num_attention_heads (${nHeads}) when head_dim is absent`, got: show(hf.hidden_size) });
  if (nHeads % nKvHeads !== 0)
    issues.push({ field: 'num_key_value_heads', expected: `a divisor of num_attention_heads (${nHeads})`, got: show(nKvHeads) });
  if (issues.length > 0) return E.left(issues);
  return E.right({
    dim: hf.hidden_size,
    hiddenDim: hf.intermediate_size,
    nLayers: hf.num_hidden_layers,
    nHeads,
    nKvHeads,
    headDim: hf.head_dim ?? hf.hidden_size / nHeads,
    vocabSize: hf.vocab_size,
    seqLen: hf.max_position_embeddings ?? 2048,
    normEps: hf.rms_norm_eps,
    ropeTheta: hf.rope_theta ?? 10000,
    tieEmbeddings: hf.tie_word_embeddings ?? false,
    bosId: hf.bos_token_id ?? 1,
    eosId: hf.eos_token_id ?? 2,
  });
};

/**
 * Decodes a parsed Hugging Face config.json; `source` names the file in errors.
 * @example
 * parseLlamaConfig({ hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5, num_attention_heads: 8,
 *   vocab_size: 512, rms_norm_eps: 1e-5 }, 'config.json') // Right({ dim: 64, headDim: 8, nKvHeads: 8, ... })
 */
export const parseLlamaConfig = (json: unknown, source: string): E.Either<ConfigError, LlamaConfig> => {
  const decoded = HfLlamaConfig.decode(json);
  if (E.isLeft(decoded)) return E.left(configError(source, reportIoTsErrors(decoded.left)));
  const mapped = fromHf(decoded.right);
  return E.isLeft(mapped) ? E.left(configError(source, mapped.left)) : mapped;
};


/**
 * Reads `config.json` from a model directory, or the given file.
 * @example
 * const cfg = orThrow(await loadLlamaConfig('../shared/fixtures/stories260K/hf')()); // cfg.dim === 64
 */
export const loadLlamaConfig =
  (dirOrFile: string): TaskEither<ConfigError, LlamaConfig> =>
  async () => {
    let file = dirOrFile;
    let text: string;
    try {
      if ((await stat(dirOrFile)).isDirectory()) file = join(dirOrFile, 'config.json');
      text = await readFile(file, 'utf8');
    } catch (e) {
      return E.left(configError(file, [], `cannot read config (${ioProblem(e)})`));
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return E.left(configError(file, [], `invalid JSON (${e instanceof Error ? e.message : String(e)})`));
    }
    return parseLlamaConfig(json, file);
  };

/**
 * A tokenizer fits a model when it has exactly vocab_size tokens: otherwise ids past the embedding table come out
 * of it (garbage text, or an out-of-range failure mid-stream). The message names both sizes, and the files if given.
 * @example
 * const ok = checkVocab(cfg, tok, { model: 'stories260K/hf', tokenizer: 'tok512.model' }); // Right(undefined)
 */
export const checkVocab = (
  c: { readonly vocabSize: number }, tok: { readonly vocabSize: number }, files: { readonly model?: string; readonly tokenizer?: string } = {},
): E.Either<ConfigError, void> => {
  if (tok.vocabSize === c.vocabSize) return E.right(undefined);
  const model = files.model ?? 'the model';
  const tokenizer = files.tokenizer ? `the tokenizer ${files.tokenizer}` : 'the tokenizer';
  return E.left({
    _tag: 'ConfigError', file: files.model ?? files.tokenizer ?? '',
    issues: [{ field: 'vocab_size', expected: `${tok.vocabSize} (the tokenizer's size)`, got: String(c.vocabSize) }],
    message: `${tokenizer} has ${tok.vocabSize} tokens but ${model} has vocab_size ${c.vocabSize}: they do not belong together (pass the tokenizer the model was trained with)`,
  });
};

/**
 * The Hugging Face config.json fields for a config; `parseLlamaConfig(toHfConfig(c), f)` gives back `c`.
 * @example
 * writeFileSync('config.json', JSON.stringify(toHfConfig(llama2_7b), null, 2));
 */
export const toHfConfig = (c: LlamaConfig) => ({
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: c.dim,
  intermediate_size: c.hiddenDim,
  num_hidden_layers: c.nLayers,
  num_attention_heads: c.nHeads,
  num_key_value_heads: c.nKvHeads,
  head_dim: c.headDim,
  vocab_size: c.vocabSize,
  max_position_embeddings: c.seqLen,
  rms_norm_eps: c.normEps,
  rope_theta: c.ropeTheta,
  rope_scaling: null,
  hidden_act: 'silu',
  attention_bias: false,
  mlp_bias: false,
  tie_word_embeddings: c.tieEmbeddings,
  bos_token_id: c.bosId,
  eos_token_id: c.eosId,
});

// Published numbers: meta-llama/Llama-2-{7b,13b,70b}-hf and codellama/CodeLlama-7b-hf config.json.
const llama2Base = { headDim: 128, vocabSize: 32000, seqLen: 4096, normEps: 1e-5, ropeTheta: 10000, tieEmbeddings: false, bosId: 1, eosId: 2 };

export const llama2_7b: LlamaConfig = { ...llama2Base, dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32 };
export const llama2_13b: LlamaConfig = { ...llama2Base, dim: 5120, hiddenDim: 13824, nLayers: 40, nHeads: 40, nKvHeads: 40 };
export const llama2_70b: LlamaConfig = { ...llama2Base, dim: 8192, hiddenDim: 28672, nLayers: 80, nHeads: 64, nKvHeads: 8 };
export const codellama_7b: LlamaConfig = { ...llama2_7b, vocabSize: 32016, seqLen: 16384, ropeTheta: 1e6 };
