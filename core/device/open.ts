// Opening Dawn and the Device handle: limits and features, the buffer pool, pipelines, bind groups, one-submit
// dispatch encoding, transfers and synchronisation. Knows nothing about ops or graphs.

import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { create } from 'webgpu';
import { BindGroupCache, type Binding } from './bindings.js';
import { type DeviceError, DeviceFailure, fromGpuError } from './errors.js';
import { type KernelSource, PipelineCache } from './pipelines.js';
import { Pacer } from './pace.js';
import { FirstDispatchTracer, TRACE_COMPILES } from './trace.js';
import { quietly } from './quiet.js';
import { DAWN_LIMIT_NOTICE, filterNativeStderr } from './stderr.js';
import { BufferPool, Usage, type BufferKind, type PoolCounters } from './pool.js';

/** The adapter limits a kernel generator needs; requested at their real (adapter) values, not the defaults. */
export interface DeviceLimits {
  readonly maxStorageBufferBindingSize: number;
  readonly maxBufferSize: number;
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX: number;
  readonly maxComputeWorkgroupSizeY: number;
  readonly maxComputeWorkgroupsPerDimension: number;
  readonly maxStorageBuffersPerShaderStage: number;
}
const LIMIT_NAMES: readonly (keyof DeviceLimits)[] = [
  'maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupsPerDimension', 'maxStorageBuffersPerShaderStage',
];

export interface DeviceFeatures {
  readonly shaderF16: boolean;
  readonly subgroups: boolean;
  readonly timestampQuery: boolean;
}

export interface AdapterDescription {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  /** A CPU rasteriser (lavapipe/llvmpipe, SwiftShader): wants different kernel shapes than a real GPU. */
  readonly isSoftware: boolean;
}

export interface DeviceCounters extends PoolCounters {
  readonly compiles: number;
  readonly bindGroups: number;
  readonly submits: number;
}

/** One kernel launch in an encoded batch. */
export interface Dispatch {
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly workgroups: readonly [number, number, number];
  /** It binds Device.faults and may report a fault there: the next readback then takes the fault words along. */
  readonly faults?: boolean;
}

/**
 * Bytes of the fault words that kernels report into (Device.faults): word 0 counts reports, and the first
 * report's words follow (what they mean is the reporting kernel's business, see core/wgsl/indexing.ts).
 */
export const FAULT_BYTES = 32;

type TypedArray = Float32Array | Int32Array | Uint32Array | Uint8Array | Uint16Array | Float64Array;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * An open WebGPU device. Create with `openDevice()` or the process-wide `getDevice()`.
 * @example
 * const dev = orThrow(await openDevice()());
 * const buf = dev.alloc(16); dev.upload(buf, new Float32Array([1, 2, 3, 4]));
 * console.log(await dev.readback(buf, 16)); // Float32Array [1, 2, 3, 4]
 * dev.destroy();
 */
export class Device {
  readonly gpuDevice: GPUDevice;
  readonly adapter: AdapterDescription;
  readonly limits: DeviceLimits;
  readonly features: DeviceFeatures;
  // The GPU object from create(): if it were collected while work is pending, promises hang or Dawn crashes.
  private gpu: GPU | null;
  private readonly pool: BufferPool;
  private readonly pipelines: PipelineCache;
  private readonly groups: BindGroupCache;
  private readonly errors: DeviceError[] = [];
  private lostError: DeviceError | null = null;
  private destroyed = false;
  private submits = 0;
  // Waits sleep through most of a paced submit's learned GPU time first (see ./pace.ts).
  private readonly pacer = new Pacer();
  private faultWords: GPUBuffer | null = null;
  // A dispatch that binds the fault words was encoded since a readback last took them.
  private faultsPending = false;
  private readonly tracer = TRACE_COMPILES ? new FirstDispatchTracer(() => this.live().queue) : null;

