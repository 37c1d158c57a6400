// WGSL for fused attention (ops/attention.ts): one invocation per query row (out, stats, dq) or per key row (dkv),
// looping over its keys (queries) with the head held in registers as vec4s. Scores are kept in the log2 domain
// (q prescaled by scale·log2 e) so every exponential is an exp2; the stored lse is in natural units. The op's
// argument and geometry are defined here, with the template that reads them.

import type { Kernel } from '../schedule/index.js';
import { grid, head } from './indexing.js';
import type { RenderedKernel } from './fused.js';

export type AttentionPart = 'out' | 'stats' | 'dq' | 'dkv';

export interface AttentionArg {
  readonly part: AttentionPart;
  /** Key/value layout: (B, S, Hkv, D) or head-major (B, Hkv, S, D), as a KV cache is stored. */
  readonly kv: 'bshd' | 'bhsd';
  /** Cache slot of query 0; null: an i32 scalar input after the tensors. */
  readonly offset: number | null;
  /** A (B,) i32 input of first valid key slots follows (after the offset input, if any). */
  readonly start: boolean;
}

/** Number of tensor inputs before the offset/start inputs, per part. */
export const ATTENTION_ARITY: Record<AttentionPart, number> = { out: 3, stats: 4, dq: 5, dkv: 5 };

/** Sizes of an attention call, read from q (B, T, H, D) and k in its layout. */
export interface AttnGeom { readonly B: number; readonly T: number; readonly H: number; readonly D: number; readonly S: number; readonly Hkv: number }
export const attnGeom = (q: readonly number[], k: readonly number[], kv: AttentionArg['kv']): AttnGeom => {
  const [B, T, H, D] = q as [number, number, number, number];
  const [S, Hkv] = kv === 'bshd' ? [k[1]!, k[2]!] : [k[2]!, k[1]!];
  return { B, T, H, D, S, Hkv };
};

const LOG2E = Math.LOG2E, LN2 = Math.LN2;
const f = (x: number) => (Number.isInteger(x) ? `${x}.0` : `${x}`);

