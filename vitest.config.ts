import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // On a machine whose Mesa shader cache is empty, lavapipe compiles each matmul shader on its first dispatch
    // (2–10 s apiece): a test of several new shapes takes minutes there, and seconds once the cache is warm.
    testTimeout: 600_000,
    hookTimeout: 600_000,
    pool: 'forks',
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
