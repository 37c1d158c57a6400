// Hand-written f32 matmul templates: C[b] = A[b]·B[b] with arbitrary element strides (so transposed or
// broadcast operands are read in place) or operands computed on load (a fused elementwise prologue), an optional
// fused elementwise epilogue, and a GEMV path for M or N = 1.
// Shapes are baked into the WGSL (one program per shape); tiles are chosen per adapter by pickMatmulTiles.

/** Element strides of a batched matrix operand: element (b, r, c) lives at offset + b·batch + r·row + c·col. */
export interface Strides {
  readonly batch: number;
  readonly row: number;
  readonly col: number;
  /**
   * Batch dimensions that do not flatten to one stride (heads inside a batch, a broadcast group of heads):
   * [size, stride] pairs, outermost first, replacing `batch` in the offset Σ ((b / inner) % size) · stride.
   */
  readonly batchDims?: readonly (readonly [number, number])[];
}

/** The WGSL offset of batch `b` for an operand. */
const batchTerm = (st: Strides, b = 'batch'): string => {
  if (!st.batchDims) return `${b} * ${st.batch >>> 0}u`;
  let inner = 1;
  const terms: string[] = [];
  for (let i = st.batchDims.length - 1; i >= 0; i--) {
    const [size, stride] = st.batchDims[i]!;
    if (stride !== 0 && size !== 1) terms.push(`((${b} / ${inner}u) % ${size}u) * ${stride}u`);
    inner *= size;
  }
  return terms.length ? `(${terms.join(' + ')})` : '0u';
};
const batchStrides = (st: Strides): number[] => (st.batchDims ? st.batchDims.map(([, s]) => s) : [st.batch]);

/** Tiling of the workgroup-shared kernel. perThreadM/N must be multiples of 4 (vec4 reads of shared memory). */
export interface MatmulTiles {
  readonly tileK: number;
  readonly threadsM: number;
  readonly threadsN: number;
  readonly perThreadM: number;
  readonly perThreadN: number;
}

/** An extra binding for a prologue or the epilogue, declared after A, B and C in order. */
export interface ExtraBinding {
  readonly name: string;
  /** WGSL store type, e.g. 'array<f32>' (read-only storage) or a struct name for a uniform. */
  readonly type: string;
  readonly uniform?: boolean;
  /** A further output (read_write storage). */
  readonly output?: boolean;
}

export interface MatmulSpec {
  readonly batch: number;
  readonly M: number;
  readonly N: number;
  readonly K: number;
  readonly aStrides: Strides;
  readonly bStrides: Strides;
  /** Default: contiguous row-major (M·N, N, 1). */
  readonly cStrides?: Strides;
  /** Element offsets into the A, B, C bindings (default 0). */
  readonly aOffset?: number;
  readonly bOffset?: number;
  readonly cOffset?: number;
  readonly tiles?: MatmulTiles;
  /**
   * A WGSL expression for the stored value, given the names of `acc: f32` and `row, col, batch: u32`.
   * @example (acc, row, col) => `max(acc * 2.0 + bias[col], 0.0)`
   */
  readonly epilogue?: (acc: string, row: string, col: string, batch: string) => string;
  /** Instead of storing into C: a WGSL statement that stores the element itself (into C and outputs among the extras). */
  readonly store?: (acc: string, row: string, col: string, batch: string) => string;
  readonly extraBindings?: readonly ExtraBinding[];
  /**
   * Operands computed on load: the name of a WGSL function `(batch: u32, row: u32, col: u32) -> f32` (declared in
   * `prelude`) giving element (row, col) of A[batch] or B[batch]. Such an operand has no binding of its own and
   * its strides are ignored; its function reads the extra bindings.
   */
  readonly aValue?: string;
  readonly bValue?: string;
  /** Reductions over each row of the stored product, and a further output from them (one tile spans N). */
  readonly rows?: MatmulRows;
  /** WGSL declarations (structs, helper functions) the epilogue and prologues need. */
  readonly prelude?: string;
  /**
   * Fewer rows than this (and no row epilogue): one GEMV per row, the rows a grid dimension, instead of a tiled
   * kernel (default 2: only M = 1). For CPU adapters, where a tiled kernel's unrolled register tile costs seconds of
   * LLVM compile at its first dispatch and a few rows (a short prompt's prefill) fill a sliver of its tile.
   */
  readonly skinnyRows?: number;
  readonly label?: string;
}

