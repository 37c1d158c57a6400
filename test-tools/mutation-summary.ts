// Reads StrykerJS's JSON report (mutation-testing-report-schema) and prints, per folder of
// test-tools/mutation-folders.mjs, the mutation score — (killed + timed out) / (killed + timed out + survived +
// no coverage), compile and runtime errors left out as Stryker does — and lists every surviving or uncovered
// mutant as file:line:column mutator → replacement. Usage: node --import tsx test-tools/mutation-summary.ts [report]

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

export interface FolderScore { readonly folder: string; readonly killed: number; readonly survived: number; readonly noCoverage: number; readonly timeout: number; readonly errors: number; readonly score: number | null }

/** The folder a file belongs to: the first whose mutate globs' root the path starts with. */
const folderOf = (file: string): string => {
  for (const name of Object.keys(FOLDERS)) if (file === name || file.startsWith(`${name}/`) || (name === 'models/safetensors' && file === 'models/safetensors.ts')) return name;
  return 'other';
};

export const summarise = (report: Report): { scores: FolderScore[]; survivors: string[] } => {
  const by = new Map<string, { killed: number; survived: number; noCoverage: number; timeout: number; errors: number }>();
  const survivors: string[] = [];
  for (const [file, { mutants }] of Object.entries(report.files).sort(([a], [b]) => a.localeCompare(b))) {
    const rel = file.replace(/\\/g, '/').replace(/^.*?\/(?=(ops|core|models|recipes)\/)/, '');
    const f = folderOf(rel);
    const s = by.get(f) ?? { killed: 0, survived: 0, noCoverage: 0, timeout: 0, errors: 0 };
    for (const m of mutants) {
      if (m.status === 'Killed') s.killed++;
      else if (m.status === 'Timeout') s.timeout++;
      else if (m.status === 'Survived') s.survived++;
      else if (m.status === 'NoCoverage') s.noCoverage++;
      else if (m.status === 'CompileError' || m.status === 'RuntimeError') s.errors++;
      else continue; // Ignored, Pending
      if (m.status === 'Survived' || m.status === 'NoCoverage') {
        const { line, column } = m.location.start;
        survivors.push(`${rel}:${line}:${column} ${m.status === 'NoCoverage' ? '(no test reaches it) ' : ''}${m.mutatorName} → ${(m.replacement ?? '').replace(/\s+/g, ' ').slice(0, 80)}`);
      }
    }
    by.set(f, s);
  }
  const scores = [...by].map(([folder, s]) => {
    const detected = s.killed + s.timeout, valid = detected + s.survived + s.noCoverage;
    return { folder, ...s, score: valid ? detected / valid : null };
  });
  return { scores, survivors };
};

export const printSummary = (path: string): void => {
  const { scores, survivors } = summarise(JSON.parse(readFileSync(path, 'utf8')) as Report);
  console.log('\nMutation score per folder (killed + timed out over all valid mutants):');
  for (const s of scores) {
    const pct = s.score === null ? '   n/a' : `${(100 * s.score).toFixed(1).padStart(5)}%`;
    console.log(`  ${s.folder.padEnd(20)} ${pct}  killed ${s.killed}, timed out ${s.timeout}, survived ${s.survived}, no coverage ${s.noCoverage}${s.errors ? `, errors ${s.errors}` : ''}`);
  }
  console.log(survivors.length ? `\nSurvivors (${survivors.length}):\n  ${survivors.join('\n  ')}` : '\nNo survivors.');
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) printSummary(resolve(process.argv[2] ?? '.scratch-mutation/mutation.json'));
