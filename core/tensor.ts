// Tensor<D>: a typed handle on a graph node. Nothing runs until a value is asked for. No methods beyond
// shape/dtype accessors and disposal: ops are free functions in ops/.

import type { DType } from './dtype.js';
import { makeNode, type Node, type OpDef } from './node.js';
import { numel, type Shape } from './shape.js';

export class Tensor<D extends DType = DType> {
  constructor(readonly node: Node) {}
  get shape(): Shape { return this.node.shape; }
  get dtype(): D { return this.node.dtype as D; }
  get rank(): number { return this.node.shape.length; }
  get size(): number { return numel(this.node.shape); }
  /** Free realised buffers (GPU memory returns to the pool). The tensor may be recomputed later if its graph is alive. */
  dispose(): void {
    this.node.gpu?.free();
    this.node.gpu = null;
    if (this.node.op.kind !== 'buffer') this.node.cpu = null;
  }
  [Symbol.dispose](): void { this.dispose(); }
  toString(): string { return `Tensor<${this.dtype}>${JSON.stringify(this.shape)}`; }
}

/** Apply an op record to tensors: the one way graph is built. */
export const apply = <D extends DType = DType>(op: OpDef, src: readonly Tensor[], arg: unknown = null): Tensor<D> =>
  new Tensor<D>(makeNode(op, src.map((t) => t.node), arg));

export const isTensor = (x: unknown): x is Tensor => x instanceof Tensor;
