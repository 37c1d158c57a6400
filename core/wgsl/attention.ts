// WGSL for fused attention (ops/attention.ts): one invocation per query row (out, dq) or per key row (dkv),
// looping over its keys (queries) with the head held in registers as vec4s. Scores are kept in the log2 domain
// (q prescaled by scale·log2 e) so every exponential is an exp2; the stored lse is in natural units. The op's
// argument and geometry are defined here, with the template that reads them.

import type { Kernel } from '../schedule/index.js';
import { grid, head } from './indexing.js';
import { WG, type RenderedKernel } from './fused.js';

export type AttentionPart = 'out' | 'dq' | 'dkv';

export interface AttentionArg {
  readonly part: AttentionPart;
  /** Key/value layout: (B, S, Hkv, D) or head-major (B, Hkv, S, D), as a KV cache is stored. */
  readonly kv: 'bshd' | 'bhsd';
  /** Cache slot of query 0; null: an i32 scalar input after the tensors. */
  readonly offset: number | null;
  /** A (B,) i32 input of first valid key slots follows (after the offset input, if any). */
  readonly start: boolean;
  /**
   * A RoPE table follows last ((T, 1, D) or (B, T, 1, D): cos | sin, as ropeTable makes): q and k are rotated on
   * load, query t and key t alike (self-attention from slot 0), and dq, dk are the gradients of the unrotated ones.
   */
  readonly rope?: boolean;
}

/** Where the inputs after the tensors sit: the run-time offset, the start, the RoPE table (-1: absent). */
export const attentionExtras = (arg: AttentionArg): { offset: number; start: number; rope: number } => {
  let i = ATTENTION_ARITY[arg.part];
  const at = (present: boolean) => (present ? i++ : -1);
  return { offset: at(arg.offset === null), start: at(arg.start), rope: at(arg.rope === true) };
};

/** Number of tensor inputs before the offset/start inputs, per part. */
export const ATTENTION_ARITY: Record<AttentionPart, number> = { out: 3, dq: 5, dkv: 5 };

/** Sizes of an attention call, read from q (B, T, H, D) and k in its layout. */
export interface AttnGeom { readonly B: number; readonly T: number; readonly H: number; readonly D: number; readonly S: number; readonly Hkv: number }
export const attnGeom = (q: readonly number[], k: readonly number[], kv: AttentionArg['kv']): AttnGeom => {
  const [B, T, H, D] = q as [number, number, number, number];
  const [S, Hkv] = kv === 'bshd' ? [k[1]!, k[2]!] : [k[2]!, k[1]!];
  return { B, T, H, D, S, Hkv };
};

const LOG2E = Math.LOG2E, LN2 = Math.LN2;
const f = (x: number) => (Number.isInteger(x) ? `${x}.0` : `${x}`);

/** Rows per invocation of the quick first-tier attention kernels. */
const FAST_ROWS = 4;

/**
 * The kernel for one attention part; `rows` forces the rows per invocation. With more than FAST_ROWS rows it comes
 * with a quick-to-compile variant of FAST_ROWS rows (`fast`, for core/device/tiers.ts): on lavapipe the tuned
 * dkv kernel of stories260K's shape took 51 s to compile and the 4-row one 8 s.
 */