/**
 * A row epilogue (core/schedule/rows.ts): reduction i folds `rs{i}(v, row, col, batch, r0 … r{i-1})` over each row,
 * v being the stored value at (row, col); then `rv(v, row, col, batch, r0 …)` goes to binding `out`, at each
 * element or (perRow) once per row. The functions are the prelude's.
 */
export interface MatmulRows {
  readonly reductions: readonly { readonly identity: string; readonly comb: (a: string, b: string) => string }[];
  readonly perRow: boolean;
  readonly out: string;
}

export interface MatmulKernel {
  readonly wgsl: string;
  readonly entryPoint: 'main';
  readonly workgroups: readonly [number, number, number];
  readonly workgroupSize: readonly [number, number, number];
  /** Binding names in binding order: A and B (unless computed), C, then the extras. */
  readonly bindings: readonly string[];
  readonly kind: 'tiled' | 'gemv';
  readonly label: string;
}

/** What pickMatmulTiles needs to know about the adapter (a `Device` fits). */
export interface TileTarget {
  readonly adapter: { readonly isSoftware: boolean };
  readonly limits: {
    readonly maxComputeWorkgroupStorageSize: number;
    readonly maxComputeInvocationsPerWorkgroup: number;
    readonly maxComputeWorkgroupSizeX: number;
    readonly maxComputeWorkgroupSizeY: number;
  };
}

/** Tiles for a real GPU when no adapter is given: the classic 64×64 block, 4×4 outputs per invocation. */
export const GPU_TILES: MatmulTiles = { tileK: 16, threadsM: 16, threadsN: 16, perThreadM: 4, perThreadN: 4 };
/**
 * llvmpipe scalarises every per-lane load, so a large register tile wins there: 16×16 outputs per invocation
 * (8 vec4 shared loads per 256 FMAs) on 8×8 invocations measured 1.7× the GFLOP/s of 16×8 on 8×16 at n = 1024
 * (interleaved medians) and 18% less time over the Llama training shapes; 4×4 is several times slower.
 */
export const CPU_TILES: MatmulTiles = { tileK: 16, threadsM: 8, threadsN: 8, perThreadM: 16, perThreadN: 16 };

/** Workgroups below which a CPU adapter's invocation grid shrinks (a few per core, for balance). */
const MIN_BLOCKS = 8;

const sharedBytes = (t: MatmulTiles): number => 4 * t.tileK * (t.threadsM * t.perThreadM + t.threadsN * t.perThreadN);

/**
 * Tiles for an adapter, shrunk to its limits, and (given the shape) to avoid mostly-empty blocks on small
 * matrices: the thread grid shrinks first, the per-invocation tile (the efficiency lever on lavapipe) last.
 * `base` overrides the adapter's default tiles (for tuning).
 * @example pickMatmulTiles(device, { M: 1024, N: 1024 }) // lavapipe: 8×8 invocations × 16×16 outputs
 */
