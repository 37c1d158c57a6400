// Pytrees: nested readonly records and arrays whose leaves are tensors (params, grads, optimizer state).
// Non-tensor leaves (numbers, strings, null) are carried along unchanged.

import { isTensor, type Tensor } from './tensor.js';

export type Tree<L = Tensor> = L | readonly Tree<L>[] | { readonly [k: string]: Tree<L> } | null | undefined | number | string | boolean;

/** Same structure with tensor leaves replaced by U. */
export type MapTree<T, U> = T extends Tensor ? U : T extends readonly unknown[] ? { [K in keyof T]: MapTree<T[K], U> } : T extends object ? { [K in keyof T]: MapTree<T[K], U> } : T;

export interface TreeDef { readonly rebuild: (leaves: readonly Tensor[]) => unknown; readonly count: number }

const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x) && !isTensor(x) && Object.getPrototypeOf(x) === Object.prototype;

/** Leaves in a deterministic order (record keys sorted) and a function that rebuilds the structure. */
export const flatten = (tree: unknown): { leaves: Tensor[]; def: TreeDef } => {
  const leaves: Tensor[] = [];
  const walk = (x: unknown): ((l: readonly Tensor[], i: { n: number }) => unknown) => {
    if (isTensor(x)) { leaves.push(x); return (l, i) => l[i.n++]; }
    if (Array.isArray(x)) { const fs = x.map(walk); return (l, i) => fs.map((f) => f(l, i)); }
    if (isRecord(x)) {
      const keys = Object.keys(x).sort();
      const fs = keys.map((k) => walk(x[k]));
      return (l, i) => Object.fromEntries(keys.map((k, j) => [k, fs[j]!(l, i)]));
    }
    if (x === null || x === undefined || typeof x === 'number' || typeof x === 'string' || typeof x === 'boolean') return () => x;
    throw new TypeError(`pytree: unsupported leaf ${Object.prototype.toString.call(x)} (expected Tensor, array, plain record, or primitive)`);
  };
  const build = walk(tree);
  return { leaves, def: { rebuild: (l) => build(l, { n: 0 }), count: leaves.length } };
};

export const unflatten = <T>(def: TreeDef, leaves: readonly Tensor[]): T => {
  if (leaves.length !== def.count) throw new TypeError(`pytree: expected ${def.count} leaves, got ${leaves.length}`);
  return def.rebuild(leaves) as T;
};

export const leaves = (tree: unknown): Tensor[] => flatten(tree).leaves;

/** Map every tensor leaf. */
export const mapTree = <T>(tree: T, f: (t: Tensor, i: number) => Tensor): T => {
  const { leaves: ls, def } = flatten(tree);
  return unflatten<T>(def, ls.map(f));
};

/** Map several trees of the same structure leaf by leaf. */
export const zipTrees = <T>(trees: readonly T[], f: (ts: Tensor[], i: number) => Tensor): T => {
  const flat = trees.map((t) => flatten(t));
  const first = flat[0];
  if (!first) throw new TypeError('zipTrees: no trees');
  for (const [k, fl] of flat.entries()) {
    if (fl.leaves.length !== first.leaves.length) throw new TypeError(`zipTrees: tree ${k} has ${fl.leaves.length} leaves, tree 0 has ${first.leaves.length}`);
  }
  return unflatten<T>(first.def, first.leaves.map((_, i) => f(flat.map((fl) => fl.leaves[i]!), i)));
};
