// The WebGPU backend: schedules a graph into kernels, renders and compiles them (pipelines cached by WGSL),
// allocates buffers from the pool with reuse by liveness inside a step, encodes every dispatch into one
// submit, and reads back only what is asked for. Realised nodes own their buffers until disposed.

import { availableParallelism } from 'node:os';
import * as E from 'fp-ts/lib/Either.js';
import type { Storage } from './dtype.js';
import { installWebGPU, type Backend } from './backend.js';
import { DeviceFailure, getDevice, orThrow, type Device, type DeviceError, type Dispatch } from './device.js';
import type { Node } from './node.js';
import { numel } from './shape.js';
import { kernelOuts, schedule, type Kernel, type ScheduleOpts } from './schedule/index.js';
import { renderElementwise, renderMatmulFns, renderRow, type RenderedKernel } from './wgsl/fused.js';
import { checkIndices, faultError, renderGather, renderScatterAdd, renderUpdate } from './wgsl/indexing.js';
import { renderAttention } from './wgsl/attention.js';
import { renderNf4 } from './wgsl/nf4.js';
import { matmulKernel, pickMatmulTiles } from './wgsl/matmul.js';
import { storeType } from './wgsl/literal.js';
import { mergeKernels, workgroupCount } from './wgsl/merge.js';
import { Tiers } from './device/tiers.js';

export const bytesOf = (n: Node) => Math.max(4, numel(n.shape) * 4);

/** Host data of a node in the layout its GPU buffer uses (bool → u32). */
const hostLayout = (n: Node, data: Storage): ArrayBufferView => {
  if (n.dtype === 'f64' || n.dtype === 'f16') throw new Error(`webgpu: ${n.dtype} tensors are not supported on WebGPU yet (${n.op.name} ${JSON.stringify(n.shape)}); cast to f32`);
  return n.dtype === 'bool' ? Uint32Array.from(data as Uint8Array) : data;
};

export interface Step { readonly kernel: Kernel; readonly rendered: readonly RenderedKernel[]; readonly bindings: (bufs: (n: Node) => GPUBuffer) => GPUBuffer[] }

/** WGSL and binding order for one kernel. */
export const lower = (dev: Device, k: Kernel, i: number, inPlace = false): Step => {
  const label = `k${i}:${k.kind}:${k.out.op.name}${JSON.stringify(k.out.shape)}`;
  const plain = (r: readonly RenderedKernel[]): Step => ({ kernel: k, rendered: r, bindings: (b) => [...k.inputs.map(b), ...kernelOuts(k).map(b), ...(r.some((x) => x.faults) ? [dev.faults] : [])] });
  switch (k.kind) {
    case 'elementwise': return plain([renderElementwise(k, label)]);
    case 'row': return plain([renderRow(k, label, dev.features.subgroups)]);
    case 'gather': return plain(renderGather(k, label));
    case 'scatterAdd': return plain(renderScatterAdd(k, label));
    case 'update': return plain(renderUpdate(k, label, inPlace));
    case 'attention': return plain([renderAttention(k, label)]);
    case 'nf4': return plain(renderNf4(k, label, (shape) => pickMatmulTiles(dev, shape)));
    case 'matmul': {
      const fns = renderMatmulFns(k);
      const outs = kernelOuts(k);
      const mk = matmulKernel({
        batch: k.batch, M: k.M, N: k.N, K: k.K,
        aStrides: k.a.strides, bStrides: k.b.strides, aOffset: k.a.offset, bOffset: k.b.offset,
        ...(k.c ? { cStrides: k.c.strides, cOffset: k.c.offset } : {}),
        ...(k.a.value ? { aValue: 'pa' } : {}),
        ...(k.b.value ? { bValue: 'pb' } : {}),
        ...(k.epilogue ? { epilogue: (acc: string, row: string, col: string, batch: string) => `epi(${acc}, ${row}, ${col}, ${batch})` } : {}),
        ...(k.stores ? { store: (acc: string, row: string, col: string, batch: string) => `epi(${acc}, ${row}, ${col}, ${batch})` } : {}),
        tiles: pickMatmulTiles(dev, { M: k.M, N: k.N }),
        skinnyRows: skinnyRows(dev),
        label,
        extraBindings: [
          ...fns.slots.map((s) => ({ name: `in${s}`, type: `array<${storeType(k.inputs[s]!.dtype)}>` })),
          ...outs.slice(1).map((n, j) => ({ name: `out${j + 1}`, type: `array<${storeType(n.dtype)}>`, output: true })),
        ],
        prelude: fns.prelude,
        ...(fns.rows ? { rows: fns.rows } : {}),
      });
      const operands = [...(k.a.value ? [] : [k.a.slot]), ...(k.b.value ? [] : [k.b.slot])];
      return {
        kernel: k,
        rendered: [{ wgsl: mk.wgsl, workgroups: mk.workgroups, label }],
        bindings: (b) => [...operands.map((s) => b(k.inputs[s]!)), b(k.out), ...fns.slots.map((s) => b(k.inputs[s]!)), ...outs.slice(1).map(b)],
      };
    }
  }
};

