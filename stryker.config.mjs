// StrykerJS over the layers whose tests run on the interpreter in seconds (test-tools/mutation-folders.mjs).
// Run it with `npm run mutate` (all folders) or `npm run mutate -- models/safetensors` (some); not in CI.
import { mutateGlobs } from './test-tools/mutation-folders.mjs';

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutate.config.ts' },
  mutate: mutateGlobs(),
  coverageAnalysis: 'perTest',
  // WGSL templates are run only by the GPU tests, which Stryker's runs cannot afford: test-tools/stryker-wgsl-ignorer.mjs.
  plugins: ['@stryker-mutator/vitest-runner', './test-tools/stryker-wgsl-ignorer.mjs'],
  ignorers: ['wgsl'],
  // Names under .scratch* are git-ignored: the sandboxes, and the JSON report test-tools/mutation-summary.ts reads.
  tempDirName: '.scratch-stryker',
  ignorePatterns: ['dist', 'bench', '.scratch*', 'test/.readme-*'],
  reporters: ['progress', 'json'],
  jsonReporter: { fileName: '.scratch-mutation/mutation.json' },
  concurrency: 2,
  timeoutMS: 20_000,
  // The initial run of every folder's test files takes over 5 minutes (Stryker's default limit) on 2 shared cores.
  dryRunTimeoutMinutes: 30,
  cleanTempDir: 'always',
};
