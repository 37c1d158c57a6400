// Typed device errors: every failure of Dawn (no adapter, a WGSL error, out of memory, a lost device) becomes
// one of these tags, so a caller can tell a bug in a generated kernel from a machine without a GPU.

import type { Either } from 'fp-ts/lib/Either.js';

/** One line of a WGSL compiler report, 1-based line/column into the kernel source. */
export interface CompilationMessage {
  readonly type: 'error' | 'warning' | 'info';
  readonly line: number;
  readonly column: number;
  readonly text: string;
}

export type DeviceError =
  | { readonly _tag: 'NoAdapter'; readonly message: string }
  | {
      readonly _tag: 'Validation';
      readonly message: string;
      /** The kernel's label and the op names it was generated from (empty when unknown). */
      readonly label: string;
      readonly ops: readonly string[];
      /** The full WGSL source that failed (empty for a validation error outside pipeline creation). */
      readonly wgsl: string;
      readonly messages: readonly CompilationMessage[];
    }
  | { readonly _tag: 'OutOfMemory'; readonly message: string; readonly bytes: number }
  | { readonly _tag: 'DeviceLost'; readonly message: string; readonly reason: string }
  | { readonly _tag: 'Internal'; readonly message: string }
  /**
   * A kernel reported a fault into the device's fault words (Device.faults), found by the next readback: `words`
   * are what it wrote; the runtime turns them into the op's own error (e.g. gather's out-of-range index).
   */
  | { readonly _tag: 'Fault'; readonly message: string; readonly words: readonly number[] };

/** Thrown where an API is synchronous or a Promise (alloc, encode, readback, sync); carries the typed error. */
export class DeviceFailure extends Error {
  constructor(readonly error: DeviceError) {
    super(`${error._tag}: ${error.message}`);
    this.name = 'DeviceFailure';
  }
}

/** Unwrap at the public edge: a Left becomes a thrown DeviceFailure. */
export const orThrow = <A>(e: Either<DeviceError, A>): A => {
  if (e._tag === 'Left') throw new DeviceFailure(e.left);
  return e.right;
};

const excerpt = (wgsl: string, m: CompilationMessage): string => {
  const src = wgsl.split('\n')[m.line - 1];
  if (src === undefined) return '';
  return `\n    ${src}\n    ${' '.repeat(Math.max(0, m.column - 1))}^`;
};

/** A Validation error whose message names the kernel, its ops, and each compiler message with its source line. */
export const validationError = (
  label: string,
  ops: readonly string[],
  wgsl: string,
  messages: readonly CompilationMessage[],
  fallback: string,
): DeviceError => {
  const what = `kernel '${label}'${ops.length > 0 ? ` (ops: ${ops.join(', ')})` : ''}`;
  const lines = messages
    .filter((m) => m.type === 'error')
    .map((m) => `  ${m.line}:${m.column}: ${m.text}${excerpt(wgsl, m)}`);
  const body = lines.length > 0 ? lines.join('\n') : `  ${fallback}`;
  return { _tag: 'Validation', message: `WGSL validation failed for ${what}:\n${body}`, label, ops, wgsl, messages };
};

/** Map a GPUError raised by Dawn outside pipeline creation (uncaptured, or from an error scope). */
export const fromGpuError = (err: GPUError, context: string): DeviceError => {
  const message = `${context}: ${err.message}`;
  switch (err.constructor.name) {
    case 'GPUValidationError':
      return { _tag: 'Validation', message, label: context, ops: [], wgsl: '', messages: [] };
    case 'GPUOutOfMemoryError':
      return { _tag: 'OutOfMemory', message, bytes: 0 };
    default:
      return { _tag: 'Internal', message };
  }
};
