// The CPU reference interpreter: evaluates the graph in each node's own dtype (f64 included). It is the
// definition of every op's meaning, the oracle for WebGPU kernels, and the fallback when no adapter exists.

import { allocStorage, f16round, type Storage } from './dtype.js';
import type { Node, Strided } from './node.js';
import { toposort } from './node.js';
import { fmt, numel, type Shape } from './shape.js';
import { contiguous, expandView, isContiguous, type View } from './view.js';

/** Visit every element of a view in row-major order: cb(flat position, base offset or -1 if masked). */
export const forEachOffset = (v: View, cb: (k: number, off: number) => void): void => {
  const n = numel(v.shape);
  if (n === 0) return;
  const r = v.shape.length;
  const idx = new Array<number>(r).fill(0);
  const { shape, strides, mask } = v;
  let off = v.offset;
  for (let k = 0; k < n; k++) {
    let ok = true;
    if (mask) for (let d = 0; d < r; d++) { const m = mask[d]!; if (idx[d]! < m[0] || idx[d]! >= m[1]) { ok = false; break; } }
    cb(k, ok ? off : -1);
    for (let d = r - 1; d >= 0; d--) {
      idx[d]!++;
      off += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      off -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
};

/** Broadcast a view to `shape` (numpy rules: prepend size-1 dims, then expand). */
export const broadcastView = (v: View, shape: Shape): View => {
  const pad = shape.length - v.shape.length;
  if (pad === 0 && v.shape.every((d, i) => d === shape[i])) return v;
  const lifted: View = {
    shape: [...Array<number>(pad).fill(1), ...v.shape],
    strides: [...Array<number>(pad).fill(0), ...v.strides],
    offset: v.offset,
    mask: v.mask ? [...Array<[number, number]>(pad).fill([0, 1]), ...v.mask] : null,
  };
  return expandView(lifted, shape);
};

/** Contiguous storage of a strided value (shares memory when already contiguous). */
export const materialize = (s: Strided, like: Node['dtype']): Storage => {
  const n = numel(s.view.shape);
  if (isContiguous(s.view) && s.data.length >= n) return s.data.length === n ? s.data : s.data.subarray(0, n);
  const out = allocStorage(like, n);
  const data = s.data;
  forEachOffset(s.view, (k, off) => { out[k] = off < 0 ? 0 : data[off]!; });
  return out;
};

export class InterpError extends Error { override name = 'InterpError'; }

/** A RangeError from allocating a node's storage (or its inputs' contiguous copies), named with the op and shape. */
const allocationError = (n: Node, err: RangeError): InterpError =>
  new InterpError(`interp: ${n.op.name} ${fmt(n.shape)} ${n.dtype} (${numel(n.shape)} elements, ${numel(n.shape) * allocStorage(n.dtype, 0).BYTES_PER_ELEMENT} bytes) could not be allocated on the host: ${err.message}`);

const evalNode = (n: Node, get: (m: Node) => Strided): Strided => {
  const op = n.op;
  const size = numel(n.shape);
  switch (op.kind) {
    case 'buffer':
      throw new InterpError(`interp: ${op.name} node ${fmt(n.shape)} ${n.dtype} has no data bound`);
    case 'movement': {
      const s = get(n.src[0]!);
      const v = op.view(s.view, n.arg, n.shape);
      if (v) return { data: s.data, view: v };
      // Only a reshape of a non-contiguous view can refuse; on contiguous data every view applies.
      return { data: materialize(s, n.src[0]!.dtype), view: op.view(contiguous(s.view.shape), n.arg, n.shape)! };
    }
    case 'elementwise': {
      const out = allocStorage(n.dtype, size);
      const ins = n.src.map((m) => materialize({ ...get(m), view: broadcastView(get(m).view, n.shape) }, m.dtype));
      const f = op.cpu;
      const arg = n.arg;
      const xs = new Array<number>(ins.length);
      const half = n.dtype === 'f16';
      for (let i = 0; i < size; i++) {
        for (let j = 0; j < ins.length; j++) xs[j] = ins[j]![i]!;
        const y = f(xs, i, arg);
        out[i] = half ? f16round(y) : y;
      }
      return { data: out, view: contiguous(n.shape) };
    }
    case 'reduce': {
      const s = get(n.src[0]!);
      const axes = new Set((n.arg as { axes: readonly number[] }).axes);
      // Output strides with 0 on reduced axes map each input element to its accumulator.
      let acc = 1;
      const ostr = new Array<number>(n.shape.length);
      for (let d = n.shape.length - 1; d >= 0; d--) { ostr[d] = axes.has(d) ? 0 : acc; acc *= n.shape[d]!; }
      const accs = new Float64Array(size).fill(op.identity(n.dtype));
      const inShape = s.view.shape;
      const idx = new Array<number>(inShape.length).fill(0);
      let o = 0;
      const data = s.data;
      forEachOffset(s.view, (_k, off) => {
        accs[o] = op.cpu(accs[o]!, off < 0 ? 0 : data[off]!);
        for (let d = inShape.length - 1; d >= 0; d--) {
          idx[d]!++;
          o += ostr[d]!;
          if (idx[d]! < inShape[d]!) break;
          o -= ostr[d]! * inShape[d]!;
          idx[d] = 0;
        }
      });
      const out = allocStorage(n.dtype, size);
      for (let i = 0; i < size; i++) out[i] = n.dtype === 'f16' ? f16round(accs[i]!) : accs[i]!;
      return { data: out, view: contiguous(n.shape) };
    }
    case 'custom':
      return { data: op.cpu(n.src.map(get), n.arg, n), view: contiguous(n.shape) };
  }
};

/**
 * Evaluate nodes on the CPU. Realised nodes (n.cpu) and `bound` leaves are inputs; returns contiguous storage
 * for each root. Intermediates are dropped as soon as their last consumer has run.
 */
export const interpret = (roots: readonly Node[], bound: ReadonlyMap<Node, Storage> = new Map()): Storage[] => {
  const order = toposort(roots);
  const uses = new Map<Node, number>();
  for (const n of order) if (!n.cpu && !bound.has(n)) for (const s of n.src) uses.set(s, (uses.get(s) ?? 0) + 1);
  for (const r of roots) uses.set(r, (uses.get(r) ?? 0) + 1);
  const vals = new Map<Node, Strided>();
  const get = (m: Node): Strided => {
    const v = vals.get(m);
    if (!v) throw new InterpError(`interp: ${m.op.name} evaluated out of order`);
    return v;
  };
  for (const n of order) {
    const b = bound.get(n) ?? n.cpu;
    if (b) { vals.set(n, { data: b, view: contiguous(n.shape) }); continue; }
    try {
      vals.set(n, evalNode(n, get));
    } catch (err) {
      throw err instanceof RangeError ? allocationError(n, err) : err;
    }
    for (const s of n.src) {
      const u = (uses.get(s) ?? 0) - 1;
      uses.set(s, u);
      if (u === 0) vals.delete(s);
    }
  }
  return roots.map((r) => {
    try {
      return materialize(get(r), r.dtype);
    } catch (err) {
      throw err instanceof RangeError ? allocationError(r, err) : err;
    }
  });
};