  constructor(gpu: GPU, device: GPUDevice, adapter: AdapterDescription, limits: DeviceLimits, features: DeviceFeatures) {
    this.gpu = gpu;
    this.gpuDevice = device;
    this.adapter = adapter;
    this.limits = limits;
    this.features = features;
    this.pool = new BufferPool((size, usage, label) => device.createBuffer({ size, usage, label }), limits.maxBufferSize);
    this.pipelines = new PipelineCache(() => this.live());
    this.groups = new BindGroupCache(() => this.live());
    device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      this.errors.push(fromGpuError(ev.error, 'uncaptured device error'));
    };
    void device.lost.then((info) => {
      if (!this.destroyed) this.lostError = { _tag: 'DeviceLost', message: info.message, reason: info.reason };
      forgetDevice(this);
    });
  }

  get counters(): DeviceCounters {
    return { ...this.pool.counters, compiles: this.pipelines.compiles, bindGroups: this.groups.created, submits: this.submits };
  }

  private live(): GPUDevice {
    if (this.lostError !== null) throw new DeviceFailure(this.lostError);
    if (this.destroyed) throw new DeviceFailure({ _tag: 'DeviceLost', message: 'device was destroyed', reason: 'destroyed' });
    return this.gpuDevice;
  }

  /** Throw the first error Dawn reported asynchronously since the last check (uncaptured errors, device loss). */
  private check(): void {
    this.live();
    const first = this.errors.shift();
    if (first !== undefined) {
      this.errors.length = 0;
      throw new DeviceFailure(first);
    }
  }

  /** A pooled buffer of at least `bytes` bytes (STORAGE|COPY_SRC|COPY_DST unless `kind` says otherwise). */
  alloc(bytes: number, kind: BufferKind = 'storage'): GPUBuffer {
    this.live();
    if (bytes > this.limits.maxBufferSize) {
      throw new DeviceFailure({ _tag: 'OutOfMemory', message: `buffer of ${bytes} bytes exceeds maxBufferSize ${this.limits.maxBufferSize}`, bytes });
    }
    return this.pool.alloc(bytes, kind);
  }

  /**
   * The fault words (FAULT_BYTES, zero until a kernel reports): a kernel that can fail on data (an index out of
   * range) binds them and reports instead of failing silently. No extra submit or wait: the next readback after
   * such a dispatch copies the words along with its data and clears them in the same submit, and throws a
   * DeviceFailure tagged 'Fault' (carrying the words) when one was reported.
   */
  get faults(): GPUBuffer {
    this.faultWords ??= this.live().createBuffer({ size: FAULT_BYTES, usage: Usage.STORAGE | Usage.COPY_SRC | Usage.COPY_DST, label: 'faults' });
    return this.faultWords;
  }

  /** Give a buffer back to the pool; the caller must not use it afterwards (work already submitted is fine). */
  free(buf: GPUBuffer): void {
    this.pool.free(buf);
  }

  /** Destroy every pooled (free) buffer and forget cached bind groups. */
  emptyPool(): void {
    this.pool.empty();
    this.groups.clear();
  }

  /** The compute pipeline for a kernel, compiled once per (WGSL, entry point); a WGSL error is a Left(Validation). */
  pipeline(src: KernelSource): TaskEither<DeviceError, GPUComputePipeline> {
    return this.pipelines.get(src);
  }

  /** An already-compiled pipeline, or undefined; never compiles. */
  cachedPipeline(src: KernelSource): GPUComputePipeline | undefined {
    return this.pipelines.peek(src);
  }

  /** A bind group for group 0 with bindings 0..n-1, cached by (pipeline, buffers, ranges) identity. */
  bindGroup(pipeline: GPUComputePipeline, bindings: readonly Binding[]): GPUBindGroup {
    this.live();
    return this.groups.get(pipeline, bindings);
  }

  /**
   * Encode all dispatches into one command encoder and one compute pass, and submit once. With `pace`, a key for
   * work that repeats (a compiled step), the next wait first sleeps through most of that key's learned GPU time.
   */
  encode(list: readonly Dispatch[], label = 'step', pace?: string): void {
    if (this.tracer) {
      // Each pipeline's first dispatch alone, timed (core/device/trace.ts); the runs between them as one submit each.
      let from = 0;
      list.forEach((d, i) => {
        if (!this.tracer!.isFirst(d.pipeline)) return;
        if (i > from) this.submit(list.slice(from, i), label, pace);
        this.submit([d], label, pace, d.pipeline);
        from = i + 1;
      });
      if (from < list.length) this.submit(list.slice(from), label, pace);
      return;
    }
    this.submit(list, label, pace);
  }

  private submit(list: readonly Dispatch[], label: string, pace?: string, first?: GPUComputePipeline): void {
    const device = this.live();
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    const enc = device.createCommandEncoder({ label });
    const pass = enc.beginComputePass({ label });
    for (const d of list) {
      const [x, y, z] = d.workgroups;
      if (x > max || y > max || z > max) {
        pass.end();
        throw new DeviceFailure({
          _tag: 'Validation', message: `dispatch of '${d.pipeline.label}' with workgroups [${x}, ${y}, ${z}] exceeds ${max} per dimension`,
          label: d.pipeline.label, ops: [], wgsl: '', messages: [],
        });
      }
      if (x === 0 || y === 0 || z === 0) continue;
      if (d.faults) this.faultsPending = true;
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(x, y, z);
    }
    pass.end();
    device.queue.submit([enc.finish()]);
    this.submits++;
    this.tracer?.submitted(first);
    // Only a software adapter is paced: its kernels run on the very cores that a spinning wait takes.
    this.pacer.submitted(this.adapter.isSoftware ? pace : undefined, performance.now());
  }

  /**
   * Wait for `start()`, a Dawn promise for submitted work: on a CPU adapter, first sleep through most of the paced
   * work still expected to run, then (unless the work is known to be short) wait without spinning a core.
   */
  private async wait<T>(start: () => Promise<T>, atLeastMs = 0): Promise<T> {
    const wait = this.pacer.begin(performance.now(), atLeastMs);
    if (wait.sleepMs > 0) await sleep(wait.sleepMs);
    const woke = performance.now();
    const out = await (this.adapter.isSoftware && !wait.short ? quietly(start) : start());
    wait.done(woke, performance.now());
    return out;
  }

  /** Write host data into a buffer (queue.writeBuffer; byte length and offset must be multiples of 4). */
  upload(buf: GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
    this.live().queue.writeBuffer(buf, byteOffset, data.buffer, data.byteOffset, data.byteLength);
  }

  /**
   * Copy `bytes` bytes of a buffer back to the host through a pooled MAP_READ staging buffer, into `into`
   * (preallocated: the fast path) or a new Float32Array. When a dispatch that may report faults ran since the
   * last readback, the fault words come back in the same copy: a reported fault is thrown (tag 'Fault').
   */
  readback(buf: GPUBuffer, bytes: number): Promise<Float32Array>;
  readback<T extends TypedArray>(buf: GPUBuffer, bytes: number, into: T, srcOffset?: number): Promise<T>;
  async readback(buf: GPUBuffer, bytes: number, into?: TypedArray, srcOffset = 0): Promise<TypedArray> {
    const device = this.live();
    const out = into ?? new Float32Array(bytes / 4);
    if (out.byteLength < bytes) throw new RangeError(`readback: destination holds ${out.byteLength} bytes, ${bytes} requested`);
    if (bytes === 0) return out;
    // bytes is a multiple of 4 (copies require it), so the fault words start 4-aligned right after the data.
    const faults = this.faultsPending ? this.faultWords : null;
    const total = bytes + (faults ? FAULT_BYTES : 0);
    const stage = this.pool.alloc(total, 'staging');
    let words: Uint32Array | null = null;
    try {
      const enc = device.createCommandEncoder({ label: 'readback' });
      enc.copyBufferToBuffer(buf, srcOffset, stage, 0, bytes);
      if (faults) {
        enc.copyBufferToBuffer(faults, 0, stage, bytes, FAULT_BYTES);
        enc.clearBuffer(faults);
        this.faultsPending = false;
      }
      device.queue.submit([enc.finish()]);
      this.submits++;
      await this.wait(() => stage.mapAsync(1 /* GPUMapMode.READ */, 0, total));
      const mapped = stage.getMappedRange(0, total);
      new Uint8Array(out.buffer, out.byteOffset, bytes).set(new Uint8Array(mapped, 0, bytes));
      if (faults) words = new Uint32Array(mapped.slice(bytes, total));
    } catch (err) {
      this.check();
      throw err instanceof DeviceFailure ? err : new DeviceFailure({ _tag: 'Internal', message: `readback: ${String(err)}` });
    } finally {
      if (stage.mapState === 'mapped') stage.unmap();
      this.pool.free(stage);
    }
    this.check();
    if (words !== null && words[0] !== 0) {
      throw new DeviceFailure({ _tag: 'Fault', message: `a kernel reported a fault (words ${[...words].join(', ')})`, words: [...words] });
    }
    return out;
  }

  /**
   * Wait until all submitted work has finished. dawn.node spins a core while a GPU promise is pending, which on
   * a CPU adapter slows the kernels themselves: the longer of paced work's learned time and `sleepMs` is slept first.
   */
  async sync(sleepMs = 0): Promise<void> {
    const device = this.live();
    await this.wait(() => device.queue.onSubmittedWorkDone(), sleepMs);
    this.check();
  }

  /** Destroy all buffers and the device, and drop the GPU object so Node can exit. Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    forgetDevice(this);
    this.pool.destroyAll();
    this.groups.clear();
    this.pipelines.clear();
    this.faultWords?.destroy();
    this.faultWords = null;
    this.gpuDevice.destroy();
    this.gpu = null;
  }

  get isOpen(): boolean {
    return !this.destroyed && this.lostError === null && this.gpu !== null;
  }
}

const describe = (adapter: GPUAdapter): AdapterDescription => {
  const i = adapter.info;
  const text = `${i.vendor} ${i.architecture} ${i.device} ${i.description}`;
  const fallback = (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  return {
    vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
    isSoftware: fallback || /llvmpipe|lavapipe|swiftshader|software/i.test(text),
  };
};

/**
 * Open Dawn, the first adapter and a device with the adapter's real limits and the optional features
 * shader-f16, subgroups and timestamp-query when present.
 * @example
 * const r = await openDevice()();
 * if (r._tag === 'Left') console.log(r.left.message); else r.right.destroy();
 */