export const pickMatmulTiles = (target: TileTarget, shape?: { readonly M: number; readonly N: number }, base?: MatmulTiles): MatmulTiles => {
  const l = target.limits;
  let t: MatmulTiles = base ?? (target.adapter.isSoftware ? CPU_TILES : GPU_TILES);
  const shrinkM = (): boolean => {
    if (t.threadsM > 4) t = { ...t, threadsM: t.threadsM / 2 };
    else if (t.perThreadM > 4) t = { ...t, perThreadM: t.perThreadM / 2 };
    else return false;
    return true;
  };
  const shrinkN = (): boolean => {
    if (t.threadsN > 4) t = { ...t, threadsN: t.threadsN / 2 };
    else if (t.perThreadN > 4) t = { ...t, perThreadN: t.perThreadN / 2 };
    else return false;
    return true;
  };
  if (shape !== undefined && target.adapter.isSoftware) {
    // llvmpipe: keep the large register tile and shrink the invocation grid, to fit small shapes and to give the
    // cores several workgroups each (a weight gradient, 64×344 over K = 2048, ran 18% faster on 4×4 invocations).
    const blocks = () => Math.ceil(shape.M / (t.threadsM * t.perThreadM)) * Math.ceil(shape.N / (t.threadsN * t.perThreadN));
    while (t.threadsM * t.perThreadM >= 2 * shape.M && shrinkM());
    while (t.threadsN * t.perThreadN >= 2 * shape.N && shrinkN());
    // Fewer invocations where that leaves less of the last block empty (N = 172: 3 blocks of 64 columns, 192 in
    // all, ran 17% faster than 2 of 128, 256 in all).
    const padded = (n: number, block: number) => Math.ceil(n / block) * block;
    while (t.threadsM > 4 && padded(shape.M, (t.threadsM / 2) * t.perThreadM) < padded(shape.M, t.threadsM * t.perThreadM)) t = { ...t, threadsM: t.threadsM / 2 };
    while (t.threadsN > 4 && padded(shape.N, (t.threadsN / 2) * t.perThreadN) < padded(shape.N, t.threadsN * t.perThreadN)) t = { ...t, threadsN: t.threadsN / 2 };
    while (blocks() < MIN_BLOCKS && (t.threadsM > 4 || t.threadsN > 4)) {
      if (t.threadsM > 4 && (t.threadsM * t.perThreadM >= t.threadsN * t.perThreadN || t.threadsN <= 4)) t = { ...t, threadsM: t.threadsM / 2 };
      else t = { ...t, threadsN: t.threadsN / 2 };
    }
  } else if (shape !== undefined) {
    // Small shapes: first a smaller register tile (less code, faster cold compile), then fewer invocations.
    while (t.threadsM * t.perThreadM >= 2 * shape.M && t.perThreadM > 8) t = { ...t, perThreadM: t.perThreadM / 2 };
    while (t.threadsN * t.perThreadN >= 2 * shape.N && t.perThreadN > 8) t = { ...t, perThreadN: t.perThreadN / 2 };
    while (t.threadsM * t.perThreadM >= 2 * shape.M && shrinkM());
    while (t.threadsN * t.perThreadN >= 2 * shape.N && shrinkN());
  }
  while (t.threadsM * t.threadsN > l.maxComputeInvocationsPerWorkgroup || t.threadsM > l.maxComputeWorkgroupSizeY) {
    if (!shrinkM()) break;
  }
  while (t.threadsM * t.threadsN > l.maxComputeInvocationsPerWorkgroup || t.threadsN > l.maxComputeWorkgroupSizeX) {
    if (!shrinkN()) break;
  }
  while (sharedBytes(t) > l.maxComputeWorkgroupStorageSize && t.tileK > 4) t = { ...t, tileK: t.tileK / 2 };
  return t;
};

const u = (n: number): string => `${n}u`;
const isInt = (n: number): boolean => Number.isInteger(n) && n >= 0;

const checkSpec = (s: MatmulSpec): void => {
  for (const [k, v] of Object.entries({ batch: s.batch, M: s.M, N: s.N, K: s.K })) {
    if (!isInt(v) || (k !== 'K' && v === 0)) throw new RangeError(`matmulKernel: ${k} must be a positive integer, got ${v}`);
  }
  for (const [name, st] of [['aStrides', s.aStrides], ['bStrides', s.bStrides], ['cStrides', s.cStrides]] as const) {
    if (st !== undefined && !(isInt(st.batch) && isInt(st.row) && isInt(st.col))) {
      throw new RangeError(`matmulKernel: ${name} must be non-negative integers, got ${JSON.stringify(st)}`);
    }
  }
  if (s.batch > 65535) throw new RangeError(`matmulKernel: batch ${s.batch} exceeds 65535 dispatches in z`);
  const t = s.tiles;
  if (t !== undefined && (t.perThreadM % 4 !== 0 || t.perThreadN % 4 !== 0)) {
    throw new RangeError(`matmulKernel: perThreadM/N must be multiples of 4, got ${t.perThreadM}×${t.perThreadN}`);
  }
};

