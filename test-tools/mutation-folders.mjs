// The layers `npm run mutate` puts under StrykerJS: for each, the files it mutates and the interpreter-only test
// files that can kill those mutants (no test file that opens the GPU: Stryker runs each test file many times).
// Shared by stryker.config.mjs, vitest.mutate.config.ts and test-tools/mutate.ts; CAMELID_MUTATE (folders,
// comma-separated) narrows a run to some of them.

/** The recipe runs: whole runs from a config (recipes/sft.ts, dpo-run.ts, lora-sft.ts). */
const RUNS = ['recipes/sft.ts', 'recipes/dpo-run.ts', 'recipes/lora-sft.ts'];

/**
 * Each entry is one Stryker run (test-tools/mutate.ts runs them one after another): its mutants meet only its tests.
 * @type {Record<string, { mutate: string[]; tests: string[] }>}
 */
export const FOLDERS = {
  ops: {
    mutate: ['ops/**/*.ts', '!ops/index.ts'],
    // Not llama or generate: they reach nearly every op, so each surviving mutant would rerun them (about three
    // hours instead of 35 minutes). What only they reached is a choice of speed, not of value: linears' shared base
    // matmul and attention's head-major reading compute the same numbers either way (test-tools/mutation-survivors.md).
    tests: ['grad', 'laws', 'composite', 'nn', 'errors', 'sampling', 'edges', 'attention', 'nf4', 'bounds', 'vjp-coverage', 'op-checks', 'lora'],
  },
  'core/autodiff.ts': {
    mutate: ['core/autodiff.ts'],
    tests: ['grad', 'laws', 'composite', 'nn', 'edges', 'attention', 'vjp-coverage'],
  },
  'models/tokenizer': {
    mutate: ['models/tokenizer/**/*.ts', '!models/tokenizer/index.ts'],
    tests: ['tokenizer', 'tokenizer-hf'],
  },
  'models/safetensors': {
    mutate: ['models/safetensors/**/*.ts', 'models/safetensors.ts'],
    tests: ['safetensors'],
  },
  'models/generate.ts': {
    mutate: ['models/generate.ts'],
    tests: ['generate', 'sampling'],
  },
  recipes: {
    // The CLI front ends and the demo data are I/O glue, tested through cli.test (which spawns processes). The
    // runs (runSft, runDpo, their LoRA setup) are the next entry's: their tests train on stories260K, and every
    // surviving mutant in the layers below would rerun them.
    mutate: ['recipes/**/*.ts', '!recipes/index.ts', '!recipes/cli-*.ts', '!recipes/demo/**', ...RUNS.map((f) => `!${f}`)],
    tests: ['optim', 'sft-loss', 'train', 'dpo', 'data', 'chat', 'prefs', 'eval', 'chart', 'random', 'checkpoint', 'run-config', 'run-parts'],
  },
  // Scored with recipes (test-tools/mutation-summary.ts goes by path); a separate Stryker run (test-tools/mutate.ts).
  'recipes-runs': {
    mutate: RUNS,
    tests: ['sft', 'lora-sft', 'dpo', 'recipe-runs', 'run-config'],
  },
};

/**
 * Tests skipped in mutation runs (test-tools/mutation-setup.ts), matched against "describe > … > test" names: each
 * would be run again for every mutant it covers, and the mutants they reach are pinned by faster tests too.
 */
export const SLOW_TESTS = [
  { pattern: 'a short DPO run raises rewards', why: 'a 150-step training run (about 40 s)' },
  // runSft, lora-sft and dpo-run are reached only through whole runs on stories260K: the shortest test of each stays
  // in (SFT's and LoRA SFT's resumed runs, DPO's LoRA run: 3–6 s each); the longer ones are skipped.
  { pattern: 'frozen-copy and cached reference runs give the same losses', why: 'three DPO runs on stories260K' },
  { pattern: 'trains from a config file plus flag overrides', why: 'an SFT run on stories260K' },
  { pattern: '--lora: loss falls', why: 'a LoRA SFT run on stories260K' },
  { pattern: '--qlora: NF4 base', why: 'a QLoRA SFT run on stories260K' },
  { pattern: 'a pre-quantised bitsandbytes 4-bit folder', why: 'two QLoRA SFT runs on stories260K' },
];

/** The folders a run covers: CAMELID_MUTATE's list, or all. Unknown names are an error naming the known ones. */
export const selected = (env = process.env.CAMELID_MUTATE) => {
  const names = env ? env.split(',').map((s) => s.trim()).filter(Boolean) : Object.keys(FOLDERS);
  const bad = names.filter((n) => !(n in FOLDERS));
  if (bad.length) throw new Error(`mutate: unknown folder ${bad.join(', ')}; known: ${Object.keys(FOLDERS).join(', ')}`);
  return names;
};

export const mutateGlobs = (names = selected()) => [...new Set(names.flatMap((n) => FOLDERS[n].mutate))];
export const testFiles = (names = selected()) => [...new Set(names.flatMap((n) => FOLDERS[n].tests))].map((t) => `test/${t}.test.ts`);