export const renderAttention = (k: Kernel & { readonly kind: 'attention' }, label: string): RenderedKernel => {
  const arg = k.out.arg as AttentionArg;
  const src = k.inputs;
  if (k.out.dtype !== 'f32') throw new Error(`attention on WebGPU supports f32, got ${k.out.dtype} (${label})`);
  const n = ATTENTION_ARITY[arg.part];
  const { B, T, H, D, S, Hkv } = attnGeom(src[0]!.shape, src[1]!.shape, arg.kv);
  const G = H / Hkv, scale = 1 / Math.sqrt(D);
  const vec = D % 4 === 0;
  const VT = vec ? 'vec4<f32>' : 'f32', W = vec ? D / 4 : D;
  const OFF = arg.offset === null ? `in${n}[0]` : `${arg.offset}`;
  const START = arg.start ? `in${src.length - 1}[b]` : '0';
  const kRow = (j: string) => (arg.kv === 'bshd' ? `((b * ${S}u + u32(${j})) * ${Hkv}u + kh) * ${W}u` : `((b * ${Hkv}u + kh) * ${S}u + u32(${j})) * ${W}u`);
  const decl = (i: number) =>
    `@group(0) @binding(${i}) var<storage, read> in${i}: array<${i < n ? (arg.part !== 'out' && arg.part !== 'stats' && i === 4 ? 'vec2<f32>' : VT) : 'i32'}>;`;
  const outType = arg.part === 'stats' ? 'vec2<f32>' : VT;
  const decls = [...src.map((_, i) => decl(i)), `@group(0) @binding(${src.length}) var<storage, read_write> out0: array<${outType}>;`].join('\n');
  const prelude = `${decls}\nfn dt(a: ${VT}, b: ${VT}) -> f32 { return ${vec ? 'dot(a, b)' : 'a * b'}; }`;
  const loop = (body: string) => `for (var w = 0u; w < ${W}u; w++) { ${body} }`;
  // A query row e = (b, t, h): its key range and prescaled query.
  const queryRow = `
  let h = e % ${H}u; let t = (e / ${H}u) % ${T}u; let b = e / ${H * T}u; let kh = h / ${G}u;
  let p = i32(t) + ${OFF};
  let lo = max(0, min(${START}, p)); let hi = min(p, ${S - 1});
  var qv: array<${VT}, ${W}>;
  ${loop(`qv[w] = in0[e * ${W}u + w] * ${f(scale * LOG2E)};`)}
  var m = -3.0e38; var l = 0.0;`;
  const score = `let kb = ${kRow('j')};
    var s = 0.0;
    ${loop('s += dt(qv[w], in1[kb + w]);')}`;
  let body: string;
  switch (arg.part) {
    case 'out': body = `${queryRow}
  var acc: array<${VT}, ${W}>;
  for (var j = lo; j <= hi; j++) {
    ${score}
    let mn = max(m, s); let c = exp2(m - mn); let pj = exp2(s - mn);
    l = l * c + pj; m = mn;
    ${loop('acc[w] = acc[w] * c + pj * in2[kb + w];')}
  }
  let inv = select(0.0, 1.0 / l, l > 0.0);
  ${loop(`out0[e * ${W}u + w] = acc[w] * inv;`)}`; break;
    case 'stats': body = `${queryRow}
  for (var j = lo; j <= hi; j++) {
    ${score}
    let mn = max(m, s); l = l * exp2(m - mn) + exp2(s - mn); m = mn;
  }
  var dd = 0.0;
  ${loop(`dd += dt(in2[e * ${W}u + w], in3[e * ${W}u + w]);`)}
  out0[e] = vec2<f32>(select(0.0, (m + log2(l)) * ${f(LN2)}, l > 0.0), dd);`; break;
    case 'dq': body = `${queryRow}
  var dov: array<${VT}, ${W}>;
  var acc: array<${VT}, ${W}>;
  ${loop(`dov[w] = in3[e * ${W}u + w];`)}
  let st = in4[e]; let lse2 = st.x * ${f(LOG2E)};
  for (var j = lo; j <= hi; j++) {
    ${score}
    let pj = exp2(s - lse2);
    var dp = 0.0;
    ${loop('dp += dt(dov[w], in2[kb + w]);')}
    let ds = pj * (dp - st.y);
    ${loop('acc[w] += ds * in1[kb + w];')}
  }
  ${loop(`out0[e * ${W}u + w] = acc[w] * ${f(scale)};`)}`; break;
    case 'dkv': body = `
  ${arg.kv === 'bshd' ? `let kh = e % ${Hkv}u; let j = (e / ${Hkv}u) % ${S}u; let b = e / ${Hkv * S}u;` : `let j = e % ${S}u; let kh = (e / ${S}u) % ${Hkv}u; let b = e / ${Hkv * S}u;`}
  var kc: array<${VT}, ${W}>; var vv: array<${VT}, ${W}>;
  var dk: array<${VT}, ${W}>; var dv: array<${VT}, ${W}>;
  ${loop(`kc[w] = in1[e * ${W}u + w] * ${f(scale * LOG2E)}; vv[w] = in2[e * ${W}u + w];`)}
  let first = ${START};
  for (var hh = 0u; hh < ${G}u; hh++) {
    let h = kh * ${G}u + hh;
    for (var t = u32(max(0, i32(j) - ${OFF})); t < ${T}u; t++) {
      let p = i32(t) + ${OFF};
      if (i32(j) < min(first, p)) { continue; }
      let r = (b * ${T}u + t) * ${H}u + h;
      var s = 0.0; var dp = 0.0;
      ${loop(`s += dt(in0[r * ${W}u + w], kc[w]); dp += dt(in3[r * ${W}u + w], vv[w]);`)}
      let st = in4[r];
      let pj = exp2(s - st.x * ${f(LOG2E)});
      let ds = pj * (dp - st.y);
      ${loop(`dv[w] += pj * in3[r * ${W}u + w]; dk[w] += ds * in0[r * ${W}u + w];`)}
    }
  }
  ${loop(`out0[2u * e * ${W}u + w] = dk[w] * ${f(scale)}; out0[(2u * e + 1u) * ${W}u + w] = dv[w];`)}`; break;
  }
  const rows = arg.part === 'dkv' ? B * S * Hkv : B * T * H;
  return { wgsl: `${prelude}\n${head(rows)}${body}\n}`, workgroups: grid(rows), label };
};
