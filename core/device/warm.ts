// The background half of the fast first tier (./tiers.ts): `node warm.js JOB` compiles each tuned WGSL of a job
// file into Mesa's disk cache — lavapipe compiles at a pipeline's first dispatch, so each is dispatched once, one
// workgroup over scratch buffers (robust buffer access keeps every read and write inside them) — and adds its hash
// to the record when done. Last, the job file is deleted (its absence says the job is over). Any failure just leaves a kernel out of the
// record: the foreground then compiles it when first used, as without tiers.

import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import { openDevice } from './open.js';
import { addToRecord, wgslHash } from './tiers.js';

interface Job { readonly record: string; readonly sources: readonly { readonly wgsl: string; readonly label: string }[] }

/** Each binding's number and whether it is a uniform, read from the WGSL's declarations. */
const bindingsOf = (wgsl: string): { index: number; uniform: boolean }[] =>
  [...wgsl.matchAll(/@binding\((\d+)\)\s*var<(\w+)/g)].map((m) => ({ index: Number(m[1]), uniform: m[2] === 'uniform' }));

export const warm = async (jobFile: string): Promise<number> => {
  const job = JSON.parse(readFileSync(jobFile, 'utf8')) as Job;
  const opened = await openDevice()();
  let done = 0;
  if (E.isRight(opened)) {
    const dev = opened.right;
    for (const s of job.sources) {
      const p = await dev.pipeline({ wgsl: s.wgsl, label: `warm:${s.label}` })();
      if (E.isLeft(p)) continue;
      const bindings = bindingsOf(s.wgsl).sort((a, b) => a.index - b.index);
      const bufs = bindings.map((b) => dev.alloc(b.uniform ? 256 : 1 << 16, b.uniform ? 'uniform' : 'storage'));
      try {
        dev.encode([{ pipeline: p.right, bindGroup: dev.bindGroup(p.right, bufs), workgroups: [1, 1, 1] }], 'warm');
        await dev.sync();
        addToRecord(job.record, [wgslHash(s.wgsl)]);
        done++;
      } catch { /* left out of the record */ }
      bufs.forEach((b) => dev.free(b));
    }
    dev.destroy();
  }
  rmSync(jobFile, { force: true });
  return done;
};

if (process.argv[1] && /warm\.(ts|js)$/.test(process.argv[1]) && process.argv[2]) {
  // Started in a session of its own (detached), this process heads its own scheduling autogroup on Linux, where
  // its nice value alone would not yield to the run that started it: lower the group's priority too.
  try { writeFileSync('/proc/self/autogroup', '19'); } catch { /* not Linux, or no autogroups */ }
  warm(process.argv[2]).then(() => process.exit(0), () => process.exit(1));
}
