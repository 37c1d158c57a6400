// `camelid demo`: the main job (recipes/demo/run.ts) from the command line, with a summary table and the chart at
// the end.

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import Table from 'cli-table3';
import { nonNegativeInt } from '../../models/cli-options.js';
import { chartSvg, svgToPng } from '../chart.js';
import { runDemo, type DemoOpts, type StageResult } from './run.js';
import { readFile } from 'node:fs/promises';

/** `--steps N` (pretraining and SFT N each, DPO ⌈N/4⌉) or `--steps P,S,D`. */
const stepsArg = (v: string): NonNullable<DemoOpts['steps']> => {
  const parts = v.split(',');
  const ns = parts.map((p) => (p.trim() === '' ? Number.NaN : Number(p)));
  if ((parts.length !== 1 && parts.length !== 3) || ns.some((n) => !Number.isSafeInteger(n) || n <= 0))
    throw new InvalidArgumentError(`--steps must be a positive integer or three (pretrain,sft,dpo), got '${v}'`);
  const [p, s, d] = ns.length === 3 ? ns as [number, number, number] : [ns[0]!, ns[0]!, Math.ceil(ns[0]! / 4)];
  return { pretrain: p, sft: s, dpo: d };
};

/** The summary table: one row per stage. */
export const summaryTable = (rows: readonly StageResult[]): string => {
  const t = new Table({ head: ['stage', 'exact match (chat)', 'format followed', 'exact match (plain text)', 'final loss', 'time', 'tokens/s'], style: { head: [], border: [] } });
  for (const r of rows) {
    t.push([r.stage, `${(100 * r.accuracy).toFixed(1)}% (${r.correct}/${r.n})`, `${r.format.followed}/${r.format.asked}`, `${(100 * r.plain.accuracy).toFixed(1)}%`, r.loss === null ? '–' : r.loss.toFixed(3), `${r.seconds.toFixed(1)} s`, r.tokensPerSec === null ? '–' : r.tokensPerSec.toFixed(0)]);
  }
  return t.toString();
};

/** Writes chart.svg and chart.png: each stage's training loss by step; exact match (chat and plain prompts) and format requests followed after each stage. */
export const writeChart = async (out: string, rows: readonly StageResult[]): Promise<void> => {
  const points: { x: number; y: number; series: string }[] = [];
  let offset = 0;
  for (const r of rows) {
    if (!r.checkpoint) continue;
    const lines = (await readFile(join(r.checkpoint, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss?: number });
    for (const m of lines) if (m.loss !== undefined) points.push({ x: offset + m.step, y: m.loss, series: r.stage });
    offset += Math.max(0, ...lines.map((m) => m.step));
  }
  const svg = await chartSvg([
    { title: 'Training loss (DPO: its own loss)', x: 'step (all stages)', y: 'loss', points },
    { title: 'Held-out exact match (chat, plain text) and format followed', x: 'stage', y: 'share', mark: 'bar', width: 320, yDomain: [0, 1], points: rows.flatMap((r) => [
      { x: r.stage, y: r.accuracy, series: 'chat' },
      { x: r.stage, y: r.plain.accuracy, series: 'plain text' },
      { x: r.stage, y: r.format.asked === 0 ? 0 : r.format.followed / r.format.asked, series: 'format followed' },
    ]) },
  ]);
  await writeFile(join(out, 'chart.svg'), svg);
  await writeFile(join(out, 'chart.png'), await svgToPng(svg));
};

export const demoCommand = new Command('demo')
  .description('the main job: Tulu 2 in miniature (pretrain → SFT → DPO with LoRA → eval) on tasks, a tokenizer and a model camelid makes itself')
  .option('--quick', 'a short run: 150 + 300 + 30 steps (default 1500 + 1000 + 200)', false)
  .option('--out <DIR>', 'output folder (checkpoints, metrics.jsonl, chart.svg/png)', 'camelid-demo')
  .option('--steps <N|P,S,D>', 'training steps: N for pretraining and SFT (DPO N/4), or pretrain,sft,dpo', stepsArg)
  .option('--seed <S>', 'seed of the generated data and the initialisation', nonNegativeInt('--seed'), 0)
  .action(async (o: { quick: boolean; out: string; steps?: DemoOpts['steps']; seed: number }) => {
    const log = (s: string) => process.stderr.write(`${s}\n`);
    const rows = await runDemo({ out: o.out, seed: o.seed, quick: o.quick, ...(o.steps ? { steps: o.steps } : {}), log });
    await writeChart(o.out, rows);
    process.stdout.write(`${summaryTable(rows)}\n`);
    process.stdout.write(`checkpoints (Hugging Face folders): ${rows.filter((r) => r.checkpoint).map((r) => r.checkpoint).join(', ')}\n`);
    process.stdout.write(`metrics: ${join(o.out, 'metrics.jsonl')}; chart: ${join(o.out, 'chart.svg')} and chart.png\n`);
  });
