// Shared test setup: fast-check seeds are pinned in CI (and printed on failure by fast-check for replay).
import fc from 'fast-check';

const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : process.env.CI ? 20261123 : undefined;
fc.configureGlobal({ ...(seed !== undefined ? { seed } : {}), numRuns: 25, endOnFailure: true });
if (seed !== undefined && !process.env.CAMELID_SEED_SAID) {
  process.env.CAMELID_SEED_SAID = '1';
  console.log(`fast-check seed ${seed} (set FC_SEED to replay another)`);
}
