// Renders scheduled kernels (core/schedule) to WGSL: elementwise kernels (one invocation per element),
// row kernels (one workgroup per row: each reduction folds the row, then the epilogue writes it), and the
// epilogue function a matmul template calls. Expressions become `let` bindings, each computed once.

import type { DType } from '../dtype.js';
import { numel } from '../shape.js';
import { kernelOuts, type Cond, type Expr, type Kernel, type Reduction } from '../schedule/index.js';
import { idxKey, renderIdx, type Idx } from '../schedule/idx.js';
import { exprType, literal, LITERAL_PRELUDE, storeType } from './literal.js';
import type { MatmulRows } from './matmul.js';

export const WG = 64;
/** Invocations per workgroup of vec4 elementwise kernels: lavapipe pays per workgroup, so fewer and larger. */
const WG4 = 256;

/** WGSL test that index `i` lies in [lo, hi) (one unsigned compare). */
const inRange = (i: string, c: Cond): string => `(${i} - ${c.lo}u < ${c.hi - c.lo}u)`;

class Scope {
  readonly lines: string[] = [];
  constructor(readonly memo = new Map<Expr, string>()) {}
}

/** Emits expressions into the row scope (row-level values) or the current element scope. */
class Emitter {
  private n = 0;
  readonly preludes = new Set<string>([LITERAL_PRELUDE]);
  /** The kernel's outermost scope; `top` and `cur` are where row- and element-level values go now (a padded
   * region's branch while it is rendered). */
  readonly root = new Scope();
  top = this.root;
  cur: Scope = this.root;
  /** In a vec4 kernel: which lane this emitter renders, and the slots read as whole vec4s. */
  constructor(private readonly reduce: (id: number) => string, private readonly lane?: { readonly k: number; readonly vec: ReadonlySet<number> }) {}

  private fresh(): string {
    return this.lane ? `t${this.lane.k}_${this.n++}` : `t${this.n++}`;
  }

  private idx(i: Idx): string {
    const r = renderIdx(i);
    return this.lane ? r.replace(/\be\b/g, `(e4 * 4u + ${this.lane.k}u)`) : r;
  }

  render(x: Expr): string {
    const scope = x.elem ? this.cur : this.top;
    const hit = scope.memo.get(x);
    if (hit) return hit;
    let v: string;
    switch (x.e) {
      case 'load': {
        const whole = this.lane && this.lane.vec.has(x.slot) && idxKey(x.idx) === 'e';
        const raw = whole ? `vin${x.slot}.${'xyzw'[this.lane!.k]}` : `in${x.slot}[${this.idx(x.idx)}]`;
        v = x.dtype === 'bool' ? `(${raw} != 0u)` : raw;
        break;
      }
      case 'op': {
        if (x.op.wgslPrelude) this.preludes.add(x.op.wgslPrelude);
        const src = x.src.map((s) => this.render(s));
        v = x.op.wgsl(src, x.i ? this.idx(x.i) : '0u', x.arg, x.dtype, x.src.map((s) => s.dtype));
        break;
      }
      case 'mask': {
        const cond = x.conds.map((c) => inRange(this.idx(c.idx), c)).join(' && ');
        const s = x.src;
        if (s.e === 'load' || (s.e === 'op' && s.src.length === 0)) { v = `select(${literal(0, x.dtype)}, ${this.render(s)}, ${cond})`; break; }
        // A padded region (each part of a concatenation) computes its value only where it lies: `select` would
        // evaluate every part for every element.
        const name = this.fresh();
        const branch = new Scope(new Map(scope.memo));
        const [cur, top] = [this.cur, this.top];
        if (scope === cur) this.cur = branch;
        if (scope === top) this.top = branch;
        const inner = this.render(s);
        [this.cur, this.top] = [cur, top];
        scope.lines.push(`var ${name}: ${exprType(x.dtype)} = ${literal(0, x.dtype)};`, `if (${cond}) {`, ...branch.lines.map((l) => `  ${l}`), `  ${name} = ${inner};`, '}');
        scope.memo.set(x, name);
        return name;
      }
      case 'red': return this.reduce(x.id);
      case 'acc': return 'acc';
      case 'zero': return literal(0, x.dtype);
    }
    if (x.e === 'load' || (x.e === 'op' && x.src.length === 0)) { scope.memo.set(x, v); return v; }
    const name = this.fresh();
    scope.lines.push(`let ${name}: ${exprType(x.dtype)} = ${v};`);
    scope.memo.set(x, name);
    return name;
  }
}