/**
 * A realised tensor garbage-collected without dispose() gets its buffer back into the pool here, silently: that is
 * correct, only later than dispose() would have been. With CAMELID_TRACE_LEAKS set (read when the buffer is given
 * out), each computed tensor remembers where it was realised and its collection is reported with that place, to
 * find what holds device memory longer than meant. GPU copies of host data (uploads) are never reported: they
 * are camelid's cache of a host tensor, not a value the caller asked to compute.
 */
const traceLeaks = (): boolean => typeof process !== 'undefined' && !!process.env.CAMELID_TRACE_LEAKS;
const leaks = new FinalizationRegistry<{ dev: Device; buf: GPUBuffer; at?: string }>(({ dev, buf, at }) => {
  if (!dev.isOpen) return;
  dev.free(buf);
  if (at) console.warn(`camelid: a realised tensor was garbage-collected without dispose(); its GPU buffer went back to the pool (use dispose(), \`using\`, or scope() to free it at once). It was realised at${at}`);
});

/** Nodes given buffers inside each open scope() (innermost last). */
export const scopes: Set<Node>[] = [];

/**
 * Give a node a GPU buffer that it owns (freed by dispose, or when the node is collected). `upload`: the buffer is
 * a copy of the node's host data, never reported by CAMELID_TRACE_LEAKS.
 */
export const own = (dev: Device, n: Node, buf: GPUBuffer, upload = false): void => {
  scopes[scopes.length - 1]?.add(n);
  let freed = false;
  const token = {};
  n.gpu = {
    buffer: buf, bytes: bytesOf(n),
    free: () => { if (!freed) { freed = true; leaks.unregister(token); dev.free(buf); } },
    release: () => { freed = true; leaks.unregister(token); },
  };
  const at = !upload && traceLeaks() ? ` (${n.dtype} ${JSON.stringify(n.shape)})\n${new Error().stack?.split('\n').slice(2, 9).join('\n') ?? ''}` : undefined;
  leaks.register(n, { dev, buf, ...(at ? { at } : {}) }, token);
};

export const ensureUploaded = (dev: Device, n: Node): GPUBuffer => {
  if (n.gpu) return n.gpu.buffer;
  if (!n.cpu) throw new Error(`webgpu: ${n.op.name} ${JSON.stringify(n.shape)} has no value to upload`);
  const buf = dev.alloc(bytesOf(n));
  dev.upload(buf, hostLayout(n, n.cpu));
  own(dev, n, buf, true);
  return buf;
};

/** Lowered kernels with their pipelines compiled: one kernel, or several independent ones sharing dispatches. */
export interface Compiled { readonly kernels: readonly Kernel[]; readonly step: Step; readonly pipelines: readonly GPUComputePipeline[] }

/** lavapipe's worker threads (LP_NUM_THREADS, else one per core): each runs a contiguous range of a dispatch. */
const softwareThreads = (): number => Number(process.env.LP_NUM_THREADS) || availableParallelism();

/** A kernel this small (in workgroups) may share its dispatch with independent ones (core/wgsl/merge.ts). */
const MERGE_MAX_WORKGROUPS = 64;
/** At most this many kernels share one dispatch. */
const MERGE_MAX_PARTS = 4;
/** How far back (in kernels) a kernel looks for a dispatch to join. */
const MERGE_WINDOW = 12;

/**
 * Group steps into shared dispatches, in order. A step joins an earlier group when both are small (single
 * dispatches of at most MERGE_MAX_WORKGROUPS workgroups, not writing in place), neither reads the other's
 * outputs, and one of them can move to the other: the group later to the step when nothing in between reads
 * the group's outputs, or the step earlier to the group when everything it reads is computed before the group.
 * Whether their WGSL can share a dispatch (workgroup size, bindings, workgroup memory) is mergeKernels' to say.
 */