/** Bindings in order, numbered from 0: A and B unless computed, C, then the extras. */
const bindingList = (spec: MatmulSpec, aType: string, bType: string): { name: string; decl: string }[] => [
  ...(spec.aValue ? [] : [{ name: 'A', decl: `var<storage, read> A: ${aType}` }]),
  ...(spec.bValue ? [] : [{ name: 'B', decl: `var<storage, read> B: ${bType}` }]),
  { name: 'C', decl: 'var<storage, read_write> C: array<f32>' },
  ...(spec.extraBindings ?? []).map((e) => ({ name: e.name, decl: e.uniform === true ? `var<uniform> ${e.name}: ${e.type}` : `var<storage, ${e.output === true ? 'read_write' : 'read'}> ${e.name}: ${e.type}` })),
];

/** A vec4 view of an operand is possible when 4 consecutive elements along `dim` start on a 16-byte boundary. */
const vec4Along = (len: number, unitStride: number, others: readonly number[], offset: number): boolean =>
  unitStride === 1 && len % 4 === 0 && offset % 4 === 0 && others.every((s) => s % 4 === 0);

/**
 * WGSL for C[b] = A[b]·B[b] (f32), with its dispatch size. Bindings: 0 = A, 1 = B (read-only storage),
 * 2 = C (read_write storage), then `extraBindings`. M or N equal to 1 uses a GEMV kernel.
 * @example
 * const k = matmulKernel({ batch: 1, M: 64, N: 32, K: 48,
 *   aStrides: { batch: 0, row: 48, col: 1 }, bStrides: { batch: 0, row: 1, col: 48 } }); // A·Bᵀ, B stored (32, 48)
 */
export const matmulKernel = (spec: MatmulSpec): MatmulKernel => {
  checkSpec(spec);
  const skinny = spec.M === 1 || (spec.M < (spec.skinnyRows ?? 2) && !spec.rows);
  return skinny || spec.N === 1 ? gemvKernel(spec, skinny) : tiledKernel(spec);
};

const header = (spec: MatmulSpec, aType: string, bType: string): string => `
${bindingList(spec, aType, bType).map((b, i) => `@group(0) @binding(${i}) ${b.decl};`).join('\n')}
${spec.prelude ?? ''}`;
const bindingNames = (spec: MatmulSpec): string[] => bindingList(spec, '', '').map((b) => b.name);

const storeLine = (spec: MatmulSpec, acc: string, row: string, col: string, indent: string): string => {
  if (spec.store) return `${indent}{ let acc = ${acc}; let row = ${row}; let col = ${col}; ${spec.store('acc', 'row', 'col', 'batch')}; }`;
  const c = spec.cStrides ?? { batch: spec.M * spec.N, row: spec.N, col: 1 };
  const value = spec.epilogue?.('acc', 'row', 'col', 'batch') ?? 'acc';
  return `${indent}{ let acc = ${acc}; let row = ${row}; let col = ${col};
${indent}  C[${u(spec.cOffset ?? 0)} + ${batchTerm(c)} + row * ${u(c.row)} + col * ${u(c.col)}] = ${value}; }`;
};

