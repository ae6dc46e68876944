// charts.js — live line charts on uPlot: a LiveChart owns its columns (one x, one array per
// series), takes history in bulk and live points one row at a time, and redraws at most
// once per animation frame however many points arrive in between. Zoom is a drag on the
// plot (double-click resets); hovering shows every series' value in the legend.
//
// Why it stays smooth at 100,000 points: appending is a push onto growing arrays (no copy,
// no refetch), and uPlot's setData draws each pixel column once, whatever the point count.
// A new series (a loss term that starts in stage 2) rebuilds the plot once, which is rare.

import uPlot from '../vendor/uPlot.esm.js';
import {h, formatNumber} from './dom.js';

// Distinct in light and dark themes (Tableau 10).
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#ff9da7', '#9c755f',
  '#bab0ac'];

// The same term keeps its colour on every chart (raw loss/task and weighted/task alike).
const TERM_COLORS = {task: PALETTE[0], distill: PALETTE[1], feature: PALETTE[2], adversarial: PALETTE[3],
  train: PALETTE[0], val: PALETTE[1], test: PALETTE[2], teacher: PALETTE[4], lr: PALETTE[0], temperature: PALETTE[2]};

export function themeColors() {
  const style = getComputedStyle(document.documentElement);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {fg: read('--fg', '#222'), muted: read('--muted', '#666'), grid: read('--grid', 'rgba(0,0,0,.1)'),
    marker: read('--marker', '#999')};
}

export function colorFor(name, index) {
  if (name === 'loss/total') return themeColors().fg;
  const parts = name.split('/');
  const perClass = parts.length > 2 && parts[0] === 'test' && parts[1] === 'accuracy';
  if (['train', 'val', 'test', 'teacher'].includes(parts[0]) && !perClass) return TERM_COLORS[parts[0]];
  if ((parts[0] === 'loss' || parts[0] === 'weighted') && TERM_COLORS[parts[1]]) return TERM_COLORS[parts[1]];
  if (parts.length === 1 && TERM_COLORS[name]) return TERM_COLORS[name];
  return PALETTE[index % PALETTE.length];
}

// Axis ticks: short (250k, 1.5M, 5e-4), since the axis is narrow.
function formatTick(value) {
  const magnitude = Math.abs(value);
  if (magnitude >= 1e6) return `${+(value / 1e6).toPrecision(3)}M`;
  if (magnitude >= 1e4) return `${+(value / 1e3).toPrecision(3)}k`;
  if (magnitude !== 0 && magnitude < 1e-3) return value.toExponential(0);
  return String(+value.toPrecision(4));
}

// --- one redraw per frame for every chart on the page ---------------------------------

const pending = new Set();
let frameRequested = false;

function requestFlush(chart) {
  pending.add(chart);
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    const charts = [...pending];
    pending.clear();
    for (const chart of charts) chart.flush();
  });
}

// --------------------------------------------------------------------------------------