const bindings = (k: Kernel, from = 0): string =>
  k.inputs.map((n, i) => `@group(0) @binding(${i + from}) var<storage, read> in${i}: array<${storeType(n.dtype)}>;`).join('\n');
const outBinding = (k: Kernel): string =>
  `@group(0) @binding(${k.inputs.length}) var<storage, read_write> out0: array<${storeType(k.out.dtype)}>;`;
const store = (d: DType, v: string) => (d === 'bool' ? `u32(${v})` : v);

export interface RenderedKernel {
  readonly wgsl: string;
  readonly workgroups: readonly [number, number, number];
  readonly label: string;
  /** Which of the step's buffers it binds, in binding order (default: all). */
  readonly use?: readonly number[];
  /** It binds the device's fault words as its last binding and may report into them (core/wgsl/indexing.ts). */
  readonly faults?: boolean;
  /** A variant with the same bindings that compiles much faster on a CPU adapter (core/device/tiers.ts). */
  readonly fast?: RenderedKernel;
}

const grid = (n: number): [number, number, number] => {
  const x = Math.min(n, 32768);
  return [Math.max(1, x), Math.ceil(n / Math.max(1, x)), 1];
};

/** Slots every load of which reads element `e` itself (so a whole vec4 can be loaded for 4 lanes). */
const vecSlots = (roots: readonly Expr[]): Set<number> => {
  const ok = new Map<number, boolean>();
  const seen = new Set<Expr>();
  const visit = (x: Expr): void => {
    if (seen.has(x)) return;
    seen.add(x);
    if (x.e === 'load') ok.set(x.slot, (ok.get(x.slot) ?? true) && idxKey(x.idx) === 'e');
    else if (x.e === 'op') x.src.forEach(visit);
    else if (x.e === 'mask') visit(x.src);
  };
  roots.forEach(visit);
  return new Set([...ok].filter(([, v]) => v).map(([s]) => s));
};

/**
 * Four elements per invocation with vec4 loads and stores where the data is read in place: llvmpipe turns each
 * per-lane load into a scalar loop, so a vec4 moves 4 values for the price of one.
 */
const renderElementwise4 = (k: Extract<Kernel, { kind: 'elementwise' }>, label: string, n: number): RenderedKernel => {
  const outs = [{ out: k.out, value: k.value }, ...(k.also ?? [])];
  const vec = vecSlots(outs.map((o) => o.value));
  const lanes = [0, 1, 2, 3].map((i) => new Emitter(() => { throw new Error('elementwise kernel has no reductions'); }, { k: i, vec }));
  const values = outs.map((o) => lanes.map((em) => em.render(o.value)));
  const decl = k.inputs.map((m, i) => `@group(0) @binding(${i}) var<storage, read> in${i}: array<${vec.has(i) ? `vec4<${storeType(m.dtype)}>` : storeType(m.dtype)}>;`).join('\n');
  const outDecl = outs.map((o, j) => `@group(0) @binding(${k.inputs.length + j}) var<storage, read_write> out${j}: array<vec4<${storeType(o.out.dtype)}>>;`).join('\n');
  const wgsl = `${[...new Set(lanes.flatMap((em) => [...em.preludes]))].join('\n')}
${decl}
${outDecl}
@compute @workgroup_size(${WG4})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e4 = gid.x + gid.y * nwg.x * ${WG4}u;
  if (e4 >= ${n / 4}u) { return; }
  ${[...vec].map((sl) => `let vin${sl} = in${sl}[e4];`).join('\n  ')}
  ${lanes.map((em) => em.root.lines.join('\n  ')).join('\n  ')}
  ${outs.map((o, j) => `out${j}[e4] = vec4<${storeType(o.out.dtype)}>(${values[j]!.map((v) => store(o.out.dtype, v)).join(', ')});`).join('\n  ')}
}`;
  return { wgsl, workgroups: grid(Math.ceil(n / 4 / WG4)), label };
};

export const renderElementwise = (k: Extract<Kernel, { kind: 'elementwise' }>, label: string): RenderedKernel => {
  const n = numel(k.shape);
  if (n % 4 === 0 && n >= 64) return renderElementwise4(k, label, n);
  const outs = [{ out: k.out, value: k.value }, ...(k.also ?? [])];
  const em = new Emitter(() => { throw new Error('elementwise kernel has no reductions'); });
  const values = outs.map((o) => em.render(o.value));
  const wgsl = `${[...em.preludes].join('\n')}
${bindings(k)}
${outs.map((o, j) => `@group(0) @binding(${k.inputs.length + j}) var<storage, read_write> out${j}: array<${storeType(o.out.dtype)}>;`).join('\n')}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let e = gid.x + gid.y * nwg.x * ${WG}u;
  if (e >= ${n}u) { return; }
  ${em.root.lines.join('\n  ')}
  ${outs.map((o, j) => `out${j}[e] = ${store(o.out.dtype, values[j]!)};`).join('\n  ')}
}`;
  return { wgsl, workgroups: grid(Math.ceil(n / WG)), label };
};

