// The README's API example must run as written (with 'camelid' pointing at this checkout).

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expect, it } from 'vitest';
import { fixture } from './helpers.js';

it('README example runs and prints a loss and a gradient', async () => {
  const root = resolve(import.meta.dirname, '..');
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const dir = mkdtempSync(join(root, 'test', '.readme-'));
  const file = join(dir, 'example.mts');
  const logs: unknown[][] = [];
  const orig = console.log;
  try {
    writeFileSync(file, `import { setBackend } from '${join(root, 'index.ts')}';\nsetBackend('cpu');\n${block!.replaceAll("'camelid'", `'${join(root, 'index.ts')}'`)}`);
    console.log = (...a: unknown[]) => { logs.push(a); };
    await import(file);
  } finally {
    console.log = orig;
    rmSync(dir, { recursive: true, force: true });
  }
  const [loss, gw] = logs[0] as [number, number[][]];
  // Hand-computed: logits row0 = [0.5·0.1 − 0.3, 0.5·0.2 − 0.4] = [−0.25, −0.3]; row1 = [0.275, 0.5].
  const lse = (a: number, b: number) => Math.log(Math.exp(a) + Math.exp(b));
  const expected = -((-0.3 - lse(-0.25, -0.3)) + (0.275 - lse(0.275, 0.5))) / 2;
  expect(loss).toBeCloseTo(expected, 5);
  // ∂loss/∂logits = (softmax − one-hot)/2 per row (cross-entropy of a softmax, averaged over 2 rows), and
  // ∂loss/∂w = xᵀ·∂loss/∂logits: gw[i][j] = Σ_r x[r][i]·d[r][j].
  const softmax = (a: number, b: number) => [Math.exp(a - lse(a, b)), Math.exp(b - lse(a, b))];
  const [s0, s1] = [softmax(-0.25, -0.3), softmax(0.275, 0.5)];
  const d = [[s0[0]! / 2, (s0[1]! - 1) / 2], [(s1[0]! - 1) / 2, s1[1]! / 2]];
  const x = [[0.5, -1.0], [2.0, 0.25]];
  const want = [0, 1].map((i) => [0, 1].map((j) => x[0]![i]! * d[0]![j]! + x[1]![i]! * d[1]![j]!));
  expect(gw).toHaveLength(2);
  gw.forEach((row, i) => {
    expect(row).toHaveLength(2);
    row.forEach((g, j) => expect(g, `grads.w[${i}][${j}]`).toBeCloseTo(want[i]![j]!, 5));
  });
});

const { path: fixtures, have } = fixture('stories260K', 'the README examples on stories260K');
it.skipIf(!have)('README Llama example runs and streams the reference story', async () => {
  const root = resolve(import.meta.dirname, '..');
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /## Llama-2\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const dir = mkdtempSync(join(root, 'test', '.readme-'));
  const file = join(dir, 'llama.mts');
  let out = '';
  const orig = process.stdout.write.bind(process.stdout);
  try {
    writeFileSync(file, `import { setBackend } from '${join(root, 'index.ts')}';\nsetBackend('cpu');\n${block!.replaceAll("'camelid'", `'${join(root, 'index.ts')}'`)}`);
    process.stdout.write = ((s: string | Uint8Array) => { out += String(s); return true; }) as typeof process.stdout.write;
    process.chdir(root);
    await import(file);
  } finally {
    process.stdout.write = orig;
    rmSync(dir, { recursive: true, force: true });
  }
  expect(out).toMatch(/^, there was a little girl named Lily/);
});

