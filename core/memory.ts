// What the GPU holds: counters for allocations, bytes in use, compiles and submits, and a scope helper that
// disposes every tensor realised inside it except those it returns.

import { webgpuDevice } from './runtime.js';
import type { DeviceCounters } from './device.js';

/** Device counters (null when no WebGPU device is open): allocations, bytesInUse, bytesPooled, compiles, submits. */
export const deviceCounters = async (): Promise<DeviceCounters | null> => (await webgpuDevice())?.counters ?? null;