function tiledKernel(spec: MatmulSpec): MatmulKernel {
  const { M, N, K } = spec;
  const t = spec.tiles ?? CPU_TILES;
  const BM = t.threadsM * t.perThreadM, BN = t.threadsN * t.perThreadN, BK = t.tileK;
  const NT = t.threadsM * t.threadsN;
  const TM = t.perThreadM, TN4 = t.perThreadN / 4;
  const a = spec.aStrides, b = spec.bStrides;
  const aOff = spec.aOffset ?? 0, bOff = spec.bOffset ?? 0;
  // vec4 global loads when 4 consecutive rows of A (columns of B) are contiguous and aligned.
  const aVec = !spec.aValue && vec4Along(M, a.row, [a.col, ...batchStrides(a)], aOff);
  const bVec = !spec.bValue && vec4Along(N, b.col, [b.row, ...batchStrides(b)], bOff);
  const needM = M % BM !== 0, needN = N % BN !== 0, needK = K % BK !== 0;

  // One shared-memory fill: each invocation loads vec4 groups (4 consecutive rows of A / cols of B at one k).
  const fill = (which: 'A' | 'B'): string => {
    const isA = which === 'A';
    const span4 = (isA ? BM : BN) / 4;
    const groups = BK * span4;
    const st = isA ? a : b;
    const kStride = isA ? st.col : st.row, mnStride = isA ? st.row : st.col;
    const kFast = kStride === 1; // consecutive invocations read consecutive k when k is contiguous
    const vec = isA ? aVec : bVec;
    const computed = isA ? spec.aValue : spec.bValue;
    const base = isA ? 'aBase' : 'bBase', origin = isA ? 'row0' : 'col0', limit = isA ? M : N;
    const needMN = isA ? needM : needN;
    const perThread = Math.ceil(groups / NT);
    const guard = perThread * NT > groups ? `if (g < ${u(groups)}) ` : '';
    // When a k row spans whole thread grids (span4 = grids·NT), k depends on the loop counter alone:
    // llvmpipe then sees it uniform across lanes, so a computed operand's per-k factor (an rms norm's 1/rms of
    // a token, in a weight gradient) is one load, not one per lane (a 64×344·K 2048 weight gradient: −15% CPU time).
    const grids = span4 / NT;
    const uniform = !kFast && Number.isInteger(grids);
    const kk = uniform ? (grids === 1 ? 'i' : `i / ${u(grids)}`) : kFast ? `g % ${u(BK)}` : `g / ${u(span4)}`;
    const m4 = uniform ? (grids === 1 ? 'li' : `(i % ${u(grids)}) * ${u(NT)} + li`) : kFast ? `g / ${u(BK)}` : `g % ${u(span4)}`;
    const conds = [needK ? `k < ${u(K)}` : '', needMN ? `mn < ${u(limit)}` : ''].filter((c) => c !== '');
    let load: string;
    if (vec) {
      load = conds.length > 0
        ? `var v = vec4<f32>(); if (${conds.join(' && ')}) { v = ${which}[(${base} + mn + k * ${u(kStride)}) / 4u]; }`
        : `let v = ${which}[(${base} + mn + k * ${u(kStride)}) / 4u];`;
    } else {
      const el = (c: number): string => {
        const at = computed
          ? `${computed}(batch, ${isA ? `mn + ${u(c)}, k` : `k, mn + ${u(c)}`})`
          : `${which}[${base} + (mn + ${u(c)}) * ${u(mnStride)} + k * ${u(kStride)}]`;
        const cs = [needK ? `k < ${u(K)}` : '', needMN ? `mn + ${u(c)} < ${u(limit)}` : ''].filter((x) => x !== '');
        // An out-of-range index is safe under WebGPU's robust buffer access; select discards its value.
        return cs.length > 0 ? `select(0.0, ${at}, ${cs.join(' && ')})` : at;
      };
      load = `let v = vec4<f32>(${[0, 1, 2, 3].map(el).join(', ')});`;
    }
    // A loop, not unrolled: small thread grids load many groups each, and unrolled copies cost compile time.
    return `    for (var i = 0u; i < ${u(perThread)} * one; i++) {
      let g = li + i * ${u(NT)};
      ${guard}{ let kk = ${kk}; let m4 = ${m4}; let k = k0 + kk; let mn = ${origin} + m4 * 4u;
        ${load}
        ${which}s[kk * ${u(span4)} + m4] = v; }
    }`;
  };

  // Accumulators: one array, constant-indexed in the hot loop; the store loop indexes it dynamically, which
  // keeps the bounds-checked epilogue one copy of code (unrolled, it made lavapipe's cold compile ~5× slower).
  // The k loop steps KU at a time, and each accumulator takes one update of KU products: lavapipe keeps the
  // accumulators in memory and masks every write to them (a load, blend and store per update), so folding four
  // k steps into one update ran the Llama training shapes 0–12% faster alone (the stories260K step 5%), n = 1024
  // up to 13%. Loads from shared memory stay one per element per lane: lavapipe loops over the lanes for each.
  const KU = BK % 4 === 0 ? 4 : BK % 2 === 0 ? 2 : 1;
  const loads: string[] = [], fmas: string[] = [];
  for (let d = 0; d < KU; d++) {
    for (let q = 0; q < TM / 4; q++) loads.push(`      let a${q}_${d} = As[(kk + ${u(d)}) * ${u(BM / 4)} + ly * ${u(TM / 4)} + ${u(q)}];`);
    for (let j = 0; j < TN4; j++) loads.push(`      let b${j}_${d} = Bs[(kk + ${u(d)}) * ${u(BN / 4)} + lx * ${u(TN4)} + ${u(j)}];`);
  }
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN4; j++) {
      const products = Array.from({ length: KU }, (_, d) => `a${i >> 2}_${d}.${'xyzw'[i & 3]} * b${j}_${d}`);
      fmas.push(`      accv[${i * TN4 + j}] += ${products.join(' + ')};`);
    }
  }
  const storeCond = [needM ? `r < ${u(M)}` : '', needN ? `cc < ${u(N)}` : ''].filter((x) => x !== '');
  const stores = `  for (var i = 0u; i < ${u(TM)} * one; i++) {
    for (var j = 0u; j < ${u(4 * TN4)} * one; j++) {
      let r = rb + i; let cc = cb + j;
      ${storeCond.length > 0 ? `if (${storeCond.join(' && ')}) ` : ''}{
${storeLine(spec, `accv[i * ${u(TN4)} + j / 4u][j % 4u]`, 'r', 'cc', '        ')}
      }
    }
  }`;
  const rowsCode = spec.rows ? rowEpilogue(spec, spec.rows, t) : '';

  const wgsl = `${header(spec, aVec ? 'array<vec4<f32>>' : 'array<f32>', bVec ? 'array<vec4<f32>>' : 'array<f32>')}
var<workgroup> As: array<vec4<f32>, ${BK * BM / 4}>;
var<workgroup> Bs: array<vec4<f32>, ${BK * BN / 4}>;
${spec.rows ? `var<workgroup> Rs: array<f32, ${BM * t.threadsN}>;` : ''}

@compute @workgroup_size(${t.threadsN}, ${t.threadsM}, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
  let batch = wg.z;
  let row0 = wg.y * ${u(BM)};
  let col0 = wg.x * ${u(BN)};
  let lx = lid.x;
  let ly = lid.y;
  let aBase = ${u(aOff)} + ${batchTerm(a)};
  let bBase = ${u(bOff)} + ${batchTerm(b)};
  // 1, but not to the compiler: the fill, store and row-epilogue loops bounded by it stay loops. lavapipe's LLVM
  // unrolls constant-bounded loops fully, prologue and epilogue calls and all (cold first dispatch, 2 cores: a
  // folded rmsNorm backward 112 s → 3.3 s, a forward with a computed operand 13.8 s → 2.8 s; warm time unchanged).
  // The k loop keeps its constant bound: unrolled, it is the hot loop.
  let one = min(1u, arrayLength(&C));
  var accv: array<vec4<f32>, ${TM * TN4}>;
  for (var k0 = 0u; k0 < ${u(K)}; k0 += ${u(BK)}) {
${fill('A')}
${fill('B')}
    workgroupBarrier();
    for (var kk = 0u; kk < ${u(BK)}; kk += ${u(KU)}) {
${loads.join('\n')}
${fmas.join('\n')}
    }
    workgroupBarrier();
  }
  let rb = row0 + ly * ${u(TM)};
  let cb = col0 + lx * ${u(4 * TN4)};
${stores}
${rowsCode}
}
`;
  return {
    wgsl, entryPoint: 'main', kind: 'tiled',
    workgroups: [Math.ceil(N / BN), Math.ceil(M / BM), spec.batch],
    workgroupSize: [t.threadsN, t.threadsM, 1],
    bindings: bindingNames(spec),
    label: spec.label ?? `matmul_${spec.batch}x${M}x${N}x${K}`,
  };
}

