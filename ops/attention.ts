// Fused causal attention (Dao et al. 2022, "FlashAttention"): the (T, S) score matrix is never stored. One
// primitive with three parts, each a single kernel on WebGPU:
//   out    O = softmax(QKᵀ·scale + mask)·V by an online softmax over the keys of each query row, packed with each
//          row's logsumexp (lse) as one flat buffer [O (B·T·H·D) | lse (B·T·H, padded to whole vec4s)];
//          causalAttention returns the O view;
//   dq     dQ = scale · Σⱼ P(dP − Δ)·K per query row, with Δ = dO·O;
//   dkv    dK, dV per key row (packed as (…, 2, headDim)), summing over the query heads of its group; it takes each
//          query's Δ again (one more dot per query row it visits), so dq and dkv are independent and can share a
//          dispatch.
// The backward parts read P from the saved lse, so no pass recomputes the softmax statistics. The VJP of `out` is
// built from the other two; those have no VJP (no second derivatives through attention).
// Query slot p = t + offset attends key slots s with min(start, p) ≤ s ≤ p: causal, and a padding query (p < start)
// attends only itself. A query row with no key at all gives 0.

import { allocStorage } from '../core/dtype.js';
import type { CustomOp, Node, Strided } from '../core/node.js';
import { DTypeError, fmt, numel, ShapeError } from '../core/shape.js';
import { apply, type Tensor } from '../core/tensor.js';
import { materialize } from '../core/interp.js';
import { broadcastTo, reshape, slice } from './movement.js';
import { ATTENTION_ARITY, attentionExtras, attnGeom, type AttentionArg, type AttnGeom } from '../core/wgsl/attention.js';

export type { AttentionArg, AttentionPart } from '../core/wgsl/attention.js';

const infer: CustomOp<AttentionArg>['infer'] = (src, arg) => {
  const n = ATTENTION_ARITY[arg.part];
  const [q, k] = src as [Node, Node];
  const bad = (why: string) => new ShapeError(`attention(${arg.part}): ${why}; inputs ${src.map((s) => fmt(s.shape)).join(', ')}`);
  const ex = attentionExtras(arg);
  if (src.length !== Math.max(n - 1, ex.offset, ex.start, ex.rope) + 1) throw bad(`expected ${n} tensors plus offset/start/rope`);
  if (q.shape.length !== 4 || k.shape.length !== 4) throw bad('q and k must be rank 4');
  const g = attnGeom(q.shape, k.shape, arg.kv);
  if (k.shape[0] !== g.B || k.shape[3] !== g.D || g.H % g.Hkv !== 0) throw bad('k does not match q (batch, head size, or heads not a multiple of kv heads)');
  for (const s of src.slice(0, n)) {
    if (s.dtype !== q.dtype) throw new DTypeError(`attention(${arg.part}): inputs must share a float dtype, got ${src.map((x) => x.dtype).join(', ')}`);
  }
  const off = ex.offset >= 0 ? src[ex.offset]! : null;
  if (off && (off.dtype !== 'i32' || off.shape.length !== 0)) throw new DTypeError(`attention: the offset must be an i32 scalar, got ${off.dtype}${fmt(off.shape)}`);
  const st = ex.start >= 0 ? src[ex.start]! : null;
  if (st && (st.dtype !== 'i32' || st.shape.length !== 1 || st.shape[0] !== g.B)) throw new DTypeError(`attention: start must be (B,) = (${g.B},) i32, got ${st.dtype}${fmt(st.shape)}`);
  const { B, T, H, D, S, Hkv } = g;
  const tab = ex.rope >= 0 ? src[ex.rope]! : null;
  const refused = tab && ropeOnLoadRefusal(g, arg, tab, q.dtype);
  if (refused) throw bad(refused);
  // [O | lse], the lse padded to whole vec4s: the backward kernels read the buffer as heads of vec4s.
  const packed = B * T * H * D + Math.ceil((B * T * H) / 4) * 4;
  const shape = arg.part === 'dkv' ? (arg.kv === 'bshd' ? [B, S, Hkv, 2, D] : [B, Hkv, S, 2, D]) : arg.part === 'dq' ? [B, T, H, D] : [packed];
  return { shape, dtype: q.dtype };
};

