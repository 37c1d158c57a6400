import { defineConfig } from 'vitest/config';

// lavapipe compiles each shader at its first dispatch. Without LLVM's optimisation passes that costs about 30%
// less on a machine whose Mesa shader cache is empty (the whole suite: 642 s against 912 s on 2 cores; warm, 101 s
// against 105). Tests check values, not speed: the benches, the CLI and users keep the optimised code. Set here,
// so the test processes start with it; an explicit GALLIVM_PERF wins.
process.env.GALLIVM_PERF ??= 'nopt';
// The tuned kernels everywhere (core/device/tiers.ts): no background compiles competing with the tests, and the same
// kernels on every run. test/tiers.test.ts checks the quick tier and the background compile.
process.env.CAMELID_FIRST_TIER ??= 'tuned';

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
