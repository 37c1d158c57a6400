// npm run bench [matmul|steps|llama]: each benchmark printed as a ratio against a baseline measured in the same run.

import { stepsMain } from './steps.js';

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
};

main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
