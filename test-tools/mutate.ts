// `npm run mutate [-- folder… --stryker-option…]`: StrykerJS over the folders of test-tools/mutation-folders.mjs
// (all by default), one run each, then the score per folder and every survivor. Not in CI: hours on 2 cores.
// Arguments naming a folder choose it; all others go to `stryker run` (e.g. --concurrency 1).

import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FOLDERS, selected } from './mutation-folders.mjs';
import { printSummary } from './mutation-summary.js';

const root = resolve(import.meta.dirname, '..');
const args = process.argv.slice(2);
const folders = args.filter((a) => a in FOLDERS);
const passed = args.filter((a) => !(a in FOLDERS));
const names = selected(folders.length ? folders.join(',') : undefined);
// The sandboxes are .scratch-stryker/sandbox-*/, so a test's ../../shared/fixtures is .scratch-stryker/shared:
// point it at the fixtures beside the checkout, where the tests find them normally.
// Made before every run: Stryker's cleanTempDir removes .scratch-stryker, the link with it, after each one.
const shared = resolve(root, '../shared');
const link = join(root, '.scratch-stryker', 'shared');
const linkFixtures = () => { if (existsSync(shared) && !existsSync(link)) { mkdirSync(join(root, '.scratch-stryker'), { recursive: true }); symlinkSync(shared, link); } };
const report = join(root, '.scratch-mutation', 'mutation.json');
// One Stryker run per folder, so each folder's mutants meet only its own tests (a survivor reruns every test that
// covers it: the recipe runs' trainings must not rerun for each survivor in the layers below them). Each run's report
// is kept under its time; the summary reads this invocation's reports as one.
const kept: string[] = [];
let status = 0;
for (const name of names) {
  rmSync(report, { force: true }); // never summarise an earlier run's report
  linkFixtures();
  console.log(`mutate: ${name}`);
  const run = spawnSync(join(root, 'node_modules', '.bin', 'stryker'), ['run', ...passed], {
    cwd: root, stdio: 'inherit', env: { ...process.env, CAMELID_MUTATE: name },
  });
  status ||= run.status ?? 1;
  if (!existsSync(report)) continue;
  const copy = join(root, '.scratch-mutation', `mutation-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  copyFileSync(report, copy);
  kept.push(copy);
}
if (kept.length) {
  printSummary(...kept);
  console.log(`\nreports: ${kept.join(' ')}`);
}
process.exit(status);