/**
 * The row epilogue of a tile spanning whole rows: each invocation folds its columns of each of its rows, the
 * invocations sharing those rows (threadsN of them) combine their partials through workgroup memory, and then the
 * value is stored per element (each invocation its own) or per row (the first column of invocations).
 */
function rowEpilogue(spec: MatmulSpec, rows: MatmulRows, t: MatmulTiles): string {
  const { M, N } = spec;
  const TM = t.perThreadM, TN = t.perThreadN, TX = t.threadsN;
  if (spec.store || TX * TN < N) throw new Error(`matmulKernel: a row epilogue needs one tile across the ${N} columns and a single store (${spec.label ?? ''})`);
  const value = (i: string, j: string) => {
    const acc = `accv[${i} * ${u(TN / 4)} + ${j} / 4u][${j} % 4u]`;
    return spec.epilogue?.(acc, `rb + ${i}`, `cb + ${j}`, 'batch') ?? acc;
  };
  const reds = (n: number, i: string) => Array.from({ length: n }, (_, q) => `, red${q}[${i}]`).join('');
  const folds = rows.reductions.map((r, q) => `  var red${q}: array<f32, ${TM}>;
  for (var i = 0u; i < ${u(TM)} * one; i++) {
    var p = ${r.identity};
    for (var j = 0u; j < ${u(TN)} * one; j++) {
      if (rb + i < ${u(M)} && cb + j < ${u(N)}) { p = ${r.comb('p', `rs${q}(${value('i', 'j')}, rb + i, cb + j, batch${reds(q, 'i')})`)}; }
    }
    Rs[(ly * ${u(TM)} + i) * ${u(TX)} + lx] = p;
  }
  workgroupBarrier();
  for (var i = 0u; i < ${u(TM)} * one; i++) {
    var p = ${r.identity};
    for (var x = 0u; x < ${u(TX)} * one; x++) { p = ${r.comb('p', `Rs[(ly * ${u(TM)} + i) * ${u(TX)} + x]`)}; }
    red${q}[i] = p;
  }
  workgroupBarrier();`);
  const n = rows.reductions.length;
  const store = rows.perRow
    ? `  if (lx == 0u) {
    for (var i = 0u; i < ${u(TM)} * one; i++) { if (rb + i < ${u(M)}) { ${rows.out}[rb + i] = rv(0.0, rb + i, 0u, batch${reds(n, 'i')}); } }
  }`
    : `  for (var i = 0u; i < ${u(TM)} * one; i++) {
    for (var j = 0u; j < ${u(TN)} * one; j++) {
      if (rb + i < ${u(M)} && cb + j < ${u(N)}) { ${rows.out}[(rb + i) * ${u(N)} + cb + j] = rv(${value('i', 'j')}, rb + i, cb + j, batch${reds(n, 'i')}); }
    }
  }`;
  return [...folds, store].join('\n');
}

