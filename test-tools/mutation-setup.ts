// Setup file of Stryker's test runs (vitest.mutate.config.ts): skips the slow tests listed in
// test-tools/mutation-folders.mjs, by their "describe > … > test" name.

import { beforeEach } from 'vitest';
import { SLOW_TESTS } from './mutation-folders.mjs';

interface Named { readonly name: string; readonly suite?: Named }
const fullName = (t: Named): string => (t.suite && t.suite.name ? `${fullName(t.suite)} > ${t.name}` : t.name);

beforeEach((ctx) => {
  const name = fullName(ctx.task as Named);
  if (SLOW_TESTS.some((s) => name.includes(s.pattern))) ctx.skip();
});
