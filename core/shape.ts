// Shapes: validation, broadcasting, axes and strides. Errors here name the op and the shapes involved.

export type Shape = readonly number[];

export class ShapeError extends Error { override name = 'ShapeError'; }
export class DTypeError extends Error { override name = 'DTypeError'; }

export const fmt = (s: Shape): string => `(${s.join(',')}${s.length === 1 ? ',' : ''})`;
export const numel = (s: Shape): number => s.reduce((a, b) => a * b, 1);
export const sameShape = (a: Shape, b: Shape): boolean => a.length === b.length && a.every((d, i) => d === b[i]);

export const checkShape = (op: string, s: Shape): Shape => {
  for (const d of s) {
    if (!Number.isInteger(d) || d < 0) throw new ShapeError(`${op}: invalid shape ${fmt(s)}: dimensions must be non-negative integers`);
  }
  return s;
};

/** Numpy broadcasting of any number of shapes. */
export const broadcastShapes = (op: string, ...shapes: Shape[]): Shape => {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const k = s[s.length - rank + i] ?? 1;
      if (k === 1) continue;
      if (d !== 1 && d !== k) {
        throw new ShapeError(`${op}: cannot broadcast ${shapes.map(fmt).join(' with ')}: dimension ${k} vs ${d}`);
      }
      d = k;
    }
    out.push(d);
  }
  return out;
};

/** Normalise one axis (negative counts from the end). */
export const normAxis = (op: string, axis: number, rank: number): number => {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new ShapeError(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
};

/** Normalise an axis list; undefined means every axis. Sorted, without duplicates. */
export const normAxes = (op: string, axes: number | readonly number[] | undefined, rank: number): number[] => {
  if (axes === undefined) return [...Array(rank).keys()];
  const list = typeof axes === 'number' ? [axes] : axes;
  const out = list.map((a) => normAxis(op, a, rank));
  if (new Set(out).size !== out.length) throw new ShapeError(`${op}: repeated axis in [${list.join(',')}]`);
  return out.sort((a, b) => a - b);
};

export const contiguousStrides = (s: Shape): number[] => {
  const st = new Array<number>(s.length);
  let acc = 1;
  for (let i = s.length - 1; i >= 0; i--) { st[i] = acc; acc *= s[i]!; }
  return st;
};
