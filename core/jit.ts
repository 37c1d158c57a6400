// Compiled-step replay. jit(f) traces f once per input signature (tree structure, shapes, dtypes) into a
// plan: kernels scheduled and compiled once, scratch buffers assigned once by liveness, bind groups cached.
// Each later call uploads only its scalar arguments, encodes one command buffer and submits it once.
// Number arguments are traced as f32 scalars whose value is written per call (never baked into WGSL).

import type { DType } from './dtype.js';
import { makeNode, settle, type BufferOp, type Node } from './node.js';
import type { Shape } from './shape.js';
import { Tensor, isTensor } from './tensor.js';
import { flatten, unflatten } from './tree.js';
import { schedule } from './schedule/index.js';
import { bytesOf, compileKernels, dispatchesOf, ensureUploaded, own, planScratch, scheduleFor, webgpuDevice, type Compiled } from './runtime.js';
import type { Device, Dispatch } from './device.js';
import { getBackend } from './backend.js';

type Arg = { readonly shape: Shape; readonly dtype: DType };
let nextId = 1;
/** A traced argument: bound to a buffer at each call. */
export const placeholderOp: BufferOp = { name: 'placeholder', kind: 'buffer', infer: (_s, a) => ({ shape: a.shape, dtype: a.dtype }) };
/** A value produced by a compiled step (its buffer is set when the step runs). */
export const resultOp: BufferOp = { name: 'result', kind: 'buffer', infer: (_s, a) => ({ shape: a.shape, dtype: a.dtype }) };

const leafOf = (a: Arg, op: BufferOp): Node => makeNode(op, [], { id: nextId++, shape: a.shape, dtype: a.dtype });

interface Plan {
  readonly inputs: readonly Node[];
  readonly numbers: readonly { node: Node; buf: GPUBuffer }[];
  readonly outputs: readonly Node[];
  readonly outDef: ReturnType<typeof flatten>['def'];
  readonly compiled: readonly Compiled[];
  readonly scratch: ReadonlyMap<Node, GPUBuffer>;
  /** Results written in place over a donated argument's buffer (writeAt): result node → that placeholder. */
  readonly alias: ReadonlyMap<Node, Node>;
  readonly kernels: number;
  readonly dispatches: number;
  /** The device's pacing key for this plan's submits (see Device.encode). */
  readonly pace: string;
  /**
   * Dispatch lists by the buffers bound to inputs and outputs: a step called again with the same buffers (results
   * ping-ponging between two sets, say) replays its list without looking up a bind group per dispatch.
   */
  readonly lists: Map<string, Dispatch[]>;
}

/** Dispatch lists kept per plan (a few binding sets recur; more means the buffers keep changing). */
const MAX_LISTS = 8;
/**
 * Plans kept per jitted function (each holds its scratch buffers): a notebook calling one with many shapes would
 * otherwise keep every plan's memory. The least recently used plan is dropped first.
 */
export const MAX_PLANS = 8;
const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 1;
const bufferId = (b: GPUBuffer): number => {
  let id = bufferIds.get(b);
  if (id === undefined) { id = nextBufferId++; bufferIds.set(b, id); }
  return id;
};

export interface JitOpts {
  /**
   * Argument positions whose tensors are consumed: their GPU buffers return to the pool after the call, or become
   * the result's when an update (writeAt) can run in place — a KV cache is then never copied.
   */
  readonly donate?: readonly number[];
  /** Number arguments traced as i32 scalars (positions, steps) instead of f32. */
  readonly intArgs?: readonly number[];
}

/** Scalar tensor parameters may be passed as numbers: they become per-call uniforms. */
export type JitArgs<A extends unknown[]> = { [K in keyof A]: A[K] extends Tensor ? A[K] | number : A[K] };

export interface Jitted<A extends unknown[], R> {
  (...args: JitArgs<A>): Promise<R>;
  /** Kernels in the plan for the last signature called (0 before the first call). */
  readonly kernels: number;
  /** Dispatches they run as (small independent kernels share one): at most `kernels`. */
  readonly dispatches: number;
  /** Plans held (one per argument signature, at most MAX_PLANS). */
  readonly plans: number;
  /**
   * Returns every plan's scratch buffers to the pool now (a later call traces again). A jitted function that is
   * garbage-collected returns them too, later.
   */
  dispose(): void;
}

