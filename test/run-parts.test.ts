// The parts SFT and DPO runs share (recipes/run-parts.ts): the epoch plan (which batch of which epoch a step reads,
// rebuilt once per epoch; the steps of a run), the tokenizer found beside the model or refused by name, the
// vocabulary check, the checkpoint to resume from, and a saved run folder with its tokenizer.
import { readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../models/cli-options.js';
import { checkVocab, epochPlan, resumeDirOf, resumeState, runTokenizer, saveRunModel } from '../recipes/run-parts.js';
import { adamw } from '../recipes/optim.js';
import { writeCheckpoint } from '../recipes/checkpoint.js';
import { tensor } from '../ops/create.js';
import { data } from '../core/backend.js';
import { loadLlama } from '../models/load.js';
import { fixture, right, tempDir } from './helpers.js';

const { path: fixtures, have: haveFixtures } = fixture('stories260K', 'the run-parts tokenizer tests');

describe('epoch plan', () => {
  it('step i reads batch i mod perEpoch of epoch ⌊i / perEpoch⌋, each epoch built once, in order', () => {
    const built: number[] = [];
    const plan = epochPlan((epoch) => { built.push(epoch); return [0, 1, 2].map((b) => `e${epoch}b${b}`); }, { epochs: 2, gradAccum: 2 });
    expect(plan.perEpoch).toBe(3);
    expect(plan.totalSteps).toBe(4); // 2 epochs × ⌈3 / 2⌉
    expect([0, 1, 2, 3, 4, 5, 6].map(plan.at)).toEqual(['e0b0', 'e0b1', 'e0b2', 'e1b0', 'e1b1', 'e1b2', 'e2b0']);
    expect(built).toEqual([0, 1, 2]);
    expect(plan.at(1)).toBe('e0b1'); // going back to an earlier epoch (a resumed run) rebuilds it
    expect(built).toEqual([0, 1, 2, 0]);
    expect([plan.where(0), plan.where(4)]).toEqual(['epoch 1, batch 1', 'epoch 2, batch 2']);
  });

  it('steps: `steps` when given, else epochs (1 when unset) × ⌈perEpoch / gradAccum⌉', () => {
    const five = (_e: number) => [1, 2, 3, 4, 5];
    expect(epochPlan(five, { steps: 11, epochs: 3, gradAccum: 2 }).totalSteps).toBe(11);
    expect(epochPlan(five, { gradAccum: 2 }).totalSteps).toBe(3);
    expect(epochPlan(five, { epochs: 3, gradAccum: 1 }).totalSteps).toBe(15);
    expect(epochPlan(five, { epochs: 2, gradAccum: 5 }).totalSteps).toBe(2);
  });
});

describe('run files', () => {
  const dir = tempDir('camelid-run-parts-');

  it.skipIf(!haveFixtures)('the tokenizer: given, or the only .model beside the model; none is refused naming the model', async () => {
    const given = await runTokenizer(join(fixtures, 'hf'), join(fixtures, 'tok512.model'));
    expect([given.path, given.tok.vocabSize]).toEqual([join(fixtures, 'tok512.model'), 512]);
    expect((await runTokenizer(join(fixtures, 'stories260K.bin'))).path).toBe(join(fixtures, 'tok512.model'));
    const lonely = join(dir.path, 'lonely', 'model');
    await mkdir(lonely, { recursive: true });
    await expect(runTokenizer(lonely)).rejects.toThrow(`no tokenizer found beside ${lonely}: set tokenizer`);
    await expect(runTokenizer(lonely, join(dir.path, 'none.model'))).rejects.toThrow(join(dir.path, 'none.model'));
    expect(() => checkVocab(given, 'm', 512)).not.toThrow();
    expect(() => checkVocab(given, 'm', 32000)).toThrow(`tokenizer ${given.path} has 512 tokens but model m has vocab_size 32000`);
  });

  it.skipIf(!haveFixtures)('a saved run folder holds the model, which loads back, and the tokenizer under its usual name', async () => {
    const { config, params } = right(await loadLlama(join(fixtures, 'hf'))());
    const folder = join(dir.path, 'saved');
    await mkdir(folder);
    await saveRunModel(config, join(fixtures, 'tok512.model'), null)(folder, params);
    expect(readdirSync(folder).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.model']);
    const back = right(await loadLlama(folder)());
    expect(await data(back.params.tokEmb)).toEqual(await data(params.tokEmb));
    const json = join(dir.path, 'tok.json');
    await writeFile(json, '{}');
    const folder2 = join(dir.path, 'saved2');
    await mkdir(folder2);
    await saveRunModel(config, json, null)(folder2, params);
    expect(readdirSync(folder2)).toContain('tokenizer.json');
  });

  it('resume: no path is no checkpoint; an output folder resolves to its newest checkpoint, whose state is read back', async () => {
    expect(await resumeDirOf(undefined)).toBeUndefined();
    expect(await resumeDirOf('')).toBeUndefined();
    await expect(resumeDirOf(join(dir.path, 'nothing'))).rejects.toThrow(join(dir.path, 'nothing'));
    const out = join(dir.path, 'out');
    const opt = adamw({ lr: 1e-3 });
    const params = { w: tensor([1, 2, 3]) };
    const state = opt.init(params);
    for (const step of [2, 4]) {
      const w = await writeCheckpoint(join(out, `checkpoint-${step}`), { model: async () => {}, optState: state, trainer: { step, dataPos: step * 3, key: [0, 1] } })();
      expect(w._tag).toBe('Right');
    }
    const at = await resumeDirOf(out);
    expect(at).toBe(join(out, 'checkpoint-4'));
    const logged: string[] = [];
    const back = await resumeState(at!, state, (s) => logged.push(s));
    expect([back.resume.step, back.resume.dataPos]).toEqual([4, 12]);
    expect(logged).toEqual([`resuming from ${at} at step 4`]);
    await writeFile(join(at!, 'trainer_state.json'), '{"step": "four"}');
    await expect(resumeState(at!, state, () => {})).rejects.toThrow(/trainer_state/);
    await writeFile(join(at!, 'optimizer.safetensors'), 'not safetensors');
    const bad = resumeState(at!, state, () => {});
    await expect(bad).rejects.toThrow(UsageError);
    await expect(resumeState(at!, state, () => {})).rejects.toThrow(/optimizer\.safetensors/);
  });
});