/** The CPU meaning, in f64: direct loops over (query row, key) pairs within each row's key range. */
const cpu: CustomOp<AttentionArg>['cpu'] = (src, arg, out) => {
  const n = ATTENTION_ARITY[arg.part];
  const { B, T, H, D, S, Hkv } = attnGeom(src[0]!.view.shape, src[1]!.view.shape, arg.kv);
  const t64 = src.slice(0, n).map((s: Strided) => materialize(s, 'f64'));
  const ex = attentionExtras(arg);
  const offset = arg.offset ?? materialize(src[ex.offset]!, 'i32')[0]!;
  const start = ex.start >= 0 ? materialize(src[ex.start]!, 'i32') : null;
  // RoPE on load: q and k rotated first; the gradients found for the rotated ones are turned back at the end.
  const tab = ex.rope >= 0 ? materialize(src[ex.rope]!, 'f64') : null;
  const turn = (x: Float64Array, rows: number, rowOf: (i: number) => number, at: (i: number) => number, sign: number) => {
    const h = D / 2;
    for (let i = 0; i < rows; i++) {
      const o = at(i), c = rowOf(i) * D;
      for (let d = 0; d < h; d++) {
        const [lo, hi, cs, sn] = [x[o + d]!, x[o + h + d]!, tab![c + d]!, sign * tab![c + h + d]!];
        x[o + d] = lo * cs - hi * sn;
        x[o + h + d] = hi * cs + lo * sn;
      }
    }
  };
  const batched = src[ex.rope]?.view.shape.length === 4;
  const tabRow = (b: number, t: number) => (batched ? b * T + t : t);
  if (tab) {
    const [q, k] = t64 as [Float64Array, Float64Array];
    t64[0] = q.slice(); t64[1] = k.slice();
    turn(t64[0]!, B * T * H, (i) => tabRow(Math.floor(i / (T * H)), Math.floor(i / H) % T), (i) => i * D, 1);
    turn(t64[1]!, B * S * Hkv, (i) => tabRow(Math.floor(i / (S * Hkv)), Math.floor(i / Hkv) % S), (i) => i * D, 1);
  }
  const [q, k, v, dO, packed] = t64 as [Float64Array, Float64Array, Float64Array, Float64Array?, Float64Array?];
  const g = H / Hkv, scale = 1 / Math.sqrt(D), lseAt = B * T * H * D;
  const qRow = (b: number, t: number, h: number) => ((b * T + t) * H + h) * D;
  const kRow = (b: number, s: number, kh: number) => (arg.kv === 'bshd' ? (b * S + s) * Hkv + kh : (b * Hkv + kh) * S + s) * D;
  const keys = (b: number, t: number): [number, number] => { const p = t + offset; return [Math.max(0, Math.min(start ? start[b]! : 0, p)), Math.min(p, S - 1)]; };
  const dot = (x: Float64Array, i: number, y: Float64Array, j: number) => { let a = 0; for (let d = 0; d < D; d++) a += x[i + d]! * y[j + d]!; return a; };
  const res = new Float64Array(numel(out.shape));
  // logsumexp of scale·q·k over a query row's keys (0 when it has none).
  const lseOf = (qi: number, b: number, kh: number, lo: number, hi: number) => {
    let m = -Infinity;
    for (let s = lo; s <= hi; s++) m = Math.max(m, scale * dot(q, qi, k, kRow(b, s, kh)));
    let z = 0;
    for (let s = lo; s <= hi; s++) z += Math.exp(scale * dot(q, qi, k, kRow(b, s, kh)) - m);
    return z > 0 ? m + Math.log(z) : 0;
  };
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
    const [lo, hi] = keys(b, t), qi = qRow(b, t, h), kh = Math.floor(h / g), row = qi / D;
    const lse = arg.part === 'out' ? lseOf(qi, b, kh, lo, hi) : packed![lseAt + row]!;
    if (arg.part === 'out') res[lseAt + row] = lse;
    const Drow = arg.part === 'out' ? 0 : dot(dO!, qi, packed!, qi);
    for (let s = lo; s <= hi; s++) {
      const kj = kRow(b, s, kh);
      const p = Math.exp(scale * dot(q, qi, k, kj) - lse);
      if (arg.part === 'out') { for (let d = 0; d < D; d++) res[qi + d] = res[qi + d]! + p * v[kj + d]!; continue; }
      const ds = p * (dot(dO!, qi, v, kj) - Drow);
      if (arg.part === 'dq') { for (let d = 0; d < D; d++) res[qi + d] = res[qi + d]! + scale * ds * k[kj + d]!; continue; }
      // dkv: key row kj's slot in the packed (…, 2, D) output.
      const o = (kj / D) * 2 * D;
      for (let d = 0; d < D; d++) { res[o + d] = res[o + d]! + scale * ds * q[qi + d]!; res[o + D + d] = res[o + D + d]! + p * dO![qi + d]!; }
    }
  }
  if (tab && arg.part === 'dq') turn(res, B * T * H, (i) => tabRow(Math.floor(i / (T * H)), Math.floor(i / H) % T), (i) => i * D, -1);
  if (tab && arg.part === 'dkv') turn(res, B * S * Hkv, (i) => tabRow(Math.floor(i / (S * Hkv)), Math.floor(i / Hkv) % S), (i) => 2 * i * D, -1);
  const r = allocStorage(out.dtype, res.length);
  r.set(res);
  return r;
};

