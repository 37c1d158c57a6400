// Horizontal fusion: independent kernels with the same workgroup size run as one dispatch. Each part keeps its
// WGSL with its module-scope names prefixed, its bindings renumbered after the previous parts', and its entry
// turned into a function; a new entry gives each workgroup to one part (consecutive blocks, in part order, dealt
// across the adapter's workers) with the builtins that part would have seen. Workgroup arrays of the same name
// and element type are shared (no two parts run in one workgroup). Small kernels, such as weight gradients of 1–6
// workgroups, then fill the cores together instead of one after another.

import type { RenderedKernel } from './fused.js';

/** What a merged dispatch may use: the adapter's limits. */
export interface MergeLimits {
  readonly maxBindings: number;
  readonly maxSharedBytes: number;
  readonly maxPerDimension: number;
  /**
   * How many contiguous ranges the adapter's workers split a dispatch into (lavapipe: one per thread; default 1).
   * The parts' workgroups are dealt across the ranges, so one heavy part does not land on one worker.
   */
  readonly spread?: number;
}

interface Parsed {
  readonly size: readonly [number, number, number];
  readonly params: readonly { readonly builtin: string; readonly name: string; readonly type: string }[];
  readonly before: string; // the module scope before the entry
  readonly body: string; // the entry's body, braces included
  readonly bindings: number;
  readonly shared: ReadonlyMap<string, { readonly elem: string; readonly len: number; readonly bytes: number }>;
  readonly names: readonly string[]; // module-scope names other than workgroup arrays
}

const BUILTINS = new Set(['workgroup_id', 'local_invocation_id', 'local_invocation_index', 'global_invocation_id', 'num_workgroups', 'subgroup_invocation_id', 'subgroup_size']);
const ENABLE = /^\s*enable\s+[\w\s,]+;\s*$/gm;
const elemBytes = (t: string): number => (/vec4/.test(t) ? 16 : /vec2/.test(t) ? 8 : /f16/.test(t) ? 2 : 4);

/** The parts of a kernel this module can merge; null for WGSL it does not recognise. */
const parse = (wgsl: string): Parsed | null => {
  const entry = /@compute\s+@workgroup_size\(([^)]*)\)\s*fn main\(/.exec(wgsl);
  if (!entry) return null;
  let i = entry.index + entry[0].length, depth = 1;
  while (depth > 0 && i < wgsl.length) depth += wgsl[i] === '(' ? 1 : wgsl[i] === ')' ? -1 : 0, i++;
  const params = wgsl.slice(entry.index + entry[0].length, i - 1).split(',').map((p) => p.trim()).filter((p) => p !== '')
    .map((p) => /^@builtin\((\w+)\)\s*(\w+)\s*:\s*(.+)$/.exec(p));
  if (params.some((m) => !m || !BUILTINS.has(m[1]!))) return null;
  const open = wgsl.indexOf('{', i);
  const size = entry[1]!.split(',').map((s) => Number(s.trim()));
  const before = wgsl.slice(0, entry.index);
  const shared = new Map<string, { elem: string; len: number; bytes: number }>();
  for (const m of before.matchAll(/^var<workgroup>\s+(\w+)\s*:\s*array<(.+),\s*(\d+)>\s*;/gm)) {
    shared.set(m[1]!, { elem: m[2]!, len: Number(m[3]), bytes: Number(m[3]) * elemBytes(m[2]!) });
  }
  const names = [...before.matchAll(/^(?:@group\(0\)\s*@binding\(\d+\)\s*)?(?:var(?:<[^>]*>)?|fn|const|alias|struct|override)\s+(\w+)/gm)]
    .map((m) => m[1]!).filter((n) => !shared.has(n));
  const bindings = Math.max(0, ...[...before.matchAll(/@binding\((\d+)\)/g)].map((m) => Number(m[1]) + 1));
  return {
    size: [size[0] ?? 1, size[1] ?? 1, size[2] ?? 1], before, body: wgsl.slice(open),
    params: params.map((m) => ({ builtin: m![1]!, name: m![2]!, type: m![3]! })), bindings, shared, names,
  };
};

/** Workgroups in a dispatch of this grid. */
export const workgroupCount = (w: readonly [number, number, number]): number => w[0] * w[1] * w[2];

/**
 * One kernel running `parts` (each binding its own buffers, in order, after the previous parts'), or null when
 * they cannot share a dispatch: different workgroup sizes, too many bindings or too much workgroup memory, or
 * WGSL this module does not handle.
 */
