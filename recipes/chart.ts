// Charts of training metrics: line charts from metric rows, rendered by Vega-Lite to SVG (and PNG through resvg),
// for the demo's output folder and for notebooks (tslab's display.html(svg)). Nothing here trains or reads files.

import type { TopLevelSpec } from 'vega-lite';

/** One metric row: `x` (a number for lines, a category for bars), `y`, and the series (a stage, a split) it belongs to. */
export interface Point { readonly x: number | string; readonly y: number; readonly series: string }

export interface LineChart {
  readonly title: string;
  readonly x: string; // axis titles
  readonly y: string;
  readonly points: readonly Point[];
  readonly width?: number;
  readonly height?: number;
  /** 'line' (default): x quantitative; 'bar': x a category, bars in the order the points come, series side by side. */
  readonly mark?: 'line' | 'bar';
  /** The y axis's extent (e.g. [0, 1] for an accuracy); default: the data's. */
  readonly yDomain?: readonly [number, number];
}

/** One chart's Vega-Lite unit spec (no $schema: it goes on the top level). */
const unitSpec = (c: LineChart) => ({
  title: c.title,
  width: c.width ?? 420,
  height: c.height ?? 220,
  data: { values: c.points.map((p) => ({ ...p })) },
  mark: c.mark === 'bar' ? { type: 'bar' } : { type: 'line', point: c.points.length <= 40 }, // short series: dots too
  encoding: {
    x: c.mark === 'bar' ? { field: 'x', type: 'nominal', title: c.x, sort: null, axis: { labelAngle: 0 } } : { field: 'x', type: 'quantitative', title: c.x },
    y: { field: 'y', type: 'quantitative', title: c.y, ...(c.yDomain ? { scale: { domain: [...c.yDomain] } } : {}) },
    color: { field: 'series', type: 'nominal', title: null, sort: null },
    ...(c.mark === 'bar' ? { xOffset: { field: 'series', type: 'nominal', sort: null } } : {}), // grouped, not stacked
  },
});

/**
 * Line charts side by side as one SVG document.
 * @example const svg = await chartSvg([{ title: 'loss', x: 'step', y: 'loss', points: [{ x: 0, y: 2, series: 'sft' }] }])
 */
export const chartSvg = async (charts: readonly LineChart[]): Promise<string> => {
  const [vega, vl] = await Promise.all([import('vega'), import('vega-lite')]);
  const $schema = 'https://vega.github.io/schema/vega-lite/v5.json';
  const top = charts.length === 1 ? { $schema, ...unitSpec(charts[0]!) } : { $schema, hconcat: charts.map(unitSpec), resolve: { scale: { color: 'independent' } } };
  const spec = top as unknown as TopLevelSpec; // our literals are valid Vega-Lite; its union types do not narrow them
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try { return await view.toSVG(); } finally { view.finalize(); }
};

/**
 * An SVG rendered to PNG bytes on a white background (system fonts for the text).
 * @example writeFileSync('chart.png', await svgToPng(svg))
 */
export const svgToPng = async (svg: string, scale = 2): Promise<Uint8Array> => {
  const { Resvg } = await import('@resvg/resvg-js');
  return new Resvg(svg, { background: 'white', fitTo: { mode: 'zoom', value: scale }, font: { loadSystemFonts: true } }).render().asPng();
};