interface Held { readonly plans: Map<string, Plan>; dev: Device | null }
/** Every plan dropped, its buffers back in the pool. */
const releaseAll = (held: Held): void => {
  if (held.dev) for (const p of held.plans.values()) release(held.dev, p);
  held.plans.clear();
};
/** The plans of jitted functions no longer referenced: their buffers go back to the pool. */
const orphans = new FinalizationRegistry<Held>(releaseAll);

/**
 * Trace-once, replay-many compilation of a function of pytrees of tensors and numbers (WebGPU backend; on the
 * CPU interpreter it simply evaluates f). One plan per argument signature, the MAX_PLANS most recently used kept.
 * @example
 * const step = jit((p, x, y, lr: number) => sgd(p, grad(loss)(p, x, y), lr), { donate: [0] });
 * params = await step(params, x, y, 0.1);
 */
export const jit = <A extends unknown[], R>(f: (...args: A) => R, opts: JitOpts = {}): Jitted<A, R> => {
  const plans = new Map<string, Plan>();
  const held: Held = { plans, dev: null };
  let last: Plan | null = null;
  const call = async (...args: A): Promise<R> => {
    await settle();
    const backend = await getBackend();
    const dev = backend.name === 'webgpu' ? await webgpuDevice() : null;
    if (!dev) {
      const out = f(...args);
      await backend.realize(flatten(out).leaves.map((t) => t.node));
      return out;
    }
    const flat = args.map((a) => (typeof a === 'number' ? { leaves: [] as Tensor[], def: null } : flatten(a)));
    // A plan binds buffers: arguments still lazy (a fresh init, optimizer zeros) are computed first.
    const lazy = flat.flatMap((f) => f.leaves).filter((t) => !t.node.realized);
    if (lazy.length) await backend.realize(lazy.map((t) => t.node));
    const key = JSON.stringify(args.map((a, i) => (typeof a === 'number' ? 'n' : flat[i]!.leaves.map((t) => [t.shape, t.dtype]))))
      + JSON.stringify(args.map((a) => (typeof a === 'number' ? 0 : structureKey(a))));
    let plan = plans.get(key);
    if (plan) plans.delete(key); // re-inserted below: the map's order is least recently used first
    else {
      plan = await trace(dev, f, args, flat, opts);
      held.dev = dev;
      if (plans.size >= MAX_PLANS) {
        const [oldest, old] = plans.entries().next().value!;
        plans.delete(oldest);
        release(dev, old);
      }
    }
    plans.set(key, plan);
    last = plan;
    return runPlan(dev, plan, args, flat, opts);
  };
  Object.defineProperty(call, 'kernels', { get: () => last?.kernels ?? 0 });
  Object.defineProperty(call, 'dispatches', { get: () => last?.dispatches ?? 0 });
  Object.defineProperty(call, 'plans', { get: () => plans.size });
  Object.defineProperty(call, 'dispose', {
    value: () => { releaseAll(held); last = null; },
  });
  orphans.register(call, held);
  return call as Jitted<A, R>;
};

/** A dropped plan's buffers go back to the pool (work already submitted with them runs first: queue order). */
const release = (dev: Device, plan: Plan): void => {
  for (const b of new Set(plan.scratch.values())) dev.free(b);
  for (const { buf } of plan.numbers) dev.free(buf);
  plan.lists.clear();
};

const structureKey = (a: unknown): string => JSON.stringify(a, (_k, v: unknown) => (isTensor(v) ? 'T' : v));