it.skipIf(!have)('README SFT example runs: AdamW steps in one jitted plan, loss falls, the model is saved', async () => {
  const root = resolve(import.meta.dirname, '..');
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /## SFT\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const dir = mkdtempSync(join(root, 'test', '.readme-'));
  const file = join(dir, 'sft.mts');
  const logs: string[] = [];
  const orig = console.log;
  try {
    const code = block!.replaceAll("'camelid'", `'${join(root, 'index.ts')}'`).replace("'out/my-sft'", `'${join(dir, 'my-sft')}'`);
    writeFileSync(file, `import { setBackend } from '${join(root, 'index.ts')}';\nsetBackend('cpu');\n${code}`);
    console.log = (...a: unknown[]) => { logs.push(a.map(String).join(' ')); };
    process.chdir(root);
    await import(file);
    const losses = logs.map((l) => Number(/loss (\S+)/.exec(l)?.[1]));
    expect(losses).toHaveLength(6);
    expect(losses[1]).toBe(losses[0]); // lr 0 on the first update
    expect(losses[5]!).toBeLessThan(losses[0]! - 0.05);
    expect(existsSync(join(dir, 'my-sft', 'model.safetensors'))).toBe(true);
  } finally {
    console.log = orig;
    rmSync(dir, { recursive: true, force: true });
  }
});

it.skipIf(!have)('README LoRA/QLoRA example runs: NF4 base at ~0.52 byte/param, adapter loss falls, PEFT files written', async () => {
  const root = resolve(import.meta.dirname, '..');
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /## LoRA and QLoRA\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const dir = mkdtempSync(join(root, 'test', '.readme-'));
  const file = join(dir, 'lora.mts');
  const logs: string[] = [];
  const orig = console.log;
  try {
    const code = block!.replaceAll("'camelid'", `'${join(root, 'index.ts')}'`).replace("'out/my-lora'", `'${join(dir, 'my-lora')}'`);
    writeFileSync(file, `import { setBackend } from '${join(root, 'index.ts')}';\nsetBackend('cpu');\n${code}`);
    console.log = (...a: unknown[]) => { logs.push(a.map(String).join(' ')); };
    process.chdir(root);
    await import(file);
    const bytes = Number(/base: (\S+) bytes/.exec(logs[0]!)?.[1]);
    expect(bytes).toBeGreaterThan(0.5);
    expect(bytes).toBeLessThan(0.6);
    const losses = logs.slice(1).map((l) => Number(/loss (\S+)/.exec(l)?.[1]));
    expect(losses).toHaveLength(6);
    expect(losses[5]!).toBeLessThan(losses[0]! - 0.05);
    expect(existsSync(join(dir, 'my-lora', 'adapter_config.json'))).toBe(true);
    expect(existsSync(join(dir, 'my-lora', 'adapter_model.safetensors'))).toBe(true);
  } finally {
    console.log = orig;
    rmSync(dir, { recursive: true, force: true });
  }
});

it.skipIf(!have)('README DPO example runs: loss ln 2 at the start, then falls as the chosen side gains', async () => {
  const root = resolve(import.meta.dirname, '..');
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = /## DPO\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const dir = mkdtempSync(join(root, 'test', '.readme-'));
  const file = join(dir, 'dpo.mts');
  const logs: string[] = [];
  const orig = console.log;
  try {
    writeFileSync(file, `import { setBackend } from '${join(root, 'index.ts')}';\nsetBackend('cpu');\n${block!.replaceAll("'camelid'", `'${join(root, 'index.ts')}'`)}`);
    console.log = (...a: unknown[]) => { logs.push(a.map(String).join(' ')); };
    process.chdir(root);
    await import(file);
    const losses = logs.map((l) => Number(/loss (\S+)/.exec(l)?.[1]));
    expect(losses).toHaveLength(4);
    expect(losses[0]).toBeCloseTo(Math.log(2), 4);
    expect(losses[3]!).toBeLessThan(losses[0]! - 0.01);
    process.stderr.write(`README DPO: ${logs.join(' | ')}\n`);
    expect(logs[3]).toMatch(/accuracy 1 /);
  } finally {
    console.log = orig;
    rmSync(dir, { recursive: true, force: true });
  }
});
