// An example: a 2-layer MLP learns to separate two interleaved spirals that camelid generates itself (the first
// main job, before the recipes). Runs on WebGPU when an adapter opens, else on the interpreter:
// `npx tsx examples/spirals.ts [steps]`.

import {
  add, item, logSoftmax, matmul, mean, mul, neg, normal, oneHot, realize, relu, split, sum, key, tensor, valueAndGrad, type Tensor,
} from '../index.js';
import { sgdStep } from '../recipes/sgd.js';

export interface Mlp { readonly w1: Tensor; readonly b1: Tensor; readonly w2: Tensor; readonly b2: Tensor }

/** n points per class on two spirals, with labels. */
export const spirals = (n: number): { x: Tensor; y: Tensor } => {
  const xs: number[] = [], ys: number[] = [];
  for (let c = 0; c < 2; c++) {
    for (let i = 0; i < n; i++) {
      const r = (i + 1) / n, t = 3.5 * r * Math.PI + c * Math.PI;
      xs.push(r * Math.cos(t), r * Math.sin(t));
      ys.push(c);
    }
  }
  return { x: tensor(Float32Array.from(xs), { shape: [2 * n, 2] }), y: tensor(ys, { dtype: 'i32' }) };
};

export const initMlp = (seed: number, hidden: number): Mlp => {
  const [k1, k2] = split(key(seed));
  return {
    w1: mul(normal(k1!, [2, hidden]), 4), b1: tensor(new Float32Array(hidden)),
    w2: mul(normal(k2!, [hidden, 2]), 1 / Math.sqrt(hidden)), b2: tensor([0, 0]),
  };
};

export const mlpLoss = (p: Mlp, x: Tensor, y: Tensor): Tensor => {
  const h = relu(add(matmul(x, p.w1), p.b1)); // (N, hidden)
  const logits = add(matmul(h, p.w2), p.b2); // (N, 2)
  return neg(mean(sum(mul(logSoftmax(logits), oneHot(y, 2)), -1)));
};

export const trainSpirals = async (steps = 300, log: (s: string) => void = console.log): Promise<number[]> => {
  const { x, y } = spirals(100);
  let params = initMlp(0, 64);
  const step = valueAndGrad(mlpLoss);
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    const [loss, g] = step(params, x, y);
    const next = sgdStep(params, g, 1);
    await realize(loss, ...Object.values(next));
    for (const w of Object.values(params)) w.dispose(); // the old step's buffers go back to the pool now
    params = next;
    if (i % 50 === 0 || i === steps - 1) {
      losses.push(await item(loss));
      log(`step ${String(i).padStart(4)}  loss ${losses[losses.length - 1]!.toFixed(4)}`);
    }
    loss.dispose();
  }
  return losses;
};

if (import.meta.url === `file://${process.argv[1]}`) await trainSpirals(Number(process.argv[2] ?? 300));
