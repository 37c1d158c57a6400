// Opening the WebGPU device for tests: skipped with a visible message when no adapter exists, except in CI
// (CI=true), where the WebGPU tests must run and fail instead.

import { webgpuDevice } from '../core/runtime.js';
import type { Device } from '../core/device.js';

export const gpuDevice: Device | null = await webgpuDevice();
if (!gpuDevice) {
  if (process.env.CI === 'true') throw new Error('CI=true but no WebGPU adapter opened: lavapipe (mesa-vulkan-drivers from bookworm-backports) must be installed');
  console.warn('SKIPPING WebGPU tests: no WebGPU adapter (install mesa-vulkan-drivers 25 for lavapipe)');
}

/** A device of the test file's own (for device-level tests that destroy it), with the same skip/fail rule. */
export const openTestDevice = async (file: string): Promise<Device | null> => {
  const { openDevice } = await import('../core/device.js');
  const opened = await openDevice()();
  if (opened._tag === 'Right') return opened.right;
  if (process.env.CI === 'true') throw new Error(`CI=true but no WebGPU adapter opened for ${file}: ${opened.left.message}`);
  console.warn(`[${file}] SKIPPED: no WebGPU adapter (${opened.left.message})`);
  return null;
};
