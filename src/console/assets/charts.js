// Time charts drawn by hand in SVG: stacked bars (rates per bucket), lines (with gaps), step
// lines (counts that hold until the next change) and vertical marks (decisions).

import { h, s } from './dom.js';

const W = 720;
const H = 200;
const PAD = { l: 58, r: 12, t: 10, b: 24 };

/** A "nice" upper bound and tick step for values up to `max`. */
export function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw);
  return { top: Math.ceil(max / step) * step, step };
}

function fmtNum(v) {
  if (v === 0) return '0';
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(v % 1000 ? 1 : 0)}k`;
  if (Math.abs(v) < 1) return v.toFixed(2).replace(/0+$/, '').replace(/\.$/, '');
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function clock(t) {
  const d = new Date(t);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/**
 * A chart over [start, end] (ms). `bars`: stacked series of {name, color, values: [[t, v]]}
 * drawn `bucketMs` wide; `lines`: {name, color, points: [[t, v]], step?, gapMs?, dash?};
 * `marks`: {t, label, title}; before `since` (when the history starts) the chart is shaded as
 * unknown. Returns a <figure> with a text summary for screen readers.
 */
export function timeChart({ title, summary, start, end, since, bars = [], bucketMs = 10000, lines = [], marks = [], yUnit = '', yFormat = fmtNum, minTop = 0 }) {
  const x = (t) => PAD.l + ((t - start) / (end - start)) * (W - PAD.l - PAD.r);
  // The stacks' totals and the lines' values decide the scale.
  const totals = new Map();
  for (const b of bars) for (const [t, v] of b.values) totals.set(t, (totals.get(t) || 0) + v);
  const maxV = Math.max(minTop, ...totals.values(), ...lines.flatMap((l) => l.points.map((p) => p[1]).filter((v) => v != null)));
  const { top, step } = niceScale(maxV);
  const y = (v) => H - PAD.b - (v / top) * (H - PAD.t - PAD.b);

  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}. ${summary || ''}` });
  if (since && since > start) {
    const sx = x(Math.min(since, end));
    svg.append(s('rect', { class: 'chart-nodata', x: PAD.l, y: PAD.t, width: sx - PAD.l, height: H - PAD.t - PAD.b }));
    if (sx - PAD.l > 90) svg.append(s('text', { class: 'chart-nodata-label', x: PAD.l + 6, y: H - PAD.b - 6 }, 'before this gateway watched'));
  }
  // Grid and axes.
  for (let v = 0; v <= top + 1e-9; v += step) {
    svg.append(s('line', { class: 'chart-grid', x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }));
    svg.append(s('text', { class: 'chart-axis', x: PAD.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, `${yFormat(v)}${yUnit}`));
  }
  const tickEvery = [1, 2, 5, 10, 15, 30, 60].map((m) => m * 60000).find((t) => (end - start) / t <= 7) || 3600000;
  for (let t = Math.ceil(start / tickEvery) * tickEvery; t <= end; t += tickEvery) {
    svg.append(s('text', { class: 'chart-axis', x: x(t), y: H - 6, 'text-anchor': 'middle' }, clock(t)));
  }
  // Stacked bars.
  const bw = Math.max(1, x(start + bucketMs) - x(start) - 0.5);
  const base = new Map();
  for (const b of bars) {
    for (const [t, v] of b.values) {
      if (!v) continue;
      const y0 = base.get(t) || 0;
      base.set(t, y0 + v);
      svg.append(s('rect', { class: 'bar', x: x(t), y: y(y0 + v), width: bw, height: Math.max(0.5, y(y0) - y(y0 + v)), fill: b.color },
        s('title', {}, `${clock(t)} ${b.name}: ${yFormat(v)}${yUnit}`)));
    }
  }
  // Lines: a gap longer than gapMs breaks the line; a step line holds each value.
  for (const l of lines) {
    let d = '';
    let prev = null;
    for (const [t, v] of l.points) {
      if (v == null) { prev = null; continue; }
      if (prev && l.gapMs && t - prev[0] > l.gapMs) prev = null;
      if (!prev) d += `M${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      else if (l.step) d += `H${x(t).toFixed(1)}V${y(v).toFixed(1)}`;
      else d += `L${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      prev = [t, v];
    }
    if (l.step && prev) d += `H${x(end).toFixed(1)}`;
    if (d) svg.append(s('path', { d, fill: 'none', stroke: l.color, 'stroke-width': 2, 'stroke-dasharray': l.dash || null }));
    for (const [t, v] of l.points) {
      if (v == null || l.step) continue;
      svg.append(s('circle', { cx: x(t), cy: y(v), r: 2, fill: l.color }, s('title', {}, `${clock(t)} ${l.name}: ${yFormat(v)}${yUnit}`)));
    }
  }
  // Marks.
  for (const m of marks) {
    if (m.t < start || m.t > end) continue;
    const mx = x(m.t);
    svg.append(s('g', { class: 'mark' },
      s('line', { class: 'chart-mark', x1: mx, x2: mx, y1: PAD.t, y2: H - PAD.b }),
      s('text', { class: 'chart-mark-label', x: mx + 3, y: PAD.t + 9 }, m.label),
      s('title', {}, `${clock(m.t)} ${m.title || m.label}`)));
  }
  const legend = h('div', { class: 'legend' },
    [...bars, ...lines].map((it) => {
      const sw = h('span', { class: 'sw', 'aria-hidden': 'true' });
      sw.style.background = it.color;
      return h('span', {}, sw, it.name);
    }),
    marks.length ? h('span', {}, '┆ marks: ', String(marks.length)) : null);
  return h('figure', { class: 'chart' }, h('figcaption', {}, title), svg, legend,
    summary ? h('p', { class: 'muted skip' }, summary) : null);
}

/**
 * The window a chart shows: the last `windowMs` before `end`, or from a minute before `since`
 * when the history is younger than that (so a fresh gateway's few minutes are readable).
 */
export function chartWindow(end, windowMs, since, alignMs = 1) {
  const start = Math.max(end - windowMs, Math.floor((since - 60000) / alignMs) * alignMs);
  return { start: Math.min(start, end - 5 * 60000), end };
}

/** Colors per status code class. */
export function codeColor(code) {
  if (code === '200') return '#2da44e';
  if (code === '429' || code === '503') return '#d4a72c';
  if (code.startsWith('4')) return '#8250df';
  if (code === 'other') return '#6e7781';
  return '#cf222e';
}
