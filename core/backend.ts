// Choosing where graphs run and reading values back. 'cpu' is the reference interpreter; 'webgpu' compiles
// through the scheduler to Dawn. The default is WebGPU when an adapter opens, else the interpreter (said once).

import type { Storage } from './dtype.js';
import { settle, type Node } from './node.js';
import { numel } from './shape.js';
import { interpret } from './interp.js';
import { Tensor } from './tensor.js';

export type BackendName = 'cpu' | 'webgpu';

export interface Backend {
  readonly name: BackendName;
  /** Compute and cache the values of these nodes. */
  readonly realize: (nodes: readonly Node[]) => Promise<void>;
  /** Host copy of a realised node's value. */
  readonly read: (node: Node) => Promise<Storage>;
}

export const cpuBackend: Backend = {
  name: 'cpu',
  realize: async (nodes) => {
    const todo = nodes.filter((n) => !n.cpu);
    if (!todo.length) return;
    // Values that live only on the GPU are read back first, so a graph may mix both worlds.
    const bound = new Map<Node, Storage>();
    const gpuOnly = new Set<Node>();
    const seen = new Set<Node>();
    const stack = [...todo];
    while (stack.length) {
      const n = stack.pop()!;
      if (seen.has(n) || n.cpu) continue;
      seen.add(n);
      if (n.gpu) gpuOnly.add(n);
      else stack.push(...n.src);
    }
    for (const n of gpuOnly) bound.set(n, await gpuReader!(n));
    const out = interpret(todo, bound);
    todo.forEach((n, i) => { n.cpu = out[i]!; });
  },
  read: async (n) => n.cpu ?? (await gpuReader!(n)),
};

let gpuReader: ((n: Node) => Promise<Storage>) | null = null;
let webgpu: (() => Promise<Backend | null>) | null = null;

/** Installed by the WebGPU runtime module: how to open it, and how to read a GPU-resident node. */
export const installWebGPU = (open: () => Promise<Backend | null>, read: (n: Node) => Promise<Storage>): void => {
  webgpu = open;
  gpuReader = read;
};

const envChoice = (): BackendName | null => {
  const v = typeof process !== 'undefined' ? process.env.CAMELID_BACKEND : undefined;
  if (v === undefined || v === '') return null;
  if (v !== 'cpu' && v !== 'webgpu') throw new Error(`CAMELID_BACKEND must be 'cpu' or 'webgpu', got '${v}'`);
  return v;
};

let chosen: BackendName | null = envChoice();
let active: Promise<Backend> | null = null;
let warned = false;

/** Select the backend for later realisations ('cpu' or 'webgpu'); also settable as CAMELID_BACKEND. */
export const setBackend = (name: BackendName): void => {
  if (name !== 'cpu' && name !== 'webgpu') throw new Error(`setBackend: unknown backend '${String(name)}' (expected 'cpu' or 'webgpu')`);
  chosen = name;
  active = null;
};

export const getBackend = (): Promise<Backend> => {
  active ??= (async () => {
    if (chosen === 'cpu') return cpuBackend;
    const b = webgpu ? await webgpu() : null;
    if (b) return b;
    if (chosen === 'webgpu') throw new Error('setBackend(\'webgpu\'): no WebGPU adapter could be opened');
    if (!warned) {
      warned = true;
      console.warn('camelid: no WebGPU adapter available — running on the CPU interpreter (slow, exact).');
    }
    return cpuBackend;
  })();
  return active;
};

/** Compute the values of tensors (they then act as leaves of later graphs). */
export const realize = async (...ts: readonly Tensor[]): Promise<void> => {
  await settle();
  const b = await getBackend();
  await b.realize(ts.map((t) => t.node));
};

/** The value as a flat typed array (Float32Array for f32/f16, Float64Array, Int32Array, Uint32Array, Uint8Array for bool). */
export const data = async (t: Tensor): Promise<Storage> => {
  await settle();
  const b = await getBackend();
  if (!t.node.realized) await b.realize([t.node]);
  return b.read(t.node);
};

export type Nested = number | boolean | Nested[];

/** The value as nested JS arrays (a number for a scalar; booleans for bool). */
export const toArray = async (t: Tensor): Promise<Nested> => {
  const flat = await data(t);
  const conv = t.dtype === 'bool' ? (x: number) => x !== 0 : (x: number) => x;
  const build = (dim: number, off: number): Nested => {
    if (dim === t.rank) return conv(flat[off]!);
    const n = t.shape[dim]!;
    const stride = numel(t.shape.slice(dim + 1));
    return Array.from({ length: n }, (_, i) => build(dim + 1, off + i * stride));
  };
  return build(0, 0);
};

/** A scalar tensor's value as a number. */
export const item = async (t: Tensor): Promise<number> => {
  if (t.size !== 1) throw new Error(`item: tensor of shape ${JSON.stringify(t.shape)} is not a scalar`);
  return (await data(t))[0]!;
};
