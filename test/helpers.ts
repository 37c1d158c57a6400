// Helpers shared by the test files: unwrapping Eithers at the edge of a test, element-wise differences, and a
// per-suite temporary directory.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
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