/**
 * A row kernel. With `subgroups` (the adapter has them), a workgroup folds its values with one subgroup builtin
 * and one barrier instead of a log₂(WG)-step tree: each subgroup's result goes to workgroup memory, and every
 * invocation then folds those few partials itself.
 */
export const renderRow = (k: Extract<Kernel, { kind: 'row' }>, label: string, subgroups = false): RenderedKernel => {
  const rows = k.shape.reduce((a, n, d) => (k.axes.includes(d) ? a : a * n), 1);
  const L = k.axes.reduce((a, d) => a * k.shape[d]!, 1);
  // Short rows (or many of them): one invocation folds a whole row serially, with no barriers; long rows: a
  // workgroup per row with a tree reduction in workgroup memory.
  // (Measured on lavapipe: 2048 rows of 512 fold in 2.2 ms serially against 7.7–9.1 ms as 2048 workgroups.)
  const serial = L <= 1024 && rows >= 1024;
  const shared = new Set<string>();
  let useSubgroups = false;
  const done = new Map<number, string>();
  const elemLoopHead = (e: string) => (serial ? `for (var ${e} = 0u; ${e} < ${L}u; ${e}++) {` : `for (var ${e} = lid; ${e} < ${L}u; ${e} += ${WG}u) {`);
  const emitReduction = (r: Reduction): string => {
    // A reduction is folded at the kernel's top level (it has barriers), even when first met inside a branch.
    const [prevCur, prevTop] = [em.cur, em.top];
    em.top = em.root;
    em.cur = new Scope();
    const x = em.render(r.src);
    const body = em.cur.lines;
    [em.cur, em.top] = [prevCur, prevTop];
    const t = exprType(r.dtype); // reductions never produce bool
    const acc = `acc${r.id}`;
    const comb = (a: string, b: string) => r.op.wgsl(a, b);
    em.root.lines.push(
      `var ${acc}: ${t} = ${literal(r.op.identity(r.dtype), r.dtype)};`,
      `${elemLoopHead('e')}\n    ${body.join('\n    ')}\n    ${acc} = ${comb(acc, x)};\n  }`,
    );
    if (serial) { em.root.lines.push(`let red${r.id} = ${acc};`); return `red${r.id}`; }
    shared.add(t);
    if (subgroups && r.op.wgslSubgroup && t !== 'bool') {
      useSubgroups = true;
      em.root.lines.push(
        `let sg${r.id} = ${r.op.wgslSubgroup}(${acc});`,
        `if (sgid == 0u) { sh_${t}[lid / sgsize] = sg${r.id}; }`,
        'workgroupBarrier();',
        `var red${r.id}: ${t} = sh_${t}[0];`,
        `for (var i = 1u; i < ${WG}u / sgsize; i++) { red${r.id} = ${comb(`red${r.id}`, `sh_${t}[i]`)}; }`,
        'workgroupBarrier();',
      );
      return `red${r.id}`;
    }
    em.root.lines.push(
      `sh_${t}[lid] = ${acc};`,
      'workgroupBarrier();',
      `for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {\n    if (lid < s) { sh_${t}[lid] = ${comb(`sh_${t}[lid]`, `sh_${t}[lid + s]`)}; }\n    workgroupBarrier();\n  }`,
      `let red${r.id} = sh_${t}[0];`,
      'workgroupBarrier();',
    );
    return `red${r.id}`;
  };
  const em: Emitter = new Emitter((id) => {
    let v = done.get(id);
    if (!v) { v = emitReduction(k.reductions[id]!); done.set(id, v); }
    return v;
  });
  let tail: string;
  if (k.perRow) {
    const v = em.render(k.value);
    tail = serial ? `out0[row] = ${store(k.out.dtype, v)};` : `if (lid == 0u) { out0[row] = ${store(k.out.dtype, v)}; }`;
  } else {
    em.cur = new Scope();
    const v = em.render(k.value);
    const flat = renderIdx(k.outIdx);
    tail = `${elemLoopHead('e')}\n    ${em.cur.lines.join('\n    ')}\n    out0[${flat}] = ${store(k.out.dtype, v)};\n  }`;
  }
  const sgArgs = useSubgroups ? ', @builtin(subgroup_invocation_id) sgid: u32, @builtin(subgroup_size) sgsize: u32' : '';
  const wgsl = `${useSubgroups ? 'enable subgroups;\n' : ''}${[...em.preludes].join('\n')}
${bindings(k)}
${outBinding(k)}
${[...shared].map((t) => `var<workgroup> sh_${t}: array<${t}, ${WG}>;`).join('\n')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>${sgArgs}) {
  let row = ${serial ? `lid + (wid.x + wid.y * nwg.x) * ${WG}u` : 'wid.x + wid.y * nwg.x'};
  if (row >= ${rows}u) { return; }
  ${em.root.lines.join('\n  ')}
  ${tail}
}`;
  return { wgsl, workgroups: grid(serial ? Math.ceil(rows / WG) : rows), label };
};

