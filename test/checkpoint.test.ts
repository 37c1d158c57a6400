// Training checkpoints (recipes/checkpoint.ts) on their own, on the interpreter: the folder a write publishes and
// what reads it back (optimizer leaves by tree path, f32 and f64, trainer state), replacing a step saved again,
// a write that fails midway, listing in step order, pruning, resolving where to resume, and each refusal by file.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import * as C from '../index.js';
import { data, setBackend } from '../index.js';
import {
  checkpointName, copyInto, listCheckpoints, OPTIMIZER_FILE, pruneCheckpoints, readOptState, readTrainerState, resolveCheckpoint,
  TRAINER_FILE, writeCheckpoint, type CheckpointParts,
} from '../recipes/checkpoint.js';
import { leftMessage, right, tempDir } from './helpers.js';
import './setup.js';

setBackend('cpu');

const state = () => ({ m: { w: C.tensor([[0.5, -1.25], [3, 0.1]], { dtype: 'f32' }) }, v: { w: C.tensor([1e-3, 2.5], { dtype: 'f64' }) } });
const parts = (tag: string, step = 3): CheckpointParts => ({
  model: async (d) => writeFileSync(join(d, 'model.txt'), tag),
  optState: state(),
  trainer: { step, dataPos: 2 * step, key: [7, 4294967295] },
});

