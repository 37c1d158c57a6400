// A fast first tier on CPU adapters. lavapipe compiles a shader through LLVM at its first dispatch, and the tuned
// kernels that make a warm step fast (attention with 16 rows per invocation, several small kernels merged into one
// dispatch) are the slowest to compile: 20–110 s each against 2–10 s for a plainer variant. So a pipeline whose
// tuned WGSL this machine has not compiled before runs as its quick variant, and the tuned WGSL is handed to a
// detached, low-priority child process (./warm.ts) that compiles it into Mesa's disk cache and writes its hash in
// a record beside that cache. A later plan, in this process or the next, finds the hash and uses the tuned kernel,
// which then loads from the disk cache in milliseconds. Both variants compute the same values (tested against the
// interpreter); only speed differs.
//
// CAMELID_FIRST_TIER: 'auto' (the default on CPU adapters), 'tuned' (always the tuned kernels, as on GPUs), 'fast'
// (always the quick ones, nothing compiled in the background).

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AdapterDescription } from './open.js';
import type { KernelSource } from './pipelines.js';

export type Tier = 'auto' | 'tuned' | 'fast';

/** The tier in force for an adapter: CAMELID_FIRST_TIER, else 'auto' on a CPU adapter and 'tuned' on a GPU. */
export const tierFor = (adapter: AdapterDescription): Tier => {
  const v = process.env.CAMELID_FIRST_TIER;
  if (v === 'auto' || v === 'tuned' || v === 'fast') return v;
  if (v !== undefined && v !== '') throw new Error(`CAMELID_FIRST_TIER must be auto, tuned or fast, got '${v}'`);
  return adapter.isSoftware ? 'auto' : 'tuned';
};

export const wgslHash = (wgsl: string): string => createHash('sha256').update(wgsl).digest('hex').slice(0, 32);

/**
 * Where the record of compiled tuned pipelines lives: beside Mesa's shader cache (MESA_SHADER_CACHE_DIR, else
 * $XDG_CACHE_HOME or ~/.cache), one file per adapter and LLVM optimisation setting, since each has its own cache
 * entries. Emptying MESA_SHADER_CACHE_DIR empties the record with it.
 */
export const recordPath = (adapter: AdapterDescription): string => {
  const dir = process.env.MESA_SHADER_CACHE_DIR || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'camelid');
  const id = wgslHash(`${adapter.vendor}|${adapter.architecture}|${adapter.device}|${adapter.description}|${process.env.GALLIVM_PERF ?? ''}`).slice(0, 12);
  return join(dir, `camelid-pipelines-${id}.txt`);
};

/** The hashes in a record (empty when it does not exist yet). */
export const readRecord = (path: string): Set<string> => {
  try {
    return new Set(readFileSync(path, 'utf8').split('\n').filter((l) => l !== ''));
  } catch {
    return new Set();
  }
};

/** Adds a hash to a record, creating its folder: one appended line (concurrent writers only interleave lines). */
export const addToRecord = (path: string, hash: string): void => {
  mkdirSync(join(path, '..'), { recursive: true });
  appendFileSync(path, `${hash}\n`);
};

/** The folder of the background jobs for one record (one Mesa cache, adapter and LLVM setting). */
const jobsDir = (record: string): string => join(tmpdir(), 'camelid-warm', wgslHash(record).slice(0, 16));

/** The child that compiles tuned WGSL (./warm.ts, or warm.js beside the bundle), with tsx when it is TypeScript. */
const childArgs = (job: string): string[] => {
  const url = new URL(import.meta.url.endsWith('.ts') ? './warm.ts' : './warm.js', import.meta.url);
  return [...(url.pathname.endsWith('.ts') ? ['--import', 'tsx'] : []), fileURLToPath(url), job];
};

/**
 * One adapter's choice between tuned and quick kernels, and the tuned WGSL still to compile in the background.
 * `tuned(src)` says whether to use a tuned kernel now; when not, its WGSL is queued and `flush()` hands the
 * queue to a child process.
 */
export class Tiers {
  private known: Set<string> | null = null;
  private readonly queued = new Map<string, KernelSource>();
  /** Hashes already handed to a child (not queued again while it compiles them). */
  private readonly sent = new Set<string>();
  /** Job files of the children started (each outlives this process and deletes its job file when done). */
  readonly started: string[] = [];

  private mode: Tier;

  constructor(private readonly adapter: AdapterDescription) {
    this.mode = tierFor(adapter);
  }

  /** Where the record is (read anew by each refresh: CAMELID_FIRST_TIER and MESA_SHADER_CACHE_DIR may change). */
  get record(): string {
    return recordPath(this.adapter);
  }

  /** Re-reads the tier and the record (a child may have added to it since the last plan). */
  refresh(): void {
    this.mode = tierFor(this.adapter);
    this.known = this.mode === 'auto' ? readRecord(this.record) : null;
  }

  /** Whether to use the tuned kernel `src`; in 'auto', one not yet compiled here is queued and false returned. */
  tuned(src: KernelSource): boolean {
    if (this.mode !== 'auto') return this.mode === 'tuned';
    this.known ??= readRecord(this.record);
    const h = wgslHash(src.wgsl);
    if (this.known.has(h)) return true;
    if (!this.sent.has(h)) this.queued.set(h, src);
    return false;
  }

  /**
   * Writes the queued WGSL as a job file and starts a detached child for it (at the lowest CPU priority); returns
   * the job file, if any. Jobs for one record share a folder, where one child at a time compiles them all (./warm.ts).
   */
  flush(): string | undefined {
    if (this.queued.size === 0) return undefined;
    const dir = jobsDir(this.record);
    mkdirSync(dir, { recursive: true });
    const job = join(dir, `${process.pid}-${Date.now()}-${this.started.length}.json`);
    writeFileSync(`${job}.part`, JSON.stringify({ record: this.record, sources: [...this.queued.values()].map((s) => ({ wgsl: s.wgsl, label: s.label ?? '' })) }));
    renameSync(`${job}.part`, job); // a job is read whole or not at all
    this.queued.forEach((_, h) => this.sent.add(h));
    this.queued.clear();
    const child = spawn(process.execPath, childArgs(job), { detached: true, stdio: 'ignore', env: process.env });
    child.on('error', () => {}); // no node to start: the tuned kernels are simply compiled when first used
    if (child.pid !== undefined) {
      try { setPriority(child.pid, 19); } catch { /* it has exited already */ }
    }
    child.unref();
    this.started.push(job);
    return job;
  }
}