const trace = async <A extends unknown[], R>(dev: Device, f: (...args: A) => R, args: A, flat: { leaves: Tensor[]; def: unknown }[], opts: JitOpts): Promise<Plan> => {
  const inputs: Node[] = [];
  const donated = new Set<Node>();
  const numbers: { node: Node; buf: GPUBuffer }[] = [];
  const traced = args.map((a, i) => {
    if (typeof a === 'number') {
      const node = leafOf({ shape: [], dtype: opts.intArgs?.includes(i) ? 'i32' : 'f32' }, placeholderOp);
      numbers.push({ node, buf: dev.alloc(4) });
      return new Tensor(node);
    }
    const { leaves, def } = flat[i] as ReturnType<typeof flatten>;
    const ph = leaves.map((t) => {
      const n = leafOf(t, placeholderOp);
      inputs.push(n);
      if (opts.donate?.includes(i)) donated.add(n);
      return new Tensor(n);
    });
    return unflatten(def, ph);
  }) as A;
  const out = flatten(f(...traced));
  const roots = out.leaves.map((t) => t.node);
  const computed = roots.filter((n) => n.op !== placeholderOp && !n.realized);
  const kernels = schedule([...new Set(computed)], scheduleFor(dev));
  const inPlace = new Set(kernels.filter((k) => k.kind === 'update' && k.lastUse && donated.has(k.inputs[0]!)));
  const alias = new Map([...inPlace].map((k) => [k.out, k.inputs[0]!] as const));
  const compiled = await compileKernels(dev, kernels, inPlace);
  for (const k of kernels) for (const n of k.inputs) if (!n.gpu && n.cpu) ensureUploaded(dev, n);
  const scratch = planScratch(dev, compiled.map((c) => c.kernels), new Set(computed), new Set(alias.keys()));
  return { inputs, numbers, outputs: roots, outDef: out.def, compiled, scratch, alias, kernels: kernels.length, dispatches: compiled.length, pace: `jit#${nextId++}`, lists: new Map() };
};

const runPlan = <A extends unknown[], R>(dev: Device, plan: Plan, args: A, flat: { leaves: Tensor[] }[], opts: JitOpts): R => {
  const bound = new Map<Node, GPUBuffer>();
  let li = 0, ni = 0;
  args.forEach((a, i) => {
    if (typeof a === 'number') {
      const { node, buf } = plan.numbers[ni++]!;
      dev.upload(buf, node.dtype === 'i32' ? new Int32Array([a]) : new Float32Array([a]));
      bound.set(node, buf);
      return;
    }
    for (const t of flat[i]!.leaves) {
      const ph = plan.inputs[li++]!;
      bound.set(ph, t.node.gpu?.buffer ?? ensureUploaded(dev, t.node));
    }
  });
  // Fresh output buffers from the pool (reused once earlier results are disposed or donated).
  const results = new Map<Node, Node>();
  const transferred = new Set<GPUBuffer>();
  for (const r of plan.outputs) {
    if (results.has(r)) continue;
    if (bound.has(r) || r.realized) { results.set(r, r); continue; }
    const res = leafOf(r, resultOp);
    const over = plan.alias.get(r);
    const buf = over ? bound.get(over)! : dev.alloc(bytesOf(r));
    if (over) transferred.add(buf);
    own(dev, res, buf);
    bound.set(r, buf);
    results.set(r, res);
  }
  for (const [r, p] of plan.alias) if (!bound.has(r)) bound.set(r, bound.get(p)!);
  const bufOf = (n: Node): GPUBuffer => bound.get(n) ?? plan.scratch.get(n) ?? n.gpu?.buffer ?? ensureUploaded(dev, n);
  const sig = [...plan.inputs, ...plan.outputs].map((n) => bufferId(bufOf(n))).join(',');
  let list = plan.lists.get(sig);
  if (!list) {
    if (plan.lists.size >= MAX_LISTS) plan.lists.clear();
    list = dispatchesOf(dev, plan.compiled, bufOf);
    plan.lists.set(sig, list);
  }
  dev.encode(list, 'jit', plan.pace);
  for (const i of opts.donate ?? []) {
    const a = args[i];
    if (typeof a === 'number') continue;
    for (const t of flatten(a).leaves) {
      if (plan.outputs.includes(t.node)) continue;
      if (t.node.gpu && transferred.has(t.node.gpu.buffer)) { t.node.gpu.release(); t.node.gpu = null; } else t.dispose();
    }
  }
  const leaves = plan.outputs.map((r) => {
    const res = results.get(r)!;
    if (res.op === placeholderOp) {
      // An argument returned unchanged: hand back the caller's tensor.
      const idx = plan.inputs.indexOf(res);
      return idx >= 0 ? argLeaf(flat, args, idx) : new Tensor(res);
    }
    return new Tensor(res);
  });
  return unflatten<R>(plan.outDef, leaves);
};

const argLeaf = (flat: { leaves: Tensor[] }[], args: readonly unknown[], idx: number): Tensor => {
  let k = idx;
  for (let i = 0; i < args.length; i++) {
    if (typeof args[i] === 'number') continue;
    const ls = flat[i]!.leaves;
    if (k < ls.length) return ls[k]!;
    k -= ls.length;
  }
  throw new Error('jit: output refers to a missing argument');
};
