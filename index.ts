// camelid: the public API. Everything a user imports comes from here.

export type { DType, FloatDType, Storage } from './core/dtype.js';
export { ShapeError, DTypeError, type Shape } from './core/shape.js';
export { Tensor } from './core/tensor.js';
export { flatten, unflatten, leaves, mapTree, zipTrees, type Tree } from './core/tree.js';
export { GradError } from './core/autodiff.js';
export { orThrow } from './core/edge.js';
export { setBackend, getBackend, realize, data, toArray, item, type BackendName, type Nested } from './core/backend.js';
export * from './ops/index.js';
import './core/runtime.js';
export { jit, MAX_PLANS, type Jitted, type JitOpts } from './core/jit.js';
export { deviceCounters, scope } from './core/memory.js';
export * from './models/index.js';
export * from './recipes/index.js';