describe('checkpoints', () => {
  const tmp = tempDir('camelid-ckpt-');

  it('a write publishes the model files, optimizer.safetensors and trainer_state.json, and they read back', async () => {
    const dir = join(tmp.path, 'a', checkpointName(3));
    mkdirSync(join(tmp.path, 'a'));
    expect(right(await writeCheckpoint(dir, parts('first'))())).toBe(dir);
    expect(readdirSync(dir).sort()).toEqual(['model.txt', OPTIMIZER_FILE, TRAINER_FILE].sort());
    expect(readdirSync(join(tmp.path, 'a'))).toEqual(['checkpoint-3']); // no .tmp or .old left beside it
    expect(right(await readTrainerState(dir))).toEqual({ step: 3, dataPos: 6, key: [7, 4294967295] });
    const back = right(await readOptState(dir, state()));
    expect([back.m.w.dtype, back.v.w.dtype]).toEqual(['f32', 'f64']);
    expect(Array.from(await data(back.m.w))).toEqual(Array.from(Float32Array.from([0.5, -1.25, 3, 0.1])));
    expect(back.m.w.shape).toEqual([2, 2]);
    // f64 state is stored as f32 (as the model's weights are) and read back at the template's dtype
    expect(Array.from(await data(back.v.w))).toEqual(Array.from(Float32Array.from([1e-3, 2.5])));
    expect([(await data(back.m.w)).constructor.name, (await data(back.v.w)).constructor.name]).toEqual(['Float32Array', 'Float64Array']); // each leaf's own storage
  });

  it('the same step saved again replaces the folder whole; a write that fails midway leaves the last one as it was', async () => {
    const out = join(tmp.path, 'b');
    mkdirSync(out);
    const dir = join(out, checkpointName(3));
    right(await writeCheckpoint(dir, parts('first'))());
    writeFileSync(join(dir, 'stale.txt'), 'from before');
    right(await writeCheckpoint(dir, parts('second'))());
    expect(readFileSync(join(dir, 'model.txt'), 'utf8')).toBe('second');
    expect(existsSync(join(dir, 'stale.txt'))).toBe(false);
    expect(readdirSync(out)).toEqual(['checkpoint-3']);
    const failed = await writeCheckpoint(dir, parts('third'), { afterFile: (f) => { if (f === OPTIMIZER_FILE) throw new Error('disk full'); } })();
    expect(leftMessage(failed)).toBe(`checkpoint ${dir}: write failed (disk full); the previous checkpoint is untouched`);
    expect(E.isLeft(failed) && failed.left.name).toBe('CheckpointWriteError');
    expect(readFileSync(join(dir, 'model.txt'), 'utf8')).toBe('second');
    expect(right(await readTrainerState(dir)).step).toBe(3);
    // What a crash leaves (the failed write's .tmp; a .old between the two renames of a replace) is cleared by the
    // next write of that step.
    expect(readdirSync(`${dir}.tmp`).length).toBeGreaterThan(0);
    mkdirSync(`${dir}.old`);
    writeFileSync(join(`${dir}.old`, 'model.txt'), 'older');
    right(await writeCheckpoint(dir, parts('fourth'))());
    expect(readFileSync(join(dir, 'model.txt'), 'utf8')).toBe('fourth');
    expect(readdirSync(out)).toEqual(['checkpoint-3']);
  });

  it('lists complete checkpoints by step (9 before 10), ignoring other names; prunes all but the newest', async () => {
    const out = join(tmp.path, 'c');
    for (const n of ['checkpoint-10', 'checkpoint-9', 'checkpoint-100', 'checkpoint-2', 'checkpoint-11.tmp', 'checkpoint-x', 'final', 'xcheckpoint-5']) {
      mkdirSync(join(out, n), { recursive: true });
      writeFileSync(join(out, n, 'model.txt'), n); // folders with files in them, as checkpoints are
    }
    expect(await listCheckpoints(out)).toEqual([2, 9, 10, 100].map((s) => ({ step: s, dir: join(out, `checkpoint-${s}`) })));
    expect(await listCheckpoints(join(tmp.path, 'missing'))).toEqual([]);
    await pruneCheckpoints(out, 2);
    expect(readdirSync(out).sort()).toEqual(['checkpoint-10', 'checkpoint-100', 'checkpoint-11.tmp', 'checkpoint-x', 'final', 'xcheckpoint-5']);
    await pruneCheckpoints(out, 5); // fewer than keep: nothing removed
    expect((await listCheckpoints(out)).map((c) => c.step)).toEqual([10, 100]);
    await pruneCheckpoints(out, 0);
    expect(await listCheckpoints(out)).toEqual([]);
  });

  it('resumes from a checkpoint folder itself, else the newest checkpoint-N in it, else says neither is there', async () => {
    const out = join(tmp.path, 'd');
    mkdirSync(out);
    right(await writeCheckpoint(join(out, 'checkpoint-4'), parts('x', 4))());
    right(await writeCheckpoint(join(out, 'checkpoint-12'), parts('y', 12))());
    expect(right(await resolveCheckpoint(out))).toBe(join(out, 'checkpoint-12'));
    expect(right(await resolveCheckpoint(join(out, 'checkpoint-4')))).toBe(join(out, 'checkpoint-4'));
    const empty = join(tmp.path, 'e');
    mkdirSync(empty);
    expect(leftMessage(await resolveCheckpoint(empty))).toBe(`resume: ${empty} holds no ${TRAINER_FILE} and no complete checkpoint-N folder`);
  });

  it('refuses a trainer state or optimizer state that does not fit, naming the file and the leaf', async () => {
    const dir = join(tmp.path, 'f');
    mkdirSync(dir);
    right(await writeCheckpoint(join(dir, 'ck'), parts('x'))());
    const ck = join(dir, 'ck');
    writeFileSync(join(ck, TRAINER_FILE), JSON.stringify({ step: 3, dataPos: 6, key: [1] }));
    expect(leftMessage(await readTrainerState(ck))).toBe(`${join(ck, TRAINER_FILE)}: expected {step, dataPos, key: [u32, u32]}`);
    writeFileSync(join(ck, TRAINER_FILE), '{"step": 3,');
    expect(leftMessage(await readTrainerState(ck))).toMatch(new RegExp(`^${join(ck, TRAINER_FILE).replace(/[.]/g, '\\.')}: cannot read \\(.*JSON`));
    const file = join(ck, OPTIMIZER_FILE);
    expect(leftMessage(await readOptState(ck, { ...state(), extra: C.zeros([2]) }))).toBe(`${file}: optimizer state 'extra' missing`);
    expect(leftMessage(await readOptState(ck, { ...state(), m: { w: C.zeros([4]) } }))).toBe(`${file}: optimizer state 'm.w' is (2,2), expected (4,)`);
    expect(leftMessage(await readOptState(join(tmp.path, 'nowhere'), state()))).toContain(join(tmp.path, 'nowhere', OPTIMIZER_FILE));
  });

  it("a bare tensor as the optimizer state is stored as 'value' and read back; trainer_state.json ends its last line", async () => {
    const dir = join(tmp.path, 'bare', checkpointName(1));
    const w = C.tensor([1.5, -2], { dtype: 'f32' });
    right(await writeCheckpoint(dir, { model: async () => {}, optState: w, trainer: { step: 1, dataPos: 1, key: [0, 0] } })());
    const back = right(await readOptState(dir, C.tensor([0, 0], { dtype: 'f32' })));
    expect(Array.from(await data(back))).toEqual([1.5, -2]);
    const bytes = readFileSync(join(dir, OPTIMIZER_FILE));
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<string, unknown>;
    expect(Object.keys(header).filter((k) => k !== '__metadata__')).toEqual(['value']);
    const text = readFileSync(join(dir, TRAINER_FILE), 'utf8');
    expect(text.endsWith('}\n')).toBe(true);
  });

  it('copyInto keeps the file name unless given another', async () => {
    const src = join(tmp.path, 'tok.model');
    writeFileSync(src, 'bytes');
    const dir = join(tmp.path, 'g');
    mkdirSync(dir);
    await copyInto(src, dir);
    await copyInto(src, dir, 'tokenizer.model');
    expect(readdirSync(dir).sort()).toEqual(['tok.model', 'tokenizer.model']);
    expect(readFileSync(join(dir, 'tokenizer.model'), 'utf8')).toBe('bytes');
  });
});
