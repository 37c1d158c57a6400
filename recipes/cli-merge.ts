// `camelid merge`: a base model plus a PEFT LoRA adapter folder → a dense Hugging Face model (W + s·B·A for every
// adapted projection; with --qlora the base is quantised to NF4 and dequantised first, as open-instruct's
// `merge_lora.py --qlora`). The tokenizer beside the base is copied along.

import { basename } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { Command } from 'commander';
import { loadLlama, saveLlama } from '../models/load.js';
import { merge } from '../models/lora.js';
import { quantizeBase } from '../models/nf4.js';
import { loadAdapters } from '../models/peft.js';
import { findTokenizer } from '../models/cli-generate.js';
import { UsageError } from '../models/cli-options.js';
import { copyInto } from './checkpoint.js';

/**
 * Merges an adapter folder into its base and writes the dense model; returns the output folder.
 * @example await mergeAdapter({ model: 'llama-2-7b', adapter: 'out/checkpoint-100', output: 'merged' });
 */
export const mergeAdapter = async (o: { model: string; adapter: string; output: string; qlora?: boolean }): Promise<string> => {
  const loaded = await loadLlama(o.model)();
  if (E.isLeft(loaded)) throw new UsageError(loaded.left.message);
  const { config, params } = loaded.right;
  const base = o.qlora ? await quantizeBase(params) : params;
  const adapters = await loadAdapters(o.adapter, base)();
  if (E.isLeft(adapters)) throw new UsageError(adapters.left.message);
  const saved = await saveLlama(o.output, config, merge(base, adapters.right))();
  if (E.isLeft(saved)) throw new UsageError(saved.left.message);
  const tok = findTokenizer(o.model);
  if (tok) await copyInto(tok, o.output, tok.endsWith('.json') ? 'tokenizer.json' : basename(tok).endsWith('.model') ? 'tokenizer.model' : basename(tok));
  return o.output;
};

export const mergeCommand = new Command('merge')
  .description('merge a LoRA adapter folder (PEFT layout) into its base model and write a dense Hugging Face model')
  .requiredOption('--model <DIR>', 'the base model (Hugging Face folder or llama2.c .bin)')
  .requiredOption('--adapter <DIR>', 'adapter folder: adapter_config.json + adapter_model.safetensors')
  .requiredOption('--output <DIR>', 'where to write config.json + model.safetensors')
  .option('--qlora', 'the adapters were trained on the NF4-quantised base: dequantise it before merging')
  .action(async (o: { model: string; adapter: string; output: string; qlora?: boolean }) => {
    await mergeAdapter(o);
    process.stderr.write(`merged ${o.adapter} into ${o.model}: ${o.output}\n`);
  });
