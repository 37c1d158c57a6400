import { defineConfig } from 'vitest/config';
import { testFiles } from './test-tools/mutation-folders.mjs';

// Stryker's test runs: only the interpreter test files of the folders being mutated (never one opening the GPU),
// with fast-check's seed pinned so every run of a test draws the same cases.
process.env.FC_SEED ??= '20261123';

export default defineConfig({
  test: {
    include: testFiles(),
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