interface Group { parts: Step[]; index: number[]; at: number; merged: RenderedKernel | null }
const groupSteps = (dev: Device, steps: readonly Step[], inPlace: ReadonlySet<Kernel>): Group[] => {
  const limits = {
    maxBindings: dev.limits.maxStorageBuffersPerShaderStage, maxSharedBytes: dev.limits.maxComputeWorkgroupStorageSize,
    maxPerDimension: dev.limits.maxComputeWorkgroupsPerDimension,
    spread: dev.adapter.isSoftware ? softwareThreads() : 1,
  };
  const producer = new Map<Node, number>();
  steps.forEach((s, i) => kernelOuts(s.kernel).forEach((o) => producer.set(o, i)));
  const producers = steps.map((s) => [...new Set(s.kernel.inputs.map((n) => producer.get(n)).filter((p) => p !== undefined))]);
  const firstReader = new Map<number, number>();
  producers.forEach((ps, i) => ps.forEach((p) => { if (!firstReader.has(p)) firstReader.set(p, i); }));
  const small = (s: Step) => s.rendered.length === 1 && !s.rendered[0]!.use && !inPlace.has(s.kernel) && s.kernel.kind !== 'update'
    && workgroupCount(s.rendered[0]!.workgroups) <= MERGE_MAX_WORKGROUPS;
  const groups: Group[] = [];
  const groupOf = new Map<number, Group>();
  steps.forEach((s, i) => {
    let joined: Group | undefined;
    for (let g = groups.length - 1; small(s) && g >= 0 && groups[g]!.at >= i - MERGE_WINDOW; g--) {
      const G = groups[g]!;
      if (G.parts.length >= MERGE_MAX_PARTS || !small(G.parts[0]!)) continue;
      const later = G.index.every((m) => (firstReader.get(m) ?? Infinity) > i);
      const earlier = producers[i]!.every((p) => groupOf.get(p)!.at < G.at);
      if (!later && !earlier) continue;
      const merged = mergeKernels([...G.parts, s].map((p) => p.rendered[0]!), limits);
      if (!merged) continue;
      G.parts.push(s); G.index.push(i); G.merged = merged;
      if (!earlier) { groups.splice(g, 1); groups.push(G); G.at = i; }
      joined = G;
      break;
    }
    if (!joined) { joined = { parts: [s], index: [i], at: i, merged: null }; groups.push(joined); }
    groupOf.set(i, joined);
  });
  return groups;
};

/**
 * Lower and compile kernels (pipelines come from the device's cache when the WGSL was seen before). Small
 * independent kernels may share a dispatch (groupSteps), so the result can be shorter than `kernels` and run
 * some of them later than listed: give planScratch its `kernels` lists, in this order.
 */
