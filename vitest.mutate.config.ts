import { defineConfig } from 'vitest/config';
import { testFiles } from './test-tools/mutation-folders.mjs';

// Stryker's test runs: only the interpreter test files of the folders being mutated, with fast-check's seed pinned
// so every run of a test draws the same cases. No Vulkan driver is visible, so a test file that also has WebGPU
// tests skips them (test/gpu.ts); the slow tests of test-tools/mutation-folders.mjs are skipped too.
process.env.FC_SEED ??= '20261123';
process.env.VK_ICD_FILENAMES = '/nonexistent-icd.json';
process.env.VK_DRIVER_FILES = '/nonexistent-icd.json';

export default defineConfig({
  test: {
    include: testFiles(),
    setupFiles: ['test-tools/mutation-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
