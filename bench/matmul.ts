// Matmul GFLOP/s of our tiled kernel against @jax-js/jax on the same adapter, and the vec4 copy bandwidth that
// bounds any elementwise kernel. Run: `npx tsx bench/matmul.ts`. Exports the timing helpers for other benches.

import { pathToFileURL } from 'node:url';
import { globals } from 'webgpu';
import { type Device, type Dispatch, openDevice, orThrow } from '../core/device.js';
import { matmulKernel, pickMatmulTiles } from '../core/wgsl/matmul.js';
import { compileKernels, dispatchesOf, ensureUploaded, planScratch, scheduleFor } from '../core/runtime.js';
import { schedule } from '../core/schedule/index.js';
import type { Node } from '../core/node.js';

export interface Timing {
  /** Median milliseconds per repetition. */
  readonly medianMs: number;
  readonly samplesMs: readonly number[];
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/**
 * Time a list of dispatches: each trial encodes `reps` copies of the list into one submit and awaits once.
 * `sleep` sleeps ~90% of the previous trial's time before awaiting, so dawn.node's busy-wait does not steal a
 * core from lavapipe; it defaults to on for software adapters only (spinning takes nothing from a real GPU, and a
 * sleep's wake-up latency would be measured instead). Returns the median time per repetition; the first
 * (warm-up) trial is dropped.
 */
export const timeDispatches = async (
  dev: Device,
  list: readonly Dispatch[],
  opts: { readonly reps: number; readonly trials: number; readonly sleep?: boolean },
): Promise<Timing> => {
  const batch: Dispatch[] = [];
  for (let r = 0; r < opts.reps; r++) batch.push(...list);
  const samples: number[] = [];
  // The sleep must undershoot the GPU time, or the sleep itself is what gets measured: a trial counts only if
  // the work was still running when the sleep ended; otherwise the next sleep is shorter.
  const sleep = opts.sleep ?? dev.adapter.isSoftware;
  let sleepMs = 0;
  for (let t = 0; samples.length < opts.trials && t < 4 * opts.trials + 4; t++) {
    const t0 = performance.now();
    dev.encode(batch, 'bench');
    await dev.sync(sleepMs);
    const ms = performance.now() - t0;
    const stillRunning = ms - sleepMs > Math.max(0.5, 0.03 * ms);
    // t = 0 is a warm-up; with sleeping, only trials that slept and still found the work running count.
    if (t > 0 && (!sleep || (sleepMs > 0 && stillRunning))) samples.push(ms / opts.reps);
    if (sleep) sleepMs = stillRunning ? 0.9 * ms : 0.7 * sleepMs;
  }
  return { medianMs: median(samples), samplesMs: samples };
};

/**
 * Schedule and compile a graph's nodes outside any step: its dispatches (one per kernel, in order), with scratch
 * buffers for every kernel output; `free` returns them.
 */
export const compileGraph = async (dev: Device, nodes: readonly Node[]) => {
  const kernels = schedule(nodes, scheduleFor(dev));
  const compiled = await compileKernels(dev, kernels);
  for (const k of kernels) for (const n of k.inputs) if (!n.gpu && n.cpu) ensureUploaded(dev, n);
  const scratch = planScratch(dev, compiled.map((c) => c.kernels), new Set());
  const list = dispatchesOf(dev, compiled, (n) => n.gpu?.buffer ?? scratch.get(n)!);
  return { kernels, compiled, list, free: (): void => { for (const b of new Set(scratch.values())) dev.free(b); } };
};

/** A grid of vec4 copies, one vec4 per invocation: the bandwidth ceiling of an elementwise kernel. */
export const vec4CopyWgsl = `
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let i = id.x + id.y * nw.x * 256u;
  if (i < arrayLength(&dst)) { dst[i] = src[i]; }
}`;

/** Copy `floats` f32 values (multiple of 1024) with the vec4 kernel; GB/s counts bytes read plus written. */
export const measureCopy = async (dev: Device, floats = 16 * 1024 * 1024): Promise<{ gbs: number; timing: Timing }> => {
  const bytes = floats * 4;
  const src = dev.alloc(bytes), dst = dev.alloc(bytes);
  dev.upload(src, new Float32Array(floats).fill(1));
  const pipeline = orThrow(await dev.pipeline({ wgsl: vec4CopyWgsl, label: 'vec4_copy' })());
  const bindGroup = dev.bindGroup(pipeline, [{ buffer: src, size: bytes }, { buffer: dst, size: bytes }]);
  const groups = floats / 4 / 256;
  const x = Math.min(groups, dev.limits.maxComputeWorkgroupsPerDimension);
  const workgroups = [x, Math.ceil(groups / x), 1] as const;
  const timing = await timeDispatches(dev, [{ pipeline, bindGroup, workgroups }], { reps: 4, trials: 5 });
  dev.free(src);
  dev.free(dst);
  return { gbs: (2 * bytes) / (timing.medianMs * 1e6), timing };
};

const randomMatrix = (n: number): Float32Array => Float32Array.from({ length: n * n }, () => Math.random() - 0.5);
const gflops = (n: number, ms: number): number => (2 * n ** 3) / (ms * 1e6);
/** Repetitions per timed submit: enough work that one submit's fixed cost is small (16× more on a real GPU). */
const repsFor = (dev: Device, n: number): number => (n >= 1024 ? 2 : n >= 512 ? 4 : 16) * (dev.adapter.isSoftware ? 1 : 16);

/** Our n×n×n matmul (row-major A and B), compiled once; `time` runs one set of trials. */
export const prepareMatmul = async (dev: Device, n: number) => {
  const k = matmulKernel({
    batch: 1, M: n, N: n, K: n,
    aStrides: { batch: 0, row: n, col: 1 }, bStrides: { batch: 0, row: n, col: 1 },
    tiles: pickMatmulTiles(dev, { M: n, N: n }),
  });
  const a = dev.alloc(n * n * 4), b = dev.alloc(n * n * 4), c = dev.alloc(n * n * 4);
  dev.upload(a, randomMatrix(n));
  dev.upload(b, randomMatrix(n));
  const pipeline = orThrow(await dev.pipeline({ wgsl: k.wgsl, label: k.label })());
  const list = [{ pipeline, bindGroup: dev.bindGroup(pipeline, [a, b, c]), workgroups: k.workgroups }];
  return {
    time: (sleep: boolean, trials: number): Promise<Timing> => timeDispatches(dev, list, { reps: repsFor(dev, n), trials, sleep }),
    dispose: (): void => [a, b, c].forEach((x) => dev.free(x)),
  };
};

/**
 * jax-js on its own WebGPU instance (same adapter), set up once per process: jax-js keeps its device, and the
 * instance must stay alive as long as that device does (a second setup let the first instance be collected: the
 * process aborted). `time` calls jit(matmul) `reps` times, then one blockUntilReady on all results: jax-js is lazy,
 * and awaiting only the last result would let the others be dropped unevaluated.
 */
export const prepareJax = (): ReturnType<typeof setupJax> => (jaxOnce ??= setupJax());
let jaxOnce: ReturnType<typeof setupJax> | undefined;

const setupJax = async () => {
  const { create } = await import('webgpu');
  const gpu = create([]);
  // jax-js looks for navigator.gpu and the GPUBufferUsage/GPUMapMode globals, which dawn.node does not install.
  Object.assign(globalThis, globals);
  Object.defineProperty(globalThis, 'navigator', { value: { gpu, userAgent: 'node', hardwareConcurrency: 2 }, configurable: true });
  const jax = await import('@jax-js/jax');
  const available = await jax.init();
  if (!available.includes('webgpu')) throw new Error(`jax-js found no webgpu backend (has ${available.join(', ')})`);
  jax.defaultDevice('webgpu');
  const np = jax.numpy;
  type Arr = ReturnType<typeof np.array>;
  const mm = jax.jit((x: Arr, y: Arr) => np.matmul(x, y));
  return {
    gpu,
    time: async (n: number, reps: number, trials: number): Promise<Timing> => {
      const x = np.array(randomMatrix(n)).reshape([n, n]);
      const y = np.array(randomMatrix(n)).reshape([n, n]);
      const samples: number[] = [];
      for (let t = 0; t <= trials; t++) {
        const t0 = performance.now();
        const results = Array.from({ length: reps }, () => mm(x.ref, y.ref));
        await jax.blockUntilReady(results);
        if (t > 0) samples.push((performance.now() - t0) / reps);
        for (const r of results) r.dispose();
      }
      x.dispose();
      y.dispose();
      return { medianMs: median(samples), samplesMs: samples };
    },
  };
};

/** The whole matmul benchmark: copy GB/s, then ours vs jax-js GFLOP/s at n = 256, 512, 1024. */
export const matmulMain = async (): Promise<void> => {
  const ns = [256, 512, 1024];
  const rounds = 3;
  const dev = orThrow(await openDevice()());
  console.log(`adapter: ${dev.adapter.description} (${dev.adapter.isSoftware ? 'software' : 'gpu'})`);
  const copy = await measureCopy(dev);
  console.log(`vec4 copy, 16M floats: ${copy.gbs.toFixed(2)} GB/s read+write`);
  const jax = await prepareJax();
  // The ratio uses the wait that suits the adapter: sleeping on a software one (a spinning wait takes a core from
  // lavapipe), busy-awaiting on a real GPU (as jax-js does). The other wait is printed alongside.
  const soft = dev.adapter.isSoftware;
  console.log(`medians over ${rounds} interleaved rounds; ratio with ours ${soft ? 'sleeping before the await' : 'busy-awaiting'}`);
  console.log('   n | ours, sleeping | ours, busy await | jax-js GFLOP/s | ours/jax-js');
  for (const n of ns) {
    const ours = await prepareMatmul(dev, n);
    const s: { sleep: number[]; busy: number[]; jax: number[] } = { sleep: [], busy: [], jax: [] };
    // Interleaved so that load from other processes on this shared machine hits both sides alike.
    for (let r = 0; r < rounds; r++) {
      s.sleep.push(...(await ours.time(true, 3)).samplesMs);
      s.busy.push(...(await ours.time(false, 3)).samplesMs);
      s.jax.push(...(await jax.time(n, repsFor(dev, n), 2)).samplesMs);
    }
    ours.dispose();
    const [o, ob, j] = [s.sleep, s.busy, s.jax].map((x) => gflops(n, median(x))) as [number, number, number];
    console.log(`${String(n).padStart(4)} | ${o.toFixed(2).padStart(14)} | ${ob.toFixed(2).padStart(16)} | ${j.toFixed(2).padStart(14)} | ${((soft ? o : ob) / j).toFixed(2).padStart(10)}×`);
  }
  dev.destroy();
};

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  matmulMain().then(() => process.exit(0), (err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
