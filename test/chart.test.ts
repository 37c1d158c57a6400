// Metric charts: Vega-Lite's SVG carries the titles, a mark per series and the right number of bars; PNG bytes
// start with the PNG signature and have the size the scale asks for.
import { describe, expect, it } from 'vitest';
import { inflateSync } from 'node:zlib';
import { chartSvg, svgToPng } from '../recipes/chart.js';

/** The top-left pixel of an 8-bit RGBA PNG: row 0's first pixel is stored as it is under every PNG filter. */
const firstPixel = (png: Uint8Array): number[] => {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const idat: Uint8Array[] = [];
  for (let at = 8; at < png.length;) {
    const len = view.getUint32(at), type = String.fromCharCode(...png.slice(at + 4, at + 8));
    if (type === 'IHDR') expect([png[at + 16], png[at + 17]]).toEqual([8, 6]); // bit depth 8, RGBA
    if (type === 'IDAT') idat.push(png.slice(at + 8, at + 8 + len));
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  return [...raw.subarray(1, 5)]; // after row 0's filter byte
};

describe('charts', () => {
  it('draws a loss line per series and accuracy bars per stage, side by side, and renders them to PNG', async () => {
    const loss = Array.from({ length: 20 }, (_, i) => ({ x: i, y: 2 / (1 + i), series: i < 10 ? 'pretrain' : 'sft' }));
    const acc = ['untrained', 'sft', 'dpo'].map((x, i) => ({ x, y: [0, 0.5, 0.75][i]!, series: 'held-out' }));
    const svg = await chartSvg([{ title: 'Loss curve', x: 'step', y: 'loss', points: loss }, { title: 'Accuracy', x: 'stage', y: 'accuracy', points: acc, mark: 'bar', width: 200 }]);
    expect(svg.startsWith('<svg')).toBe(true);
    for (const s of ['Loss curve', 'Accuracy', 'pretrain', 'sft', 'untrained', 'dpo']) expect(svg).toContain(s);
    expect(svg.match(/aria-roledescription="line mark"/g)?.length).toBe(2); // one line per series
    expect(svg.match(/<path[^>]*aria-roledescription="bar"/g)?.length).toBe(3);
    const png = await svgToPng(svg, 1);
    expect([...png.slice(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const width = new DataView(png.buffer, png.byteOffset + 16, 4).getUint32(0);
    expect(Math.abs(width - Number(/width="(\d+)"/.exec(svg)![1]))).toBeLessThanOrEqual(1);
    // The default scale is 2 (sharp on a HiDPI screen); the background is opaque white, not transparent.
    const png2 = await svgToPng(svg);
    expect(Math.abs(new DataView(png2.buffer, png2.byteOffset + 16, 4).getUint32(0) - 2 * width)).toBeLessThanOrEqual(2);
    expect(firstPixel(png2)).toEqual([255, 255, 255, 255]);
  });

  it('puts bar series side by side from the baseline, not stacked', async () => {
    const points = ['sft', 'dpo'].flatMap((x) => [{ x, y: 0.5, series: 'exact match' }, { x, y: 0.25, series: 'format followed' }]);
    const svg = await chartSvg([{ title: 'Held out', x: 'stage', y: 'share', points, mark: 'bar', width: 200, yDomain: [0, 1] }]);
    // each bar: d="M x,top h width v height h −width Z"
    const bars = [...svg.matchAll(/aria-label="stage: (\w+); share: ([\d.]+); series: ([\w ]+)"[^>]*d="M([\d.]+),([\d.]+)h([\d.]+)v([\d.]+)/g)]
      .map(([, stage, y, series, x, top, w, h]) => ({ stage, y: Number(y), series, x: Number(x), w: Number(w), bottom: Number(top) + Number(h), h: Number(h) }));
    expect(bars.length).toBe(4);
    const base = bars[0]!.bottom;
    for (const b of bars) {
      expect(b.bottom).toBeCloseTo(base, 6); // every bar starts at y = 0
      expect(b.h / bars[0]!.h).toBeCloseTo(b.y / bars[0]!.y, 6); // height ∝ value
    }
    for (const stage of ['sft', 'dpo']) {
      const [a, b] = bars.filter((x) => x.stage === stage);
      expect(a!.x + a!.w).toBeLessThanOrEqual(b!.x + 1e-9); // the second series to the right of the first, no overlap
    }
  });

  it('sizes: 420 × 220 by default, or as asked; the y scale spans yDomain when given, the data (from 0) otherwise', async () => {
    const frame = (svg: string) => /class="background" aria-hidden="true" d="M0\.5,0\.5h([\d.]+)v([\d.]+)h/.exec(svg)!.slice(1).map(Number);
    const line = [0, 1, 2].map((x) => ({ x, y: x, series: 'a' }));
    expect(frame(await chartSvg([{ title: 'A', x: 'step', y: 'loss', points: line }]))).toEqual([420, 220]);
    expect(frame(await chartSvg([{ title: 'A', x: 'step', y: 'loss', points: line, width: 200, height: 100 }]))).toEqual([200, 100]);
    const barHeight = async (yDomain?: readonly [number, number]) => {
      const svg = await chartSvg([{ title: 'B', x: 'stage', y: 'share', mark: 'bar', points: [{ x: 'sft', y: 0.5, series: 's' }], ...(yDomain ? { yDomain } : {}) }]);
      return Number(/aria-roledescription="bar" d="M[\d.]+,[\d.]+h[\d.]+v([\d.]+)/.exec(svg)![1]);
    };
    expect(await barHeight([0, 1])).toBeCloseTo(110, 6); // 0.5 of a [0, 1] scale over 220 px
    expect(await barHeight()).toBeCloseTo(220, 6); // the data's own domain [0, 0.5]
  });

  it('marks each point of a line with a dot up to 40 points, not beyond', async () => {
    const dots = async (n: number) => {
      const svg = await chartSvg([{ title: 'A', x: 'step', y: 'loss', points: Array.from({ length: n }, (_, x) => ({ x, y: 1 / (1 + x), series: 'a' })) }]);
      return (svg.match(/aria-roledescription="point"/g) ?? []).length;
    };
    expect([await dots(5), await dots(40), await dots(41)]).toEqual([5, 40, 0]);
  });
});
