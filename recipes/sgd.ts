// Plain SGD over a parameter tree: the smallest optimizer, used by the demo and the benchmarks.

import type { Tensor } from '../core/tensor.js';
import { zipTrees } from '../core/tree.js';
import { mul, sub } from '../ops/elementwise.js';

/** p ← p − lr·g for every leaf. */
export const sgdStep = <P>(params: P, grads: P, lr: number | Tensor): P => zipTrees([params, grads], ([p, g]) => sub(p!, mul(g!, lr)));