export const compileKernels = async (dev: Device, kernels: readonly Kernel[], inPlace: ReadonlySet<Kernel> = new Set()): Promise<Compiled[]> => {
  const limit = dev.limits.maxStorageBufferBindingSize;
  for (const k of kernels) {
    for (const n of [...kernelOuts(k), ...k.inputs]) {
      if (bytesOf(n) > limit) {
        throw new Error(`webgpu: ${n.op.name} ${JSON.stringify(n.shape)} needs a ${bytesOf(n)}-byte buffer, over this adapter's storage binding limit of ${limit} bytes (kernel ${k.kind} for ${k.out.op.name} ${JSON.stringify(k.out.shape)}); split the computation into chunks`);
      }
    }
  }
  // The fast first tier (core/device/tiers.ts): quick variants and no merging where the tuned WGSL is new here.
  // The tuned merges are queued as the tuned kernels would group; a merge with a part in its quick variant is not run.
  const tiers = tiersOf(dev);
  tiers.refresh();
  const lowered = kernels.map((k, i) => lower(dev, k, i, inPlace.has(k)));
  const provisional = new Set<Step>();
  const steps = lowered.map((s) => {
    const rendered = s.rendered.map((r) => (r.fast && !tiers.tuned({ wgsl: r.wgsl, label: r.label }) ? r.fast : r));
    if (rendered.every((r, j) => r === s.rendered[j])) return s;
    const quick: Step = { ...s, rendered };
    provisional.add(quick);
    return quick;
  });
  if (provisional.size > 0) for (const g of groupSteps(dev, lowered, inPlace)) if (g.merged) tiers.tuned({ wgsl: g.merged.wgsl, label: g.merged.label });
  const out: Compiled[] = [];
  const compile = async (step: Step, ops: string[]): Promise<E.Either<DeviceError, GPUComputePipeline[]>> => {
    const pipelines: GPUComputePipeline[] = [];
    for (const r of step.rendered) {
      const src = { wgsl: r.wgsl, label: r.label, ops };
      const cached = dev.cachedPipeline(src);
      const p = cached ? E.right(cached) : await dev.pipeline(src)();
      if (E.isLeft(p)) return p;
      pipelines.push(p.right);
    }
    return E.right(pipelines);
  };
  for (const { parts, merged } of groupSteps(dev, steps, inPlace)) {
    if (merged && !parts.some((p) => provisional.has(p)) && tiers.tuned({ wgsl: merged.wgsl, label: merged.label })) {
      // Its `kernel` is the first part's; Compiled.kernels lists them all. Bindings: each part's, in part order.
      const step: Step = { kernel: parts[0]!.kernel, rendered: [merged], bindings: (b) => parts.flatMap((p) => p.bindings(b)) };
      const pipelines = await compile(step, parts.map((p) => p.kernel.out.op.name));
      // A merge the compiler refuses (WGSL that merge.ts misread) costs only the shared dispatch: the parts run alone.
      if (E.isRight(pipelines)) { out.push({ kernels: parts.map((p) => p.kernel), step, pipelines: pipelines.right }); continue; }
    }
    for (const step of parts) out.push({ kernels: [step.kernel], step, pipelines: orThrow(await compile(step, [step.kernel.out.op.name])) });
  }
  tiers.flush();
  return out;
};

const deviceTiers = new WeakMap<Device, Tiers>();
/** The device's tier policy and record (core/device/tiers.ts). */
export const tiersOf = (dev: Device): Tiers => {
  let t = deviceTiers.get(dev);
  if (!t) deviceTiers.set(dev, (t = new Tiers(dev.adapter)));
  return t;
};

/** Dispatches for compiled kernels, given each node's buffer. */
export const dispatchesOf = (dev: Device, compiled: readonly Compiled[], bufOf: (n: Node) => GPUBuffer): Dispatch[] =>
  compiled.flatMap(({ step, pipelines }) => {
    const bufs = step.bindings(bufOf);
    return step.rendered.map((r, j) => ({
      pipeline: pipelines[j]!, bindGroup: dev.bindGroup(pipelines[j]!, r.use ? r.use.map((x) => bufs[x]!) : bufs), workgroups: r.workgroups,
      ...(r.faults ? { faults: true } : {}),
    }));
  });

/**
 * Scratch buffers for every kernel output that is not kept: assigned by liveness, so a buffer is reused once
 * its last reader has run. `groups` lists the kernels of each dispatch in run order (Compiled.kernels): a
 * group's outputs are all assigned before any of its inputs is released. `keep` outputs are left to the caller.
 */
export const planScratch = (dev: Device, groups: readonly (readonly Kernel[])[], keep: ReadonlySet<Node>, aliased: ReadonlySet<Node> = new Set()): Map<Node, GPUBuffer> => {
  const lastUse = new Map<Node, number>();
  groups.forEach((g, i) => g.forEach((k) => k.inputs.forEach((n) => lastUse.set(n, i))));
  const free: GPUBuffer[] = [];
  const sizes = new Map<GPUBuffer, number>();
  const scratch = new Map<Node, GPUBuffer>();
  groups.forEach((g, i) => {
    for (const o of g.flatMap(kernelOuts)) {
      if (keep.has(o) || aliased.has(o)) continue;
      const need = bytesOf(o);
      const j = free.findIndex((b) => sizes.get(b)! >= need);
      const buf = j >= 0 ? free.splice(j, 1)[0]! : dev.alloc(need);
      sizes.set(buf, buf.size);
      scratch.set(o, buf);
    }
    // Once per node: attention binds its sources positionally, and q and k may be views of one buffer.
    for (const n of new Set(g.flatMap((k) => k.inputs))) if (lastUse.get(n) === i && scratch.has(n)) free.push(scratch.get(n)!);
  });
  return scratch;
};

