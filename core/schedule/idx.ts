// Symbolic index arithmetic (u32) with the few simplifications that make view math cheap: constant folding,
// and (a·c + b) div/mod c when b < c — enough to undo reshapes of contiguous data exactly.

export type Idx =
  | { readonly k: 'var'; readonly name: string; readonly max: number }
  | { readonly k: 'const'; readonly v: number }
  | { readonly k: 'add'; readonly a: Idx; readonly b: Idx; readonly max: number }
  | { readonly k: 'mul'; readonly a: Idx; readonly c: number; readonly max: number }
  | { readonly k: 'div'; readonly a: Idx; readonly c: number; readonly max: number }
  | { readonly k: 'mod'; readonly a: Idx; readonly c: number; readonly max: number };

/** Exclusive upper bound of an index expression's value. */
export const bound = (i: Idx): number => (i.k === 'const' ? i.v + 1 : i.max);

export const ivar = (name: string, max: number): Idx => ({ k: 'var', name, max });
export const iconst = (v: number): Idx => ({ k: 'const', v });

export const iadd = (a: Idx, b: Idx): Idx => {
  if (a.k === 'const' && b.k === 'const') return iconst(a.v + b.v);
  if (b.k === 'const' && b.v === 0) return a;
  if (a.k === 'const' && a.v === 0) return b;
  // (x + c₁) + c₂ = x + (c₁ + c₂): a slice's offset undone by the slice's inverse gives the index back.
  if (a.k === 'add' && a.b.k === 'const' && b.k === 'const') return iadd(a.a, iconst(a.b.v + b.v));
  // (A / (q·c))·c + (A / q) % c = A / q: re-flattening an unflattened index gives the index back.
  if (a.k === 'mul' && a.a.k === 'div' && b.k === 'mod' && b.c === a.c) {
    const [A2, q] = b.a.k === 'div' ? [b.a.a, b.a.c] : [b.a, 1];
    if (a.a.c === q * a.c && idxKey(a.a.a) === idxKey(A2)) return idiv(A2, q);
  }
  return { k: 'add', a, b, max: bound(a) + bound(b) - 1 };
};

export const imul = (a: Idx, c: number): Idx => {
  if (c === 0) return iconst(0);
  if (c === 1) return a;
  if (a.k === 'const') return iconst(a.v * c);
  return { k: 'mul', a, c, max: (bound(a) - 1) * c + 1 };
};

export const idiv = (a: Idx, c: number): Idx => {
  if (c === 1) return a;
  if (a.k === 'const') return iconst(Math.floor(a.v / c));
  if (bound(a) <= c) return iconst(0);
  if (a.k === 'div') return idiv(a.a, a.c * c);
  if (a.k === 'mul' && a.c % c === 0) return imul(a.a, a.c / c);
  if (a.k === 'add' && a.a.k === 'mul' && a.a.c === c && bound(a.b) <= c) return a.a.a;
  if (a.k === 'add' && a.a.k === 'mul' && a.a.c % c === 0 && bound(a.b) <= c) return imul(a.a.a, a.a.c / c);
  return { k: 'div', a, c, max: Math.floor((bound(a) - 1) / c) + 1 };
};

export const imod = (a: Idx, c: number): Idx => {
  if (c === 1) return iconst(0);
  if (a.k === 'const') return iconst(a.v % c);
  if (bound(a) <= c) return a;
  if (a.k === 'mul' && a.c % c === 0) return iconst(0);
  if (a.k === 'add' && a.a.k === 'mul' && a.a.c % c === 0 && bound(a.b) <= c) return a.b;
  return { k: 'mod', a, c, max: c };
};

/** Row-major flat offset (Horner form, so the div/mod rules can undo it). */
export const flatIndex = (idx: readonly Idx[], shape: readonly number[]): Idx =>
  idx.reduce<Idx>((acc, x, d) => iadd(imul(acc, shape[d]!), x), iconst(0));

/** Multi-index of a row-major flat offset (size-1 dimensions are the constant 0). */
export const unflatten = (flat: Idx, shape: readonly number[]): Idx[] => {
  const out = new Array<Idx>(shape.length);
  let rest = flat;
  for (let d = shape.length - 1; d >= 0; d--) {
    const n = shape[d]!;
    out[d] = n === 1 ? iconst(0) : d === 0 ? rest : imod(rest, n);
    rest = idiv(rest, n);
  }
  return out;
};

/** Strided offset: offset + Σ idx·stride. */
export const stridedIndex = (idx: readonly Idx[], strides: readonly number[], offset: number): Idx =>
  idx.reduce<Idx>((acc, x, d) => iadd(acc, imul(x, strides[d]!)), iconst(offset));

/**
 * The least and greatest value an index expression can take (signed: a slice's inverse subtracts), or null;
 * `vars` narrows the range of some variables.
 */
export const span = (i: Idx, vars?: ReadonlyMap<string, readonly [number, number]>): readonly [number, number] | null => {
  const sp = (j: Idx) => span(j, vars);
  switch (i.k) {
    case 'var': return vars?.get(i.name) ?? [0, i.max - 1];
    case 'const': return [i.v, i.v];
    case 'add': { const a = sp(i.a), b = sp(i.b); return a && b ? [a[0] + b[0], a[1] + b[1]] : null; }
    case 'mul': { const a = sp(i.a); return a && i.c >= 0 ? [a[0] * i.c, a[1] * i.c] : null; }
    case 'div': { const a = sp(i.a); return a && a[0] >= 0 ? [Math.floor(a[0] / i.c), Math.floor(a[1] / i.c)] : null; }
    case 'mod': { const a = sp(i.a); return a && a[0] >= 0 ? (a[1] < i.c ? a : [0, i.c - 1]) : null; }
  }
};

export const idxKey = (i: Idx): string => {
  switch (i.k) {
    case 'var': return i.name;
    case 'const': return String(i.v);
    case 'add': return `(${idxKey(i.a)}+${idxKey(i.b)})`;
    case 'mul': return `(${idxKey(i.a)}*${i.c})`;
    case 'div': return `(${idxKey(i.a)}/${i.c})`;
    case 'mod': return `(${idxKey(i.a)}%${i.c})`;
  }
};

export const usesVar = (i: Idx, prefix: string): boolean => {
  switch (i.k) {
    case 'var': return i.name.startsWith(prefix);
    case 'const': return false;
    case 'add': return usesVar(i.a, prefix) || usesVar(i.b, prefix);
    default: return usesVar(i.a, prefix);
  }
};

/** WGSL u32 expression. Negative constants appear only under a pad mask, where wrap-around is harmless. */
export const renderIdx = (i: Idx): string => {
  switch (i.k) {
    case 'var': return i.name;
    case 'const': return `${i.v >>> 0}u`;
    case 'add': return i.b.k === 'const' && i.b.v < 0 ? `(${renderIdx(i.a)} - ${-i.b.v}u)` : `(${renderIdx(i.a)} + ${renderIdx(i.b)})`;
    case 'mul': return `(${renderIdx(i.a)} * ${i.c >>> 0}u)`;
    case 'div': return `(${renderIdx(i.a)} / ${i.c}u)`;
    case 'mod': return `(${renderIdx(i.a)} % ${i.c}u)`;
  }
};
