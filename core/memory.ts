// What the GPU holds: counters for allocations, bytes in use, compiles and submits, and a scope helper that
// disposes every tensor realised inside it except those it returns.

import { scopes, webgpuDevice } from './runtime.js';
import { flatten } from './tree.js';
import type { DeviceCounters } from './device.js';

/** Device counters (null when no WebGPU device is open): allocations, bytesInUse, bytesPooled, compiles, submits. */
export const deviceCounters = async (): Promise<DeviceCounters | null> => (await webgpuDevice())?.counters ?? null;

/**
 * Run `f`, then free the GPU buffers of every tensor realised inside it except those in its result (a pytree).
 * @example const loss = await scope(async () => { const [l] = await step(params); return l; });
 */
export const scope = async <T>(f: () => Promise<T> | T): Promise<T> => {
  const mine = new Set<import('./node.js').Node>();
  scopes.push(mine);
  let result: T;
  try {
    result = await f();
  } finally {
    scopes.pop();
  }
  const keep = new Set(flatten(result).leaves.map((t) => t.node));
  const outer = scopes[scopes.length - 1];
  for (const n of mine) {
    if (keep.has(n)) outer?.add(n);
    else if (n.gpu) { n.gpu.free(); n.gpu = null; }
  }
  return result;
};
