// Reads StrykerJS's JSON reports (mutation-testing-report-schema) and prints, per folder of
// test-tools/mutation-folders.mjs and per file, the mutation score — (killed + timed out) / (killed + timed out +
// survived + no coverage), compile and runtime errors and ignored mutants left out as Stryker does — and lists every surviving or
// uncovered mutant as file:line:column mutator → replacement. Several reports (runs over different files of the same
// code) are read as one: a file in a later report replaces its entry in an earlier one.
// Usage: node --import tsx test-tools/mutation-summary.ts [report…]  (default .scratch-mutation/mutation.json)

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { FOLDERS } from './mutation-folders.mjs';

interface Mutant {
  readonly mutatorName: string;
  readonly replacement?: string;
  readonly status: string;
  readonly location: { readonly start: { readonly line: number; readonly column: number } };
}
interface Report { readonly files: Readonly<Record<string, { readonly mutants: readonly Mutant[] }>> }

interface Counts { killed: number; survived: number; noCoverage: number; timeout: number; errors: number; ignored: number }
export interface FolderScore extends Readonly<Counts> { readonly folder: string; readonly score: number | null }

/** The folder a file belongs to: the first whose mutate globs' root the path starts with. */
const folderOf = (file: string): string => {
  for (const name of Object.keys(FOLDERS)) if (file === name || file.startsWith(`${name}/`) || (name === 'models/safetensors' && file === 'models/safetensors.ts')) return name;
  return 'other';
};

const scored = (name: string, s: Counts) => {
  const detected = s.killed + s.timeout, valid = detected + s.survived + s.noCoverage;
  return { folder: name, ...s, score: valid ? detected / valid : null };
};

/** Scores per folder and per file (`folder` holds the file's path there), and the survivors, of one or more reports. */
export const summarise = (...reports: readonly Report[]): { scores: FolderScore[]; files: FolderScore[]; survivors: string[] } => {
  const byFolder = new Map<string, Counts>(), byFile = new Map<string, Counts>();
  const survivors: string[] = [];
  const merged = new Map<string, readonly Mutant[]>();
  for (const r of reports) for (const [file, { mutants }] of Object.entries(r.files)) merged.set(file.replace(/\\/g, '/').replace(/^.*?\/(?=(ops|core|models|recipes)\/)/, ''), mutants);
  for (const [rel, mutants] of [...merged].sort(([a], [b]) => a.localeCompare(b))) {
    const f = folderOf(rel);
    const s = byFolder.get(f) ?? { killed: 0, survived: 0, noCoverage: 0, timeout: 0, errors: 0, ignored: 0 };
    const one: Counts = { killed: 0, survived: 0, noCoverage: 0, timeout: 0, errors: 0, ignored: 0 };
    for (const m of mutants) {
      const key = m.status === 'Killed' ? 'killed' : m.status === 'Timeout' ? 'timeout' : m.status === 'Survived' ? 'survived'
        : m.status === 'NoCoverage' ? 'noCoverage' : m.status === 'CompileError' || m.status === 'RuntimeError' ? 'errors' : m.status === 'Ignored' ? 'ignored' : null;
      if (!key) continue; // Pending
      s[key]++;
      one[key]++;
      if (key === 'survived' || key === 'noCoverage') {
        const { line, column } = m.location.start;
        survivors.push(`${rel}:${line}:${column} ${key === 'noCoverage' ? '(no test reaches it) ' : ''}${m.mutatorName} → ${(m.replacement ?? '').replace(/\s+/g, ' ').slice(0, 80)}`);
      }
    }
    byFolder.set(f, s);
    byFile.set(rel, one);
  }
  return { scores: [...byFolder].map(([n, s]) => scored(n, s)), files: [...byFile].map(([n, s]) => scored(n, s)), survivors };
};

const line = (s: FolderScore, indent: string, width: number) => {
  const pct = s.score === null ? '   n/a' : `${(100 * s.score).toFixed(1).padStart(5)}%`;
  return `${indent}${s.folder.padEnd(width)} ${pct}  killed ${s.killed}, timed out ${s.timeout}, survived ${s.survived}, no coverage ${s.noCoverage}${s.errors ? `, errors ${s.errors}` : ''}${s.ignored ? ` (ignored ${s.ignored})` : ''}`;
};

export const printSummary = (...paths: readonly string[]): void => {
  const { scores, files, survivors } = summarise(...paths.map((p) => JSON.parse(readFileSync(p, 'utf8')) as Report));
  console.log('\nMutation score per folder (killed + timed out over all valid mutants), and per file:');
  for (const s of scores) {
    console.log(line(s, '  ', 24));
    const mine = files.filter((f) => folderOf(f.folder) === s.folder);
    if (mine.length > 1) for (const f of mine) console.log(line(f, '    ', 22));
  }
  console.log(survivors.length ? `\nSurvivors (${survivors.length}):\n  ${survivors.join('\n  ')}` : '\nNo survivors.');
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const given = process.argv.slice(2);
  printSummary(...(given.length ? given : ['.scratch-mutation/mutation.json']).map((p) => resolve(p)));
}