/**
 * GEMV for M = 1 or N = 1: out[b, n] = Σ_k v[b, k]·W[b, k, n]; 64 invocations × 4 outputs per workgroup. With
 * `rows` (a skinny product, M > 1), v is each row of A in turn: workgroup row y computes row y.
 */
function gemvKernel(spec: MatmulSpec, rows = spec.M === 1): MatmulKernel {
  const { K } = spec;
  const a = spec.aStrides, b = spec.bStrides;
  const rowVector = rows; // v = a row of A, W = B; otherwise v = B's only column, W = Aᵀ
  const R = rowVector ? spec.M : 1;
  const vRow = R > 1 ? 'row' : '0u';
  const nLen = rowVector ? spec.N : spec.M;
  // A computed operand is read through its function, (batch, row, col) of A or B.
  const v = rowVector
    ? { name: 'A', st: a, k: a.col, off: spec.aOffset ?? 0, fn: spec.aValue, at: (k: string) => `${vRow}, ${k}` }
    : { name: 'B', st: b, k: b.row, off: spec.bOffset ?? 0, fn: spec.bValue, at: (k: string) => `${k}, 0u` };
  const w = rowVector
    ? { name: 'B', st: b, k: b.row, n: b.col, off: spec.bOffset ?? 0, fn: spec.bValue, at: (k: string, n: string) => `${k}, ${n}` }
    : { name: 'A', st: a, k: a.col, n: a.row, off: spec.aOffset ?? 0, fn: spec.aValue, at: (k: string, n: string) => `${n}, ${k}` };
  const vVec = !v.fn && vec4Along(K, v.k, [...batchStrides(v.st), ...(R > 1 ? [a.row] : [])], v.off);
  const nContig = !w.fn && vec4Along(nLen, w.n, [w.k, ...batchStrides(w.st)], w.off);
  const kContig = !w.fn && !nContig && vec4Along(K, w.k, [w.n, ...batchStrides(w.st)], w.off);
  const K4 = Math.floor(K / 4) * 4;
  const nOk = (c: number): string => (nLen % 4 === 0 ? 'true' : `n0 + ${u(c)} < ${u(nLen)}`);
  const vAt = (k: string): string => (v.fn ? `${v.fn}(batch, ${v.at(k)})` : `${v.name}[vBase + (${k}) * ${u(v.k)}]`);
  const wAt = (k: string, c: number): string =>
    `select(0.0, ${w.fn ? `${w.fn}(batch, ${w.at(k, `n0 + ${u(c)}`)})` : `${w.name}[wBase + (${k}) * ${u(w.k)} + (n0 + ${u(c)}) * ${u(w.n)}]`}, ${nOk(c)})`;
  const x = vVec ? `${v.name}[(vBase + k) / 4u]` : `vec4<f32>(${[0, 1, 2, 3].map((j) => vAt(`k + ${u(j)}`)).join(', ')})`;
  let body: string;
  if (nContig) {
    body = [0, 1, 2, 3].map((j) => `      acc += x.${'xyzw'[j]} * ${w.name}[(wBase + (k + ${u(j)}) * ${u(w.k)} + n0) / 4u];`).join('\n');
  } else if (kContig) {
    const dots = [0, 1, 2, 3].map((c) => `select(0.0, dot(x, ${w.name}[(wBase + (n0 + ${u(c)}) * ${u(w.n)} + k) / 4u]), ${nOk(c)})`);
    body = `      acc += vec4<f32>(${dots.join(',\n        ')});`;
  } else {
    body = [0, 1, 2, 3]
      .map((c) => `      acc[${c}] += dot(x, vec4<f32>(${[0, 1, 2, 3].map((j) => wAt(`k + ${u(j)}`, c)).join(', ')}));`)
      .join('\n');
  }
  const tail = K4 < K
    ? `  for (var k = ${u(K4)}; k < ${u(K)}; k++) {
    let s = ${vAt('k')};
${nContig
    ? `    acc += s * ${w.name}[(wBase + k * ${u(w.k)} + n0) / 4u];`
    : [0, 1, 2, 3].map((c) => `    acc[${c}] += s * ${wAt('k', c)};`).join('\n')}
  }`
    : '';
  const stores = [0, 1, 2, 3].map((c) => {
    const st = storeLine(spec, `acc[${c}]`, rowVector ? vRow : `n0 + ${u(c)}`, rowVector ? `n0 + ${u(c)}` : '0u', '    ');
    return `  if (${nOk(c)}) {\n${st}\n  }`;
  });
  const vType = vVec ? 'array<vec4<f32>>' : 'array<f32>';
  const wType = nContig || kContig ? 'array<vec4<f32>>' : 'array<f32>';
  const wgsl = `${header(spec, rowVector ? vType : wType, rowVector ? wType : vType)}
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let batch = wg.z;${R > 1 ? '\n  let row = wg.y;' : ''}
  let n0 = (wg.x * 64u + lid.x) * 4u;
  if (n0 >= ${u(nLen)}) { return; }
  let vBase = ${u(v.off)} + ${batchTerm(v.st)}${R > 1 ? ` + row * ${u(a.row)}` : ''};
  let wBase = ${u(w.off)} + ${batchTerm(w.st)};
  var acc = vec4<f32>();
  for (var k = 0u; k < ${u(K4)}; k += 4u) {
    let x = ${x};
${body}
  }
${tail}
${stores.join('\n')}
}
`;
  return {
    wgsl, entryPoint: 'main', kind: 'gemv',
    workgroups: [Math.ceil(nLen / 256), R, spec.batch],
    workgroupSize: [64, 1, 1],
    bindings: bindingNames(spec),
    label: spec.label ?? `gemv_${spec.batch}x${spec.M}x${spec.N}x${K}`,
  };
}