/**
 * Why q and k cannot be rotated by `tab` as the kernels load them, or null where they can: the table must be
 * (T, 1, D) or (B, T, 1, D) of q's dtype, for self-attention from slot 0 (S = T, offset 0, no start, keys
 * (B, S, Hkv, D)), and a head of vec4s must split into two halves of vec4s (D divisible by 8, or not by 4).
 */
export const ropeOnLoadRefusal = (
  g: AttnGeom, arg: Pick<AttentionArg, 'kv' | 'offset' | 'start'>, tab: { readonly shape: readonly number[]; readonly dtype: string }, dtype: string,
): string | null => {
  const { B, T, D, S } = g, s = tab.shape;
  const fits = tab.dtype === dtype && (s.length === 3 || (s.length === 4 && s[0] === B)) && s[s.length - 3] === T && s[s.length - 2] === 1 && s[s.length - 1] === D;
  if (!fits) return `the RoPE table ${tab.dtype}${fmt(s)} must be ${dtype} (T, 1, D) or (B, T, 1, D)`;
  if (arg.kv !== 'bshd' || S !== T || arg.offset !== 0 || arg.start) return 'RoPE on load is for self-attention from slot 0 (S = T, offset 0, no start)';
  if (D % 4 === 0 && D % 8 !== 0) return `RoPE on load needs a head size divisible by 8 or not by 4, got ${D}`;
  return null;
};

export const attentionOp: CustomOp<AttentionArg> = {
  name: 'attention',
  kind: 'custom',
  template: 'attention',
  infer,
  cpu,
  vjp: (g0, o, src, arg) => {
    if (arg.part !== 'out') throw new Error(`attention(${arg.part}): second derivatives through fused attention are not supported`);
    const [q, k, v] = src as [Tensor, Tensor, Tensor];
    const extra = src.slice(3);
    const { B, T, H, D } = attnGeom(q.shape, k.shape, arg.kv);
    // Only O has consumers (the lse is internal), so the cotangent's O part is dO.
    const dO = reshape(slice(broadcastTo(g0, o.shape), [0], [B * T * H * D]), q.shape);
    const dq = apply(attentionOp, [q, k, v, dO, o, ...extra], { ...arg, part: 'dq' });
    const dkv = apply(attentionOp, [q, k, v, dO, o, ...extra], { ...arg, part: 'dkv' }); // (…, 2, D)
    const half = (i: number) => reshape(slice(dkv, [0, 0, 0, i, 0], [...dkv.shape.slice(0, 3), i + 1, dkv.shape[4]!]), k.shape);
    return [dq, half(0), half(1), ...extra.map(() => null)];
  },
};
