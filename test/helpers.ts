// Helpers shared by the test files: unwrapping Eithers at the edge of a test, element-wise differences, a
// per-suite temporary directory, and the stories260K fixture's paths.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import type { LlamaConfig } from '../models/llama.js';
import { afterAll, beforeAll, expect } from 'vitest';

/** The Right value, or the Left's message thrown. */
export const right = <L extends { message: string }, A>(e: E.Either<L, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left.message);
  return e.right;
};

/** The Left's message; a Right fails the test. */
export const leftMessage = <L extends { message: string }, A>(e: E.Either<L, A>): string => {
  if (E.isRight(e)) throw new Error('expected a Left, got a Right');
  return e.left.message;
};

/** max |a − b| over equally long arrays. */
export const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

/** max |a − b| / (1 + |b|) over equally long arrays. */
export const maxRelDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / (1 + Math.abs(b[i]!)));
  return m;
};

/** A fresh temporary directory for the enclosing suite (made before its tests, removed after): read `.path`. */
export const tempDir = (prefix: string): { readonly path: string } => {
  let dir = '';
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), prefix)); });
  afterAll(async () => { await rm(dir, { recursive: true, force: true }); });
  return { get path() { return dir; } };
};

/**
 * A folder of ../shared/fixtures (e.g. 'stories260K', 'llama2-tokenizer-32k'), found once per test file: in CI a
 * missing folder fails the file; elsewhere the skip is announced, naming what is skipped.
 */
export const fixture = (sub: string, skipping: string): { path: string; have: boolean } => {
  const path = resolve(import.meta.dirname, '../../shared/fixtures', sub);
  const have = existsSync(path);
  if (!have) {
    if (process.env.CI === 'true') throw new Error(`CI=true but the fixtures are missing: ${path}`);
    console.warn(`SKIPPING ${skipping}: no fixtures at ${path}`);
  }
  return { path, have };
};

/** The stories260K fixture's Hugging Face folder and tokenizer (and the fixtures folder above it), as `fixture`. */
export const stories260K = (skipping: string): { fixtures: string; model: string; tok: string; have: boolean } => {
  const { path, have } = fixture('stories260K', skipping);
  return { fixtures: resolve(path, '..'), model: join(path, 'hf'), tok: join(path, 'tok512.model'), have };
};

/** The tiny Llama the unit tests build at random (dim 8, 2 heads sharing 1 KV head, vocabulary 11), with overrides. */
export const tinyLlama = (over: Partial<LlamaConfig> = {}): LlamaConfig => ({
  dim: 8, hiddenDim: 12, nLayers: 2, nHeads: 2, nKvHeads: 1, headDim: 4, vocabSize: 11, seqLen: 16,
  normEps: 1e-5, ropeTheta: 10000, tieEmbeddings: false, bosId: 1, eosId: 2, ...over,
});