/**
 * The WGSL functions of a matmul's fused parts, and the input slots they read: `epi(acc, row, col, batch)` for
 * the epilogue, and `pa(batch, row, col)` / `pb(batch, row, col)` for operands computed on load.
 */
export const renderMatmulFns = (k: Extract<Kernel, { kind: 'matmul' }>): { prelude: string; slots: number[]; rows?: MatmulRows } => {
  const preludes = new Set<string>();
  const slots = new Set<number>();
  // One expression's statements and value; the input slots it reads and the preludes it needs are collected.
  // A row epilogue's reductions are the parameters r0, r1, … of its functions.
  const emit = (x: Expr): { lines: string[]; v: string } => {
    const em = new Emitter((id) => { if (!k.rows) throw new Error('a matmul prologue or epilogue has no reductions'); return `r${id}`; });
    const v = em.render(x);
    for (const l of [...em.root.lines, v]) for (const m of l.matchAll(/\bin(\d+)\[/g)) slots.add(Number(m[1]));
    em.preludes.forEach((p) => preludes.add(p));
    return { lines: em.root.lines, v };
  };
  const fn = (head: string, x: Expr): string => {
    const { lines, v } = emit(x);
    return `${head} {\n  ${[...lines, `return ${v};`].join('\n  ')}\n}`;
  };
  // Several outputs: `epi` stores each where its conditions hold (the first into C, the rest into out1, out2, …).
  const outs = kernelOuts(k);
  const stores = (k.stores ?? []).map((st) => {
    const j = outs.indexOf(st.out);
    const { lines, v } = emit(st.value);
    const body = [...lines, `${j === 0 ? 'C' : `out${j}`}[${renderIdx(st.at)}] = ${v};`];
    const cond = st.conds.map((c) => inRange(renderIdx(c.idx), c)).join(' && ');
    return `  ${cond ? `if (${cond}) ` : ''}{\n    ${body.join('\n    ')}\n  }`; // a block each: their lets share names
  });
  const fns = [
    stores.length ? `fn epi(acc: f32, row: u32, col: u32, batch: u32) {\n${stores.join('\n')}\n}` : '',
    k.epilogue ? fn('fn epi(acc: f32, row: u32, col: u32, batch: u32) -> f32', k.epilogue) : '',
    k.a.value ? fn('fn pa(batch: u32, row: u32, col: u32) -> f32', k.a.value) : '',
    k.b.value ? fn('fn pb(batch: u32, row: u32, col: u32) -> f32', k.b.value) : '',
  ];
  // A row epilogue: reduction i's term and the stored value, as functions of the product's stored value (acc), the
  // row, the column (e: the row kernel's element), and the reductions before it.
  let rows: MatmulRows | undefined;
  if (k.rows) {
    const { reductions, value, perRow, out } = k.rows;
    const head = (name: string, n: number) => `fn ${name}(acc: f32, row: u32, e: u32, batch: u32${Array.from({ length: n }, (_, i) => `, r${i}: f32`).join('')}) -> f32`;
    reductions.forEach((r, i) => fns.push(fn(head(`rs${i}`, i), r.src)));
    fns.push(fn(head('rv', reductions.length), value));
    rows = {
      reductions: reductions.map((r) => ({ identity: literal(r.op.identity(r.dtype), r.dtype), comb: (a: string, b: string) => r.op.wgsl(a, b) })),
      perRow, out: `out${kernelOuts(k).indexOf(out)}`,
    };
  }
  return { prelude: [...preludes, ...fns.filter((f) => f !== '')].join('\n'), slots: [...slots].sort((x, y) => x - y), ...(rows ? { rows } : {}) };
};