export const mergeKernels = (parts: readonly RenderedKernel[], limits: MergeLimits): RenderedKernel | null => {
  const ps = parts.map((r) => parse(r.wgsl));
  if (ps.length < 2 || ps.some((p) => p === null || p.size.join() !== ps[0]!.size.join())) return null;
  // Each reporting part binds the one fault buffer read-write: two such bindings in a dispatch would alias.
  const faults = parts.filter((r) => r.faults).length;
  if (faults > 1) return null;
  const parsed = ps as Parsed[];
  if (parsed.reduce((s, p) => s + p.bindings, 0) > limits.maxBindings) return null;
  // Workgroup arrays: one per name and element type, as long as the longest.
  const shared = new Map<string, { elem: string; len: number; bytes: number }>();
  const rename = parsed.map(() => new Map<string, string>());
  parsed.forEach((p, i) => p.shared.forEach((s, name) => {
    const have = shared.get(name);
    if (have && have.elem !== s.elem) { rename[i]!.set(name, `p${i}_${name}`); shared.set(`p${i}_${name}`, s); }
    else shared.set(name, have && have.len >= s.len ? have : s);
  }));
  if ([...shared.values()].reduce((s, v) => s + v.bytes, 0) > limits.maxSharedBytes) return null;
  let offset = 0, first = 0;
  const fns: string[] = [], branches: string[] = [];
  parsed.forEach((p, i) => {
    for (const n of [...p.names, 'main']) rename[i]!.set(n, `p${i}_${n}`);
    const re = new RegExp(`\\b(${[...rename[i]!.keys()].join('|')})\\b`, 'g');
    const sub = (s: string) => s.replace(re, (n) => rename[i]!.get(n)!);
    const before = sub(p.before.replace(/^var<workgroup>[^;]*;\s*$/gm, '').replace(ENABLE, ''))
      .replace(/@binding\((\d+)\)/g, (_, b: string) => `@binding(${Number(b) + offset})`);
    offset += p.bindings;
    fns.push(`${before.trim()}\nfn p${i}_main(${p.params.map((q) => `${q.name}: ${q.type}`).join(', ')}) ${sub(p.body)}`);
    const [gx, gy] = parts[i]!.workgroups;
    const n = workgroupCount(parts[i]!.workgroups);
    const arg: Record<string, string> = {
      workgroup_id: 'w', local_invocation_id: 'hz_lid', local_invocation_index: 'hz_li',
      global_invocation_id: `w * vec3<u32>(${p.size.join('u, ')}u) + hz_lid`,
      num_workgroups: `vec3<u32>(${parts[i]!.workgroups.join('u, ')}u)`,
      subgroup_invocation_id: 'hz_sgid', subgroup_size: 'hz_sgsize',
    };
    branches.push(`if (q < ${first + n}u) {
    let r = q - ${first}u;
    let w = vec3<u32>(r % ${gx}u, (r / ${gx}u) % ${gy}u, r / ${gx * gy}u);
    p${i}_main(${p.params.map((q) => arg[q.builtin]!).join(', ')});
  }`);
    first += n;
  });
  // Dispatch slot q runs workgroup v of the parts laid end to end: range r = ⌊q / h⌋ of the spread takes every
  // spread-th one, v ≡ r (mod spread); slots past the end (v ≥ first) do nothing.
  const spread = Math.max(1, Math.min(limits.spread ?? 1, first)), h = Math.ceil(first / spread);
  const slots = spread * h;
  const x = Math.min(slots, limits.maxPerDimension);
  const enables = [...new Set(parts.flatMap((r) => r.wgsl.match(ENABLE) ?? []).map((e) => e.trim()))];
  const subgroups = parsed.some((p) => p.params.some((q) => q.builtin.startsWith('subgroup')))
    ? ', @builtin(subgroup_invocation_id) hz_sgid: u32, @builtin(subgroup_size) hz_sgsize: u32' : '';
  const wgsl = `${enables.map((e) => `${e}\n`).join('')}${[...shared].map(([n, s]) => `var<workgroup> ${n}: array<${s.elem}, ${s.len}>;`).join('\n')}
${fns.join('\n')}
@compute @workgroup_size(${parsed[0]!.size.join(', ')})
fn main(@builtin(workgroup_id) hz_w: vec3<u32>, @builtin(local_invocation_id) hz_lid: vec3<u32>,
        @builtin(local_invocation_index) hz_li: u32, @builtin(num_workgroups) hz_n: vec3<u32>${subgroups}) {
  let hz_q = hz_w.x + hz_w.y * hz_n.x;
  let q = ${spread > 1 ? `select(${first}u, (hz_q % ${h}u) * ${spread}u + hz_q / ${h}u, hz_q < ${slots}u)` : 'hz_q'};
  ${branches.join(' else ')}
}`;
  return { wgsl, workgroups: [x, Math.ceil(slots / x), 1], label: parts.map((r) => r.label).join(' + '), ...(faults ? { faults: true } : {}) };
};