/**
 * Scheduling for an adapter: its storage-buffer limit, and a small prologue budget on a CPU adapter, where a
 * matmul computes its tiles' operands in a scalar loop (only views, concatenations and scalings pay there).
 */
export const scheduleFor = (dev: Device): ScheduleOpts => ({
  maxInputs: dev.limits.maxStorageBuffersPerShaderStage - 1,
  prologueBudget: dev.adapter.isSoftware ? 8 : 32,
  skinnyRows: skinnyRows(dev),
});

/**
 * Below this many rows a matmul is one GEMV per row. On a CPU adapter: a short prompt's prefill (6 rows) in tiled
 * kernels compiled for 15–48 s each at first dispatch (lavapipe, 2 cores), as GEMVs in about a second.
 */
const skinnyRows = (dev: Device): number => (dev.adapter.isSoftware ? 16 : 2);

/** Compute `roots` on the GPU: compile what is missing, then encode every dispatch into one submit. */
export const runGraph = async (dev: Device, roots: readonly Node[], opts: ScheduleOpts = {}): Promise<void> => {
  for (const r of roots) if (!r.gpu && r.cpu) ensureUploaded(dev, r);
  const todo = [...new Set(roots.filter((n) => !n.gpu))]; // a node listed twice gets one buffer
  if (!todo.length) return;
  const kernels = schedule(todo, { ...scheduleFor(dev), ...opts });
  // Indices known on the host (token ids) are checked here, as the interpreter does; the kernels report the others.
  for (const k of kernels) {
    const ix = (k.kind === 'gather' || k.kind === 'scatterAdd') ? k.inputs[1]!.cpu : null;
    if (ix) checkIndices(k.out.op.name, ix, k.kind === 'gather' ? k.inputs[0]!.shape[0]! : k.out.shape[0]!);
  }
  const compiled = await compileKernels(dev, kernels);
  // Uploads happen at queue time, before this submit runs: they must never land in a buffer that a kernel
  // of this same submit uses as scratch, so every input is uploaded before any scratch is handed out.
  for (const k of kernels) for (const n of k.inputs) if (!n.gpu && n.cpu) ensureUploaded(dev, n);
  const keep = new Set(todo);
  for (const n of todo) own(dev, n, dev.alloc(bytesOf(n)));
  const scratch = planScratch(dev, compiled.map((c) => c.kernels), keep);
  dev.encode(dispatchesOf(dev, compiled, (n) => n.gpu?.buffer ?? scratch.get(n)!));
  for (const b of new Set(scratch.values())) dev.free(b);
};

/** A node's value from its GPU buffer; a fault a kernel reported since the last readback is thrown as its op's error. */
const readNode = async (dev: Device, n: Node): Promise<Storage> => {
  try {
    return await readBuffer(dev, n);
  } catch (err) {
    if (err instanceof DeviceFailure && err.error._tag === 'Fault') throw faultError(err.error.words);
    throw err;
  }
};

const readBuffer = async (dev: Device, n: Node): Promise<Storage> => {
  if (n.cpu) return n.cpu;
  if (!n.gpu) throw new Error('webgpu: node is not realised');
  const count = numel(n.shape);
  const bytes = count * 4;
  switch (n.dtype) {
    case 'f32': return dev.readback(n.gpu.buffer, bytes, new Float32Array(count));
    case 'i32': return dev.readback(n.gpu.buffer, bytes, new Int32Array(count));
    case 'u32': return dev.readback(n.gpu.buffer, bytes, new Uint32Array(count));
    case 'bool': return Uint8Array.from(await dev.readback(n.gpu.buffer, bytes, new Uint32Array(count)));
    default: throw new Error(`webgpu: cannot read ${n.dtype}`);
  }
};

let opened: Promise<Device | null> | null = null;
export const webgpuDevice = (): Promise<Device | null> => {
  opened ??= getDevice().then((r) => (E.isRight(r) ? r.right : null));
  return opened;
};

const makeBackend = (dev: Device): Backend => ({
  name: 'webgpu',
  realize: (nodes) => runGraph(dev, nodes),
  read: (n) => readNode(dev, n),
});

installWebGPU(
  async () => { const d = await webgpuDevice(); return d ? makeBackend(d) : null; },
  async (n) => { const d = await webgpuDevice(); if (!d) throw new Error('webgpu: no device to read from'); return readNode(d, n); },
);