export class LiveChart {
  // options: title; xLabel ('step' | 'epoch'); kind (a name for tests and CSS);
  // markers() → [{x, label, line}], dashed vertical lines with a label (line: false, the
  // label alone); rightAxis(name) → whether the series gets its own scale on the right
  // (temperature beside lr); sync, a cursor sync key shared by charts with the same x;
  // label(name) → legend text; color(name, index); height.
  constructor(parent, options) {
    this.options = {xLabel: 'step', markers: () => [], rightAxis: () => false, sync: null, label: (name) => name,
      color: colorFor, height: 220};
    for (const [key, value] of Object.entries(options)) if (value !== undefined) this.options[key] = value;
    this.plotElement = h('div', {class: 'plot'});
    this.element = h('figure', {class: 'chart', dataset: {kind: this.options.kind || '', points: '0', series: '0'}},
      h('figcaption', {}, this.options.title || ''), this.plotElement);
    this.element.liveChart = this; // for the browser tests, which read what is drawn
    parent.append(this.element);
    this.x = [];
    this.names = [];
    this.columns = [];
    this.index = new Map();
    this.plot = null;
    this.rebuild = false;
    this.flushes = 0;
    this.destroyed = false;
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.plotElement);
  }

  get length() { return this.x.length; }

  column(name) {
    let i = this.index.get(name);
    if (i === undefined) {
      i = this.names.length;
      this.names.push(name);
      this.columns.push(new Array(this.x.length).fill(null));
      this.index.set(name, i);
      this.rebuild = true;
    }
    return i;
  }

  // One row at x: entries is [[name, value], …]. A row at the last x merges into it (the
  // train, val and test evaluations of one epoch arrive as three events); an older x is a
  // replay of something already drawn and is ignored. Returns whether it was taken.
  addRow(x, entries) {
    const n = this.x.length;
    let row;
    if (n > 0 && x === this.x[n - 1]) row = n - 1;
    else if (n > 0 && x < this.x[n - 1]) return false;
    else {
      this.x.push(x);
      for (const values of this.columns) values.push(null);
      row = n;
    }
    for (const [name, value] of entries) this.columns[this.column(name)][row] = value;
    this.schedule();
    return true;
  }

  // History: tables is [[name, xs, values], …], each sorted by x; replaces what is there.
  load(tables) {
    if (tables.length === 0) return;
    const joined = uPlot.join(tables.map(([, xs, values]) => [xs, values]));
    this.x = Array.from(joined[0]);
    this.names = tables.map(([name]) => name);
    this.columns = joined.slice(1).map((values) => Array.from(values, (v) => (v === undefined ? null : v)));
    this.index = new Map(this.names.map((name, i) => [name, i]));
    this.rebuild = true;
    this.schedule();
  }

  schedule() {
    if (!this.destroyed) requestFlush(this);
  }

  // Markers changed without new data (a stage name learned late): draw again.
  redraw() {
    if (this.plot) this.plot.redraw(false, false);
  }

  flush() {
    if (this.destroyed || this.x.length === 0) return;
    this.flushes++;
    const data = [this.x, ...this.columns];
    if (this.plot === null || this.rebuild) {
      this.create(data);
    } else {
      // Keep the user's zoom: a view narrower than what was drawn last time is a zoom.
      const scale = this.plot.scales.x;
      const zoomed = scale.min != null && this.shownMin != null &&
        (scale.min > this.shownMin || scale.max < this.shownMax);
      this.plot.setData(data, !zoomed);
    }
    this.showLatest(this.plot);
    this.shownMin = this.x[0];
    this.shownMax = this.x[this.x.length - 1];
    this.element.dataset.points = String(this.x.length);
    this.element.dataset.series = String(this.names.length);
    this.element.dataset.flushes = String(this.flushes);
  }

  create(data) {
    if (this.plot) this.plot.destroy();
    this.rebuild = false;
    const colors = themeColors();
    const {options} = this;
    const hasRight = this.names.some((name) => options.rightAxis(name));
    const axis = {stroke: colors.muted, grid: {stroke: colors.grid, width: 1}, ticks: {stroke: colors.grid, width: 1},
      values: (u, splits) => splits.map(formatTick), size: 50};
    const series = [{label: options.xLabel, value: (u, v) => (v == null ? '—' : formatNumber(v))}];
    this.names.forEach((name, i) => series.push({
      label: options.label(name),
      stroke: options.color(name, i),
      width: name === 'loss/total' ? 2 : 1.25,
      scale: options.rightAxis(name) ? 'right' : 'y',
      spanGaps: true,
      value: (u, v) => formatNumber(v),
      points: {size: 5},
    }));
    const axes = [{...axis, label: options.xLabel, labelSize: 18, size: 40, values: undefined}, {...axis, scale: 'y'}];
    if (hasRight) axes.push({...axis, scale: 'right', side: 1, grid: {show: false}});
    this.plot = new uPlot({
      width: this.width(),
      height: options.height,
      scales: {x: {time: false}, y: {}, right: {}},
      series,
      axes,
      legend: {live: true},
      cursor: {drag: {x: true, y: false}, sync: options.sync ? {key: options.sync} : undefined,
        points: {size: 6}},
      hooks: {
        draw: [(u) => this.drawMarkers(u, colors)],
        // Away from the cursor, the legend shows the newest values rather than dashes.
        setLegend: [(u) => this.showLatest(u)],
      },
    }, data, this.plotElement);
  }

  // While the pointer is elsewhere (cursor.left < 0), the legend follows the newest point.
  showLatest(u) {
    const last = this.x.length - 1;
    if (last >= 0 && !(u.cursor.left >= 0) && u.legend.idx !== last) u.setLegend({idx: last}, false);
  }

  drawMarkers(u, colors) {
    const markers = this.options.markers();
    if (!markers.length) return;
    const {ctx} = u;
    const {left, top, width, height} = u.bbox;
    const ratio = window.devicePixelRatio || 1;
    ctx.save();
    ctx.strokeStyle = colors.marker;
    ctx.fillStyle = colors.muted;
    ctx.lineWidth = ratio;
    ctx.setLineDash([4 * ratio, 4 * ratio]);
    ctx.font = `${11 * ratio}px system-ui, sans-serif`;
    ctx.textBaseline = 'top';
    ctx.textAlign = 'left'; // uPlot leaves it as its last axis had it
    for (const marker of markers) {
      const x = Math.round(u.valToPos(marker.x, 'x', true));
      if (!Number.isFinite(x) || x < left - 1 || x > left + width + 1) continue;
      if (marker.line !== false) {
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
      }
      ctx.fillText(marker.label, Math.min(x + 4 * ratio, left + width - ctx.measureText(marker.label).width),
        top + 4 * ratio);
    }
    ctx.restore();
  }

  width() {
    return Math.max(200, this.plotElement.clientWidth || this.element.clientWidth || 400);
  }

  resize() {
    if (!this.plot) return;
    const width = this.width();
    if (Math.abs(width - this.plot.width) >= 1) this.plot.setSize({width, height: this.options.height});
  }

  destroy() {
    this.destroyed = true;
    pending.delete(this);
    this.resizer.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}
