// Opening the WebGPU device for tests: skipped with a visible message when no adapter exists, except in CI
// (CI=true), where the WebGPU tests must run and fail instead.

import { webgpuDevice } from '../core/runtime.js';
import type { Device } from '../core/device.js';

export const gpuDevice: Device | null = await webgpuDevice();
if (!gpuDevice) {
  if (process.env.CI === 'true') throw new Error('CI=true but no WebGPU adapter opened: lavapipe (mesa-vulkan-drivers from bookworm-backports) must be installed');
  console.warn('SKIPPING WebGPU tests: no WebGPU adapter (install mesa-vulkan-drivers 25 for lavapipe)');
}
