// `camelid demo --quick`, the main job, end to end on WebGPU (lavapipe in CI): every stage runs, the output folder
// holds checkpoints that load and generate, metrics.jsonl and the chart; held-out exact match rises with SFT and again
// with DPO (which teaches the format requests the demonstrations skipped), by margins measured on this machine.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { setBackend } from '../core/backend.js';
import { loadLlama, loadTokenizer } from '../models/index.js';
import { loadAdapters } from '../models/peft.js';
import { gpuDevice } from './gpu.js';
import { right, tempDir } from './helpers.js';

describe.skipIf(!gpuDevice)('camelid demo --quick (WebGPU)', () => {
  const dir = tempDir('camelid-demo-');

  it('runs pretrain → SFT → DPO (LoRA) with evaluation, and writes loadable checkpoints, metrics and a chart', async () => {
    setBackend('webgpu');
    const { runCli } = await import('../cli.js');
    const out = join(dir.path, 'demo');
    let stdout = '', stderr = '';
    const write = process.stdout.write.bind(process.stdout), writeErr = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => { stdout += s; return true; }) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => { stderr += s; return true; }) as typeof process.stderr.write;
    let code: number;
    try { code = await runCli(['demo', '--quick', '--out', out]); } finally { process.stdout.write = write; process.stderr.write = writeErr; }
    expect(code, stderr).toBe(0);

    const stages = (await readFile(join(out, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { stage: string; plain: { accuracy: number }; accuracy: number; n: number; format: { followed: number; asked: number }; rewards?: { accuracy: number[]; margin: number[] } });
    expect(stages.map((s) => s.stage)).toEqual(['untrained', 'pretrain', 'sft', 'dpo']);
    const acc = Object.fromEntries(stages.map((s) => [s.stage, s.accuracy]));
    const plain = Object.fromEntries(stages.map((s) => [s.stage, s.plain.accuracy])); // asked without the chat template
    const followed = Object.fromEntries(stages.map((s) => [s.stage, s.format.followed / s.format.asked]));
    // Measured on lavapipe (--quick, 150 + 300 + 30 steps), exact match of 200 asked as chats: untrained 0, pretrain 0,
    // SFT 32 (16%), DPO 54 (27%); asked in plain text: pretrain 18 (9%); format requests followed (of 98): SFT 7 (25
    // after 150 SFT steps), DPO 98. The thresholds ask half of each measured gain.
    expect(stages.every((s) => s.n === 200 && s.format.asked > 60 && s.format.asked < 140)).toBe(true);
    expect(Math.max(acc.untrained!, plain.untrained!)).toBeLessThan(0.05);
    expect(plain.pretrain! - plain.untrained!).toBeGreaterThan(0.04); // pretraining learnt the tasks as text
    expect(acc.sft! - acc.untrained!).toBeGreaterThan(0.08); // SFT: the tasks as chats
    expect(followed.sft).toBeLessThan(0.4); // the demonstrations' slip, learnt
    expect(followed.dpo).toBeGreaterThan(0.8); // corrected by the preferences
    expect(acc.dpo! - acc.sft!).toBeGreaterThan(0.05);
    // DPO's own metrics at its first and last logged steps (measured: margin 0.11 → 0.36, accuracy 0.81 → 0.81)
    expect(stages.map((s) => s.rewards !== undefined)).toEqual([false, false, false, true]);
    const { rewards } = stages[3]!;
    expect(rewards!.accuracy.every((a) => a >= 0 && a <= 1) && rewards!.margin[1]! > 0).toBe(true);
    for (const s of ['untrained', 'pretrain', 'sft', 'dpo']) expect(stdout).toContain(s);

    const tok = right(await loadTokenizer(join(out, 'tokenizer.json'))());
    for (const stage of ['pretrain', 'sft', 'dpo']) {
      const { config } = right(await loadLlama(join(out, stage))());
      expect(config.vocabSize).toBe(tok.vocabSize);
      expect(existsSync(join(out, stage, 'tokenizer.json'))).toBe(true);
      expect((await readFile(join(out, stage, 'metrics.jsonl'), 'utf8')).trim().split('\n').length).toBeGreaterThan(1);
    }
    const sft = right(await loadLlama(join(out, 'sft'))());
    right(await loadAdapters(join(out, 'dpo', 'adapter'), sft.params)());
    expect((await readFile(join(out, 'chart.svg'), 'utf8')).startsWith('<svg')).toBe(true);
    expect([...(await readFile(join(out, 'chart.png'))).subarray(1, 4)]).toEqual([0x50, 0x4e, 0x47]);
  }, 3_600_000); // a cold Mesa shader cache compiles the demo's kernels first: many minutes on lavapipe
});
