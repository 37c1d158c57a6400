// Every operation, by family.

export { tensor, fromStorage, full, zeros, ones, zerosLike, onesLike, arange, type NestedArray, type TensorOpts } from './create.js';
export {
  add, mul, sub, neg, maximum, less, greater, equal, lessEqual, greaterEqual, logicalNot, where, cast, exp2, log2, sin, sqrt, recip,
  stopGradient, iota,
} from './elementwise.js';
export { div, exp, log, rsqrt, square, cos, pow, abs, minimum, clamp, relu, sigmoid, tanh, erf, silu, gelu, softplus, logSigmoid, sign,
  type GeluOpts,
} from './math.js';
export { sum, max, min, mean, variance, logsumexp, softmax, logSoftmax, argmax, type ReduceOpts } from './reduce.js';
export { reshape, permute, pad, shrink, slice, broadcastTo, transpose, swapAxes, squeeze, expandDims, concat, stack } from './movement.js';
export { matmul } from './matmul.js';
export { gather, scatterAdd, oneHot } from './gather.js';
export { writeAt } from './update.js';
export { key, split, uniform, normal, bernoulli, type Key } from './random.js';
export { vjp, grad, valueAndGrad, type GradOpts } from './grad.js';
export { scalar, type TensorLike } from './lift.js';
export { linear, linears, rmsNorm, rope, ropeTable, causalAttention, swiglu, crossEntropy, embedding, weightShape, type AttentionOpts, type CrossEntropyOpts, type LoraWeight, type Weight } from './nn.js';
export { nf4Linear, nf4Dense } from './nf4.js';