export const renderAttention = (k: Kernel & { readonly kind: 'attention' }, label: string, rows?: number): RenderedKernel => {
  const arg = k.out.arg as AttentionArg;
  const src = k.inputs;
  if (k.out.dtype !== 'f32') throw new Error(`attention on WebGPU supports f32, got ${k.out.dtype} (${label})`);
  const n = ATTENTION_ARITY[arg.part];
  const { B, T, H, D, S, Hkv } = attnGeom(k.out.src[0]!.shape, k.out.src[1]!.shape, arg.kv); // the op's shapes: q, k, v may be views
  const G = H / Hkv, scale = 1 / Math.sqrt(D);
  const vec = D % 4 === 0;
  const VT = vec ? 'vec4<f32>' : 'f32', W = vec ? D / 4 : D;
  const ex = attentionExtras(arg);
  const OFF = arg.offset === null ? `in${ex.offset}[0]` : `${arg.offset}`;
  const START = arg.start ? `in${ex.start}[b]` : '0';
  // RoPE on load: turn(x, row, 1) rotates a head by table row `row` (in units of the head's array), −1 undoes it.
  const tab = ex.rope >= 0 ? k.inputs[ex.rope]! : null;
  const tabRow = (b: string, t: string) => (tab && tab.shape.length === 4 ? `((${b}) * ${T}u + ${t}) * ${W}u` : `(${t}) * ${W}u`);
  const turn = (x: string, b: string, t: string, sign = '1.0') => (tab ? `${x} = turn(${x}, ${tabRow(b, t)}, ${sign});` : '');
  const turnFn = tab ? `
fn turn(x: array<${VT}, ${W}>, at: u32, sign: f32) -> array<${VT}, ${W}> {
  var y: array<${VT}, ${W}>;
  for (var w = 0u; w < ${W / 2}u; w++) {
    let c = in${ex.rope}[at + w]; let s = in${ex.rope}[at + ${W / 2}u + w] * sign;
    y[w] = x[w] * c - x[w + ${W / 2}u] * s; y[w + ${W / 2}u] = x[w + ${W / 2}u] * c + x[w] * s;
  }
  return y;
}` : '';
  // Where row (b, t, h) of q, k or v starts, in units of its array: through its view when it is read in place.
  const rowAt = (i: number, b: string, t: string, h: string): string => {
    const v = k.views?.[i];
    const [sb, st, sh] = v ? (i > 0 && arg.kv === 'bhsd' ? [v.strides[0]!, v.strides[2]!, v.strides[1]!] : v.strides) : i === 0 ? [T * H * D, H * D, D] : arg.kv === 'bshd' ? [S * Hkv * D, Hkv * D, D] : [Hkv * S * D, D, S * D];
    const unit = vec ? 4 : 1;
    return `(${(v?.offset ?? 0) / unit}u + ${b} * ${sb! / unit}u + ${t} * ${st! / unit}u + ${h} * ${sh! / unit}u)`;
  };
  const kRow = (i: number, j: string) => rowAt(i, 'b', `u32(${j})`, 'kh');
  // The packed buffer [O | lse] is written as scalars (out's output) and read as heads (input 4 of dq and dkv):
  // lse(i) is query row i's logsumexp.
  const decl = (i: number) => `@group(0) @binding(${i}) var<storage, read> in${i}: array<${i === ex.rope || i < n ? VT : 'i32'}>;`;
  const outType = arg.part === 'out' ? 'f32' : VT;
  const LSE = B * T * H * D; // where the lse of query row i sits in the packed buffer: LSE + i
  const lse = (i: string) => (vec ? `in4[(${LSE}u + ${i}) / 4u][(${LSE}u + ${i}) % 4u]` : `in4[${LSE}u + ${i}]`);
  const decls = [...src.map((_, i) => decl(i)), `@group(0) @binding(${src.length}) var<storage, read_write> out0: array<${outType}>;`].join('\n');
  const prelude = `${decls}\nfn dt(a: ${VT}, b: ${VT}) -> f32 { return ${vec ? 'dot(a, b)' : 'a * b'}; }${turnFn}`;
  const loop = (body: string) => `for (var w = 0u; w < ${W}u; w++) { ${body} }`;
  // Query row r of out's packed output, as scalars, or of dQ.
  const storeRow = (r: number, v: string) => loop(vec && arg.part === 'out' ? `let o = ${v}; let at = (row${r} + w) * 4u; out0[at] = o.x; out0[at + 1u] = o.y; out0[at + 2u] = o.z; out0[at + 3u] = o.w;` : `out0[row${r} + w] = ${v};`);
  // Each invocation takes R consecutive rows (queries, or keys for dkv), so every key (query) row it loads from
  // memory serves R rows from registers. Rows are unrolled here: r → variables q0, q1, ….
  // (stories260K, D = 8, on lavapipe: 8 rows took 25–45% less time than 4 in all three parts; dkv, which also
  // takes each query's Δ, 16 keys: dq and dkv in one dispatch 13.3–13.7 ms against 16.5 with 8; out, 16 queries
  // where that still leaves 8 workgroups or more: 5.8–6.1 ms against 6.6–7.0.)
  const wide = arg.part === 'dkv' || (arg.part === 'out' && Math.ceil((B * H * Math.ceil(T / 16)) / WG) >= 8);
  const R = Math.min(rows ?? (D <= 8 ? (wide ? 16 : 8) : D <= 16 ? 4 : D <= 64 ? 2 : 1), arg.part === 'dkv' ? S : T);
  const rs = Array.from({ length: R }, (_, r) => r);
  const each = (f: (r: number) => string, sep = '\n  ') => rs.map(f).join(sep);
  const C2 = f(scale * LOG2E);
  // Query-side kernels: invocation e = (b, tile of R queries, h), h fastest; row r is query t0 + r.
  const TB = Math.ceil(T / R);
  const queryRows = `
  let h = e % ${H}u; let t0 = ((e / ${H}u) % ${TB}u) * ${R}u; let b = e / ${H * TB}u; let kh = h / ${G}u;
  let first = ${START};
  ${each((r) => `let ok${r} = t0 + ${r}u < ${T}u; let p${r} = i32(t0) + ${r} + ${OFF}; let row${r} = ((b * ${T}u + min(t0 + ${r}u, ${T - 1}u)) * ${H}u + h) * ${W}u;
  let lo${r} = max(0, min(first, p${r})); let hi${r} = select(-1, min(p${r}, ${S - 1}), ok${r});
  var q${r}: array<${VT}, ${W}>; var m${r} = -3.0e38; var l${r} = 0.0;
  let qrow${r} = ${rowAt(0, 'b', `min(t0 + ${r}u, ${T - 1}u)`, 'h')};
  ${loop(`q${r}[w] = in0[qrow${r} + w];`)} ${turn(`q${r}`, 'b', `min(t0 + ${r}u, ${T - 1}u)`)}
  ${loop(`q${r}[w] *= ${C2};`)}`)}
  let jlo = lo0; var jhi = hi0; var flo = lo0; var fhi = hi0;
  ${each((r) => (r ? `jhi = max(jhi, hi${r}); flo = max(flo, lo${r}); fhi = min(fhi, hi${r});` : ''))}`;
  // Keys [flo, fhi] are in every row's range: that stretch runs without per-row conditions (which lavapipe
  // would run masked); the loop over [jlo, jhi] skips it and checks each row.
  const keyLoop = (body: (guard: boolean) => string) => `
  for (var j = flo; j <= fhi; j++) {${keyBody(body(false))}
  }
  for (var j = jlo; j <= jhi; j++) {
    if (j == flo && flo <= fhi) { j = fhi; continue; }${keyBody(body(true))}
  }`;
  const keyBody = (body: string) => `
    let kb = ${kRow(1, 'j')}; let vb = ${kRow(2, 'j')};
    var kr: array<${VT}, ${W}>;
    ${loop('kr[w] = in1[kb + w];')} ${turn('kr', 'b', 'u32(j)')}
    ${body}`;
  const inRange = (guard: boolean, r: number, x: string) => (guard ? `if (j >= lo${r} && j <= hi${r}) {${x}}` : `{${x}}`);
  const score = (r: number) => `var s${r} = 0.0; ${loop(`s${r} += dt(q${r}[w], kr[w]);`)}`;
  let body: string;
  switch (arg.part) {
    case 'out': body = `${queryRows}
  ${each((r) => `var a${r}: array<${VT}, ${W}>;`)}
  ${keyLoop((guard) => `var vr: array<${VT}, ${W}>;
    ${loop('vr[w] = in2[vb + w];')}
    ${each((r) => inRange(guard, r, `
      ${score(r)}
      let mn = max(m${r}, s${r}); let c = exp2(m${r} - mn); let pj = exp2(s${r} - mn);
      l${r} = l${r} * c + pj; m${r} = mn;
      ${loop(`a${r}[w] = a${r}[w] * c + pj * vr[w];`)}
    `), '\n    ')}`)}
  ${each((r) => `if (ok${r}) {
    let inv = select(0.0, 1.0 / l${r}, l${r} > 0.0);
    ${storeRow(r, `a${r}[w] * inv`)}
    out0[${LSE}u + row${r} / ${W}u] = select(0.0, (m${r} + log2(l${r})) * ${f(LN2)}, l${r} > 0.0);
  }`)}
  ${k.out.shape[0]! > LSE + B * T * H ? `if (e == 0u) { for (var i = ${LSE + B * T * H}u; i < ${k.out.shape[0]!}u; i++) { out0[i] = 0.0; } }` : ''}`; break;
    case 'dq': body = `${queryRows}
  ${each((r) => `var o${r}: array<${VT}, ${W}>; var a${r}: array<${VT}, ${W}>; var d${r} = 0.0;
  ${loop(`o${r}[w] = in3[row${r} + w]; d${r} += dt(o${r}[w], in4[row${r} + w]);`)}
  let lse${r} = ${lse(`row${r} / ${W}u`)} * ${f(LOG2E)};`)}
  ${keyLoop((guard) => `var vr: array<${VT}, ${W}>;
    ${loop('vr[w] = in2[vb + w];')}
    ${each((r) => inRange(guard, r, `
      ${score(r)}
      let pj = exp2(s${r} - lse${r});
      var dp = 0.0; ${loop(`dp += dt(o${r}[w], vr[w]);`)}
      let ds = pj * (dp - d${r});
      ${loop(`a${r}[w] += ds * kr[w];`)}
    `), '\n    ')}`)}
  ${each((r) => `if (ok${r}) {
    ${turn(`a${r}`, 'b', `t0 + ${r}u`, '-1.0')}
    ${storeRow(r, `a${r}[w] * ${f(scale)}`)}
  }`)}`; break;
    case 'dkv': {
      // Invocation e = (b, kv head, tile of R key slots), kv head fastest; row r is key slot jb + r.
      const SB = Math.ceil(S / R);
      const keyRowAt = (j: string) => (arg.kv === 'bshd' ? `((b * ${S}u + ${j}) * ${Hkv}u + kh)` : `((b * ${Hkv}u + kh) * ${S}u + ${j})`);
      const queryBody = (guard: boolean) => `${guard ? `
      let p = i32(t) + ${OFF};` : ''}
      let qi = ((b * ${T}u + t) * ${H}u + h) * ${W}u; let qv = ${rowAt(0, 'b', 't', 'h')};
      var qr: array<${VT}, ${W}>; var gr: array<${VT}, ${W}>; var dd = 0.0;
      ${loop(`qr[w] = in0[qv + w]; gr[w] = in3[qi + w]; dd += dt(gr[w], in4[qi + w]);`)} ${turn('qr', 'b', 't')}
      let lse = ${lse(`qi / ${W}u`)} * ${f(LOG2E)};
      ${each((r) => `${guard ? `if (ok${r} && j${r} <= p && j${r} >= min(first, p)) ` : ''}{
        var s = 0.0; var dp = 0.0;
        ${loop(`s += dt(qr[w], k${r}[w]); dp += dt(gr[w], v${r}[w]);`)}
        let pj = exp2(s - lse);
        let ds = pj * (dp - dd);
        ${loop(`dv${r}[w] += pj * gr[w]; dk${r}[w] += ds * qr[w];`)}
      }`, '\n      ')}`;
      body = `
  let kh = e % ${Hkv}u; let jb = ((e / ${Hkv}u) % ${SB}u) * ${R}u; let b = e / ${Hkv * SB}u;
  let first = ${START};
  ${each((r) => `let ok${r} = jb + ${r}u < ${S}u; let j${r} = i32(jb) + ${r}; let row${r} = ${keyRowAt(`min(jb + ${r}u, ${S - 1}u)`)} * ${W}u;
  let krow${r} = ${rowAt(1, 'b', `min(jb + ${r}u, ${S - 1}u)`, 'kh')}; let vrow${r} = ${rowAt(2, 'b', `min(jb + ${r}u, ${S - 1}u)`, 'kh')};
  var k${r}: array<${VT}, ${W}>; var v${r}: array<${VT}, ${W}>; var dk${r}: array<${VT}, ${W}>; var dv${r}: array<${VT}, ${W}>;
  ${loop(`k${r}[w] = in1[krow${r} + w]; v${r}[w] = in2[vrow${r} + w];`)} ${turn(`k${r}`, 'b', `min(jb + ${r}u, ${S - 1}u)`)}
  ${loop(`k${r}[w] *= ${C2};`)}`)}
  // Queries from tfull on see every key of the tile: that stretch runs without per-key conditions.
  let tstart = u32(max(0, i32(jb) - ${OFF}));
  let tfull = select(${T}u, min(${T}u, max(tstart, u32(max(0, i32(jb) + ${R - 1} - ${OFF})))), ok${R - 1} && first <= i32(jb));
  for (var hh = 0u; hh < ${G}u; hh++) {
    let h = kh * ${G}u + hh;
    for (var t = tstart; t < tfull; t++) {${queryBody(true)}
    }
    for (var t = tfull; t < ${T}u; t++) {${queryBody(false)}
    }
  }
  ${each((r) => `if (ok${r}) { ${turn(`dk${r}`, 'b', `jb + ${r}u`, '-1.0')} let o = 2u * row${r}; ${loop(`out0[o + w] = dk${r}[w] * ${f(scale)}; out0[o + ${W}u + w] = dv${r}[w];`)} }`)}`;
      break;
    }
  }
  const invocations = arg.part === 'dkv' ? B * Hkv * Math.ceil(S / R) : B * H * TB;
  const tuned = { wgsl: `${prelude}\n${head(invocations)}${body}\n}`, workgroups: grid(invocations), label };
  return rows === undefined && R > FAST_ROWS ? { ...tuned, fast: renderAttention(k, label, FAST_ROWS) } : tuned;
};