export const openDevice = (): TaskEither<DeviceError, Device> => async () => {
  let gpu: GPU;
  try {
    gpu = create([]);
  } catch (err) {
    return E.left({ _tag: 'NoAdapter', message: `Dawn could not start (webgpu package): ${String(err)}` });
  }
  // Dawn prints its limit-clamping notices while it enumerates adapters (inside this call): keep them from the user.
  const adapter = await filterNativeStderr(() => gpu.requestAdapter({ powerPreference: 'high-performance' }), DAWN_LIMIT_NOTICE).catch(() => null);
  if (adapter === null) {
    return E.left({
      _tag: 'NoAdapter',
      message: 'no WebGPU adapter: install a Vulkan driver (on Linux without a GPU: mesa-vulkan-drivers for lavapipe)',
    });
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) requiredLimits[name] = adapter.limits[name];
  const wanted: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query'];
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
  try {
    const device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: 'camelid' });
    const limits = Object.fromEntries(LIMIT_NAMES.map((n) => [n, device.limits[n]])) as unknown as DeviceLimits;
    const features: DeviceFeatures = {
      shaderF16: device.features.has('shader-f16'),
      subgroups: device.features.has('subgroups'),
      timestampQuery: device.features.has('timestamp-query'),
    };
    return E.right(new Device(gpu, device, describe(adapter), limits, features));
  } catch (err) {
    return E.left({ _tag: 'Internal', message: `requestDevice failed: ${String(err)}` });
  }
};

let shared: Promise<E.Either<DeviceError, Device>> | null = null;
let sharedDevice: Device | null = null;

function forgetDevice(d: Device): void {
  if (sharedDevice === d) {
    shared = null;
    sharedDevice = null;
  }
}

/** The process-wide device, opened on first use; after it is destroyed or lost, the next call opens a new one. */
export const getDevice = (): Promise<E.Either<DeviceError, Device>> => {
  if (shared === null) {
    shared = openDevice()().then((r) => {
      if (E.isRight(r)) sharedDevice = r.right;
      else shared = null; // retry later (e.g. a driver installed meanwhile)
      return r;
    });
  }
  return shared;
};
