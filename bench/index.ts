// npm run bench [matmul|steps|llama|sft|lora|dpo|compile]: each benchmark printed as a ratio against a baseline measured in the
// same run. `compile` (cold against warm shader cache, about half an hour on 2 cores) runs only when named.

import { stepsMain } from './steps.js';

// Warm speed is what the benches measure: the tuned kernels from the first step (core/device/tiers.ts). The compile
// bench runs its children as users do (the fast first tier on a CPU adapter).
process.env.CAMELID_FIRST_TIER ??= 'tuned';

const main = async () => {
  const which = process.argv[2] ?? 'all';
  if (which === 'all' || which === 'matmul') {
    const { matmulMain } = await import('./matmul.js');
    await matmulMain();
  }
  if (which === 'all' || which === 'steps') await stepsMain();
  if (which === 'all' || which === 'llama') {
    const { llamaMain } = await import('./llama.js');
    await llamaMain();
  }
  if (which === 'all' || which === 'sft') {
    const { sftMain } = await import('./sft.js');
    await sftMain();
  }
  if (which === 'all' || which === 'dpo') {
    const { dpoMain } = await import('./dpo.js');
    await dpoMain();
  }
  if (which === 'all' || which === 'lora') {
    const { loraMain } = await import('./lora.js');
    await loraMain();
  }
  if (which === 'compile') {
    const { compileMain } = await import('./compile.js');
    await compileMain();
  }
};

// A promise that never settles (a GPU wait whose callback never comes) would let Node drain its event loop and
// exit 0 mid-run, silently: say so instead.
process.on('beforeExit', () => { console.error('bench: the event loop drained before the benchmarks finished (a GPU wait never completed)'); process.exit(1); });
main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
