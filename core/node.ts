// The IR: op records (by kind) and immutable, hash-consed graph nodes. Building a node runs its op's shape/dtype
// rule at once, so errors surface where the expression was written. core knows kinds, never a particular op.

import type { DType, Storage } from './dtype.js';
import type { Shape } from './shape.js';
import type { View } from './view.js';
import type { Tensor } from './tensor.js';

export type Kind = 'buffer' | 'elementwise' | 'reduce' | 'movement' | 'custom';

/** What a shape/dtype rule returns. */
export interface Aval { readonly shape: Shape; readonly dtype: DType }

/** A VJP rule: cotangents for each input (null = none), built lazily from ops. May be broadcast-shaped. */
export type VjpRule<A> = (g: Tensor, out: Tensor, src: readonly Tensor[], arg: A) => readonly (Tensor | null)[];

interface OpBase<A> {
  readonly name: string;
  /** Shape/dtype rule: throws ShapeError/DTypeError naming the op and shapes. */
  readonly infer: (src: readonly Node[], arg: A) => Aval;
  readonly vjp?: VjpRule<A>;
}

/** Data-bearing leaf: a constant or a placeholder bound at realisation (jit inputs). */
export interface BufferOp extends OpBase<{ readonly id: number; readonly shape: Shape; readonly dtype: DType }> {
  readonly kind: 'buffer';
}

/** Pointwise over broadcast inputs. `i` is the flat output index (used by index-dependent sources like iota). */
export interface ElementwiseOp<A = unknown> extends OpBase<A> {
  readonly kind: 'elementwise';
  readonly cpu: (x: readonly number[], i: number, arg: A) => number;
  readonly wgsl: (x: readonly string[], i: string, arg: A, out: DType, src: readonly DType[]) => string;
  /** WGSL helper functions the expression calls, emitted once per kernel. */
  readonly wgslPrelude?: string;
  /** The value is its first input (tags, stopGradient): the scheduler sees through it. */
  readonly identity?: boolean;
  /** What recomputing it inline costs the scheduler, in simple ops (default 1): sigmoid, erf… are several. */
  readonly cost?: number;
}

export interface ReduceArg { readonly axes: readonly number[] }
/** Reduction over axes, keeping them as size-1 dimensions. */
export interface ReduceOp extends OpBase<ReduceArg> {
  readonly kind: 'reduce';
  readonly identity: (d: DType) => number;
  readonly cpu: (acc: number, x: number) => number;
  readonly wgsl: (acc: string, x: string) => string;
  /** The WGSL subgroup builtin folding one value per invocation of a subgroup (used when the adapter has them). */
  readonly wgslSubgroup?: string;
}

/** A view change: its whole meaning, on every backend, is how it transforms a strided view. */
export interface MovementOp<A = unknown> extends OpBase<A> {
  readonly kind: 'movement';
  readonly view: (v: View, arg: A, out: Shape) => View | null;
}

/** Input to a custom op's CPU meaning: base storage read through a view. */
export interface Strided { readonly data: Storage; readonly view: View }

/** Ops with a hand-written kernel (matmul, gather, scatter, attention): CPU meaning here, WGSL template in core/wgsl. */
export interface CustomOp<A = unknown> extends OpBase<A> {
  readonly kind: 'custom';
  /** Which hand-written kernel template (core/wgsl) computes it on the GPU. */
  readonly template: 'matmul' | 'gather' | 'scatterAdd' | 'update' | 'attention' | 'nf4';
  readonly cpu: (src: readonly Strided[], arg: A, out: Aval) => Storage;
}

export type OpDef = BufferOp | ElementwiseOp<any> | ReduceOp | MovementOp<any> | CustomOp<any>;

/** A realised buffer on the GPU, owned by a node. */
export interface DeviceBuffer {
  readonly buffer: GPUBuffer;
  readonly bytes: number;
  /** Return the buffer to the pool. */
  free(): void;
  /** Give up ownership without freeing (the buffer now belongs to another node). */
  release(): void;
}

let nextId = 1;

export class Node {
  readonly id = nextId++;
  /** Realised value, cached here once computed (the node then acts as a leaf). */
  cpu: Storage | null = null;
  /** @internal Kept out of the published types (stripInternal): they would need the WebGPU typings, and DOM's. */
  gpu: DeviceBuffer | null = null;
  constructor(
    readonly op: OpDef,
    readonly src: readonly Node[],
    readonly arg: unknown,
    readonly shape: Shape,
    readonly dtype: DType,
    readonly key: string,
  ) {}
  get realized(): boolean { return this.cpu !== null || this.gpu !== null; }
}

const argKey = (a: unknown): string =>
  JSON.stringify(a, (_k, v: unknown) => (typeof v === 'number' ? (Object.is(v, -0) ? '-0' : String(v)) : v)) ?? '';

// Hash-consing: structurally equal nodes are the same object while either is alive. A WeakRef keeps its target
// alive until the current macrotask ends (the ECMAScript KeepDuringJob rule, on creation and on deref), and the
// reaper's callbacks run only between macrotasks: a loop that only awaits promises would keep every node it ever
// made (issue 17). settle() gives the event loop a turn once many nodes were made since the last one.
const table = new Map<string, WeakRef<Node>>();
/** Nodes made since the event loop last had a turn (see settle). */
let madeSinceTurn = 0;
/** Nodes made between turns of the event loop that settle() grants; a turn costs a few microseconds. */
const NODES_PER_TURN = 2048;
const turn = (): Promise<void> => new Promise((r) => (typeof setImmediate === 'function' ? setImmediate(r) : setTimeout(r, 0)));

/**
 * Called where a computation is awaited anyway (realize, data, a jitted step): after NODES_PER_TURN new nodes it
 * waits for one turn of the event loop, so the nodes made since then that are no longer referenced can be
 * collected even when the caller never yields. Otherwise it returns null (awaiting that costs one microtask).
 */
export const settle = (): Promise<void> | null => {
  if (madeSinceTurn < NODES_PER_TURN) return null;
  madeSinceTurn = 0;
  return turn();
};

const reaper = new FinalizationRegistry<string>((key) => {
  const ref = table.get(key);
  if (ref && ref.deref() === undefined) table.delete(key);
});

export const makeNode = (op: OpDef, src: readonly Node[], arg: unknown): Node => {
  const key = `${op.name}(${src.map((s) => s.id).join(',')})${argKey(arg)}`;
  const hit = table.get(key)?.deref();
  if (hit) return hit;
  const { shape, dtype } = op.infer(src, arg as never);
  const node = new Node(op, src, arg, shape, dtype, key);
  table.set(key, new WeakRef(node));
  madeSinceTurn++;
  reaper.register(node, key);
  return node;
};

/** Entries in the hash-consing table (live nodes, and dead ones not yet reaped): for memory tests. */
export const internedCount = (): number => table.size;

/** Topological order (inputs first) of everything reachable from `roots`, stopping at realised nodes. */
export const toposort = (roots: readonly Node[], stopAtRealized = true): Node[] => {
  const seen = new Set<Node>();
  const order: Node[] = [];
  const stack: [Node, number][] = roots.map((r) => [r, 0]);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [n, i] = top;
    if (i === 0 && seen.has(n)) { stack.pop(); continue; }
    if (i === 0) seen.add(n);
    const leaf = stopAtRealized && n.realized;
    if (!leaf && i < n.src.length) {
      top[1] = i + 1;
      const s = n.src[i]!;
      if (!seen.has(s)) stack.push([s, 0]);
    } else {
      stack.pop();
      order.push(n);
    }
  }
  return order;
};
