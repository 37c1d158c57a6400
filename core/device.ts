// The device layer's public face: Dawn through the `webgpu` package — opening, buffer pool, pipeline cache,
// bind groups, one-submit encoding, transfers, typed errors. The pieces live in core/device/.

export { Device, getDevice, openDevice } from './device/open.js';
export type { AdapterDescription, DeviceCounters, DeviceFeatures, DeviceLimits, Dispatch } from './device/open.js';
export { DeviceFailure, orThrow } from './device/errors.js';
export type { CompilationMessage, DeviceError } from './device/errors.js';
export type { Binding } from './device/bindings.js';
export type { KernelSource } from './device/pipelines.js';
export { sizeClass } from './device/pool.js';
export type { BufferKind, PoolCounters } from './device/pool.js';
