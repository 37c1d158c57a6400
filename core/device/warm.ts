// The background half of the fast first tier (./tiers.ts): `node warm.js JOB` compiles tuned WGSL into Mesa's disk
// cache — lavapipe compiles at a pipeline's first dispatch, so each is dispatched once, one workgroup over scratch
// buffers (robust buffer access keeps every read and write inside them) — and adds each hash to the record.
// Every job of a record sits in one folder, and one child at a time holds its lock and compiles all the jobs there,
// deleting each job file when done (its absence says the job is over); the others wait, and leave once their job
// file is gone. Any failure just leaves a kernel out of the record: the foreground then compiles it when first used.

import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { Device } from './open.js';
import { addToRecord, wgslHash } from './tiers.js';

interface Job { readonly record: string; readonly sources: readonly { readonly wgsl: string; readonly label: string }[] }

/** Each binding's number and whether it is a uniform, read from the WGSL's declarations. */
const bindingsOf = (wgsl: string): { index: number; uniform: boolean }[] =>
  [...wgsl.matchAll(/@binding\((\d+)\)\s*var<(\w+)/g)].map((m) => ({ index: Number(m[1]), uniform: m[2] === 'uniform' }));

const alive = (pid: number): boolean => {
  try { process.kill(pid, 0); return true; } catch { return false; }
};

/** Takes the folder's lock (a file holding the holder's pid); a lock whose holder has died is taken over. */
const lock = (file: string): boolean => {
  try {
    writeFileSync(file, String(process.pid), { flag: 'wx' });
    return true;
  } catch {
    const holder = Number(readFileSync(file, 'utf8'));
    if (Number.isInteger(holder) && holder > 0 && !alive(holder)) rmSync(file, { force: true });
    return false;
  }
};

/** Compiles one job's WGSL on `dev`, recording each kernel that compiled and ran, then deletes the job file. */
const compileJob = async (dev: Device, file: string): Promise<void> => {
  const job = JSON.parse(readFileSync(file, 'utf8')) as Job;
  for (const s of job.sources) {
    const p = await dev.pipeline({ wgsl: s.wgsl, label: `warm:${s.label}` })();
    if (E.isLeft(p)) continue;
    const bufs = bindingsOf(s.wgsl).sort((a, b) => a.index - b.index).map((b) => dev.alloc(b.uniform ? 256 : 1 << 16, b.uniform ? 'uniform' : 'storage'));
    try {
      dev.encode([{ pipeline: p.right, bindGroup: dev.bindGroup(p.right, bufs), workgroups: [1, 1, 1] }], 'warm');
      await dev.sync();
      addToRecord(job.record, wgslHash(s.wgsl));
    } catch { /* left out of the record */ }
    bufs.forEach((b) => dev.free(b));
  }
  rmSync(file, { force: true });
};

/** The folder's job files, oldest first. */
const pending = (dir: string): string[] =>
  readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => join(dir, f))
    .map((f) => { try { return { f, t: statSync(f).mtimeMs }; } catch { return null; } })
    .filter((x) => x !== null).sort((a, b) => a.t - b.t).map((x) => x.f);

/** Waits for `job` to be compiled: by this process once it holds the folder's lock, or by the holder. */
export const warm = async (job: string): Promise<void> => {
  const dir = dirname(job), file = join(dir, 'lock');
  while (existsSync(job)) {
    if (!lock(file)) { await new Promise((r) => setTimeout(r, 1000)); continue; }
    try {
      // The device is opened only by the lock's holder (the waiting children stay small).
      const { openDevice } = await import('./open.js');
      const opened = await openDevice()();
      if (E.isLeft(opened)) { pending(dir).forEach((f) => rmSync(f, { force: true })); return; }
      for (let jobs = pending(dir); jobs.length > 0; jobs = pending(dir)) for (const f of jobs) await compileJob(opened.right, f);
      opened.right.destroy();
    } finally {
      rmSync(file, { force: true });
    }
  }
};

if (process.argv[1] && /warm\.(ts|js)$/.test(process.argv[1]) && process.argv[2]) {
  // Started in a session of its own (detached), this process heads its own scheduling autogroup on Linux, where
  // its nice value alone would not yield to the run that started it: lower the group's priority too.
  try { writeFileSync('/proc/self/autogroup', '19'); } catch { /* not Linux, or no autogroups */ }
  warm(process.argv[2]).then(() => process.exit(0), () => process.exit(1));
}
