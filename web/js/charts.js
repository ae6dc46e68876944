// charts.js — line charts on uPlot. LiveChart, for a run's curves: a LiveChart owns its columns (one x, one array per
// series), takes history in bulk and live points one row at a time, and redraws at most
// once per animation frame however many points arrive in between. Zoom is a drag on the
// plot (double-click resets); hovering shows every series' value in the legend.
//
// Why it stays smooth at 100,000 points: appending is a push onto growing arrays (no copy,
// no refetch), and uPlot's setData draws each pixel column once, whatever the point count.
// A new series (a loss term that starts in stage 2) rebuilds the plot once, which is rare.
//
// A stacked chart (the weighted loss terms) draws each stacked series on top of the ones
// before it, so the top edge is their sum and a term's share is the height of its band; the
// raw values stay in `columns` (the legend shows them, with their share of the stack), the
// running sums in `sums`, kept row by row like the rest.
//
// Every chart (LiveChart and BandChart) has tools in its caption: smoothing (an exponential moving average, the
// raw curve faint behind it), a log scale, and downloads as PNG (what is drawn) and CSV (the
// raw values). From the keyboard, the plot takes focus: the arrow keys move the cursor point
// by point (Home, End, PageUp, PageDown further) and a live region reads out the values.
//
// BandChart, for a study's curves: each series is a mean with a band around it (the 95%
// interval over the seeds), replaced whole when the study's statistics change.

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
    marker: read('--marker', '#999'), panel: read('--panel', '#f5f6f8')};
}

// '#4e79a7' with an alpha: the fill under a stacked series.
function translucent(color, alpha) {
  return /^#[0-9a-f]{6}$/i.test(color) ? `${color}${Math.round(alpha * 255).toString(16).padStart(2, '0')}` : color;
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
  if (value == null) return ''; // a log scale's splits leave gaps
  const magnitude = Math.abs(value);
  if (magnitude >= 1e6) return `${+(value / 1e6).toPrecision(3)}M`;
  if (magnitude >= 1e4) return `${+(value / 1e3).toPrecision(3)}k`;
  if (magnitude !== 0 && magnitude < 1e-3) return value.toExponential(0);
  return String(+value.toPrecision(4));
}

// A curve's colour as the other views need it (the study page's arms, its forest plot).
export {PALETTE, translucent};

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
  // label(name) → legend text; color(name, index); height; order(name) → a rank that places
  // a series among the others (legend and stacking order; ties keep arrival order);
  // stacked(name) → whether the series is stacked on the stacked ones before it;
  // references() → [{y, label}], dashed horizontal lines on the left axis (the teacher's
  // accuracy), kept inside the y range; yBounds: [lo, hi], what the left axis never goes
  // past while the values stay inside (accuracies: 0 and 1); axisLabels: {y, right}; empty,
  // the text shown until the first point.
  constructor(parent, options) {
    this.options = {xLabel: 'step', markers: () => [], rightAxis: () => false, sync: null, label: (name) => name,
      color: colorFor, height: 220, order: null, stacked: null, references: () => [], yBounds: null, axisLabels: {},
      empty: 'loading…'};
    for (const [key, value] of Object.entries(options)) if (value !== undefined) this.options[key] = value;
    this.plotElement = h('div', {class: 'plot', dataset: {empty: this.options.empty},
      ...focusable(this.options.title, (event) => this.onKey(event))});
    this.plotElement.style.minHeight = `${this.options.height + 30}px`;
    this.smoothing = 0; // the EMA's weight of the past, 0 (off) to 0.99
    this.logScale = false;
    this.keyIndex = null; // the point the keyboard cursor is on
    this.readout = h('p', {class: 'chart-readout', 'aria-live': 'polite'});
    this.element = h('figure', {class: 'chart', dataset: {kind: this.options.kind || '', points: '0', series: '0'}},
      h('figcaption', {}, h('span', {class: 'chart-title'}, this.options.title || ''), this.tools()),
      this.plotElement, this.readout);
    this.element.liveChart = this; // for the browser tests, which read what is drawn
    parent.append(this.element);
    this.x = [];
    this.names = [];
    this.columns = [];
    this.sums = null; // stacked charts: per series, the running sum up to it (null when not stacked)
    this.index = new Map();
    this.plot = null;
    this.rebuild = false;
    this.flushes = 0;
    this.destroyed = false;
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.plotElement);
  }

  get length() { return this.x.length; }

  tools() {
    return chartTools(this, this.options.title || 'chart');
  }

  setSmoothing(weight) {
    const was = this.smoothing > 0;
    this.smoothing = Math.max(0, Math.min(0.99, weight || 0));
    this.element.dataset.smoothing = String(this.smoothing);
    if (was !== this.smoothing > 0) this.rebuild = true; // the raw series come or go
    this.schedule();
  }

  setLogScale(on) {
    this.logScale = !!on;
    this.element.dataset.log = this.logScale ? 'yes' : 'no';
    this.rebuild = true;
    this.schedule();
  }

  fileName(extension) {
    return fileNameOf(this.options, extension);
  }

  downloadPng() {
    if (this.plot) savePng(this.plot, this.fileName('png'));
  }

  // The raw values (the stacked ones as reported, not summed), one row per x; with the
  // smoothed values beside them while smoothing is on.
  csvText() {
    const header = [this.options.xLabel, ...this.names];
    const smoothed = this.smoothing > 0 ? this.columns.map((values) => ema(values, this.smoothing)) : [];
    if (smoothed.length) header.push(...this.names.map((name) => `${name} (smoothed ${this.smoothing})`));
    return csvOf(header, this.x.map((x, row) => [x, ...this.columns.map((values) => values[row]),
      ...smoothed.map((values) => values[row])]));
  }

  downloadCsv() {
    saveFile(new Blob([this.csvText()], {type: 'text/csv'}), this.fileName('csv'));
  }

  // Arrow keys move the cursor a point; Home and End go to the ends, PageUp and PageDown a
  // tenth of the way. The values at the point are read out (and shown in the legend).
  onKey(event) {
    const index = this.plot ? keyTarget(event, this.keyIndex, this.x.length) : null;
    if (index != null) this.moveCursor(index);
  }

  moveCursor(index) {
    this.keyIndex = index;
    const u = this.plot;
    const left = u.valToPos(this.x[index], 'x');
    u.setCursor({left, top: u.over.clientHeight / 2});
    const values = this.names.map((name, i) => [name, this.columns[i][index]]).filter(([, v]) => v != null);
    this.readout.textContent = `${this.options.xLabel} ${formatNumber(this.x[index])}: ${
      values.map(([name, v]) => `${this.options.label(name)} ${formatNumber(v)}`).join(', ') || 'no value'}`;
    this.element.dataset.cursor = String(index);
  }

  column(name) {
    let i = this.index.get(name);
    if (i === undefined) {
      const {order} = this.options;
      i = this.names.length;
      if (order) {
        const rank = order(name);
        const after = this.names.findIndex((other) => order(other) > rank);
        if (after >= 0) i = after;
      }
      this.names.splice(i, 0, name);
      this.columns.splice(i, 0, new Array(this.x.length).fill(null));
      this.index = new Map(this.names.map((n, k) => [n, k]));
      this.rebuild = true;
      this.restack();
    }
    return i;
  }

  // Series known before their points (the run's curve names): the plot is made with them.
  declare(names) {
    for (const name of names) this.column(name);
  }

  isStacked(i) {
    return !!this.options.stacked && this.options.stacked(this.names[i]);
  }

  // Every running sum again (a series was added, or history was loaded).
  restack() {
    if (!this.options.stacked) return;
    this.sums = this.names.map((name, i) => (this.isStacked(i) ? new Array(this.x.length).fill(null) : null));
    for (let row = 0; row < this.x.length; row++) this.stackRow(row);
  }

  stackRow(row) {
    let sum = 0;
    let any = false;
    const stacked = [];
    for (let i = 0; i < this.names.length; i++) {
      if (!this.sums[i]) continue;
      const value = this.columns[i][row];
      if (value != null) {
        sum += value;
        any = true;
      }
      this.sums[i][row] = sum;
      stacked.push(i);
    }
    if (!any) for (const i of stacked) this.sums[i][row] = null;
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
      if (this.sums) for (const sums of this.sums) if (sums) sums.push(null);
      row = n;
    }
    for (const [name, value] of entries) this.columns[this.column(name)][row] = value;
    if (this.sums) this.stackRow(row);
    this.schedule();
    return true;
  }

  // History: tables is [[name, xs, values], …], each sorted by x; replaces the points that
  // are there (series declared without points stay, empty).
  load(tables) {
    if (tables.length === 0) return;
    const joined = uPlot.join(tables.map(([, xs, values]) => [xs, values]));
    const loaded = new Map(tables.map(([name], i) => [name, joined[i + 1]]));
    const names = [...this.names.filter((name) => !loaded.has(name)), ...loaded.keys()];
    const {order} = this.options;
    if (order) {
      const rank = new Map(names.map((name, i) => [name, [order(name), i]]));
      names.sort((a, b) => rank.get(a)[0] - rank.get(b)[0] || rank.get(a)[1] - rank.get(b)[1]);
    }
    this.x = Array.from(joined[0]);
    this.names = names;
    this.columns = names.map((name) => (loaded.has(name)
      ? Array.from(loaded.get(name), (v) => (v === undefined ? null : v)) : new Array(this.x.length).fill(null)));
    this.index = new Map(this.names.map((name, i) => [name, i]));
    this.restack();
    this.rebuild = true;
    this.schedule();
  }

  // What the chart says until its first point ('loading…', then 'no points yet').
  setEmpty(text) {
    this.plotElement.dataset.empty = text;
  }

  // The reference lines changed (the teacher's evaluation arrived): draw again, ranging y.
  referencesChanged() {
    this.schedule();
  }

  schedule() {
    if (!this.destroyed) requestFlush(this);
  }

  // Markers changed without new data (a stage name learned late): draw again.
  redraw() {
    if (this.plot) this.plot.redraw(false, false);
  }

  // What uPlot draws: the running sums in place of the stacked series.
  // Smoothed, the raw series follow the smoothed ones (drawn faint); on a log scale a value
  // that is not positive has no place and is left out.
  data() {
    let shown = this.columns.map((values, i) => (this.sums && this.sums[i]) || values);
    if (this.smoothing > 0) shown = [...shown.map((values) => ema(values, this.smoothing)), ...shown];
    if (this.logScale) shown = shown.map((values) => values.map((v) => (v != null && v > 0 ? v : null)));
    return [this.x, ...shown];
  }

  flush() {
    if (this.destroyed || this.x.length === 0) return;
    this.flushes++;
    const data = this.data();
    if (this.plot === null || this.rebuild) {
      this.create(data);
    } else {
      // Keep the user's zoom: a view narrower than what was drawn last time is a zoom.
      const scale = this.plot.scales.x;
      const zoomed = scale.min != null && this.shownMin != null &&
        (scale.min > this.shownMin || scale.max < this.shownMax);
      this.plot.setData(data, !zoomed); // unzoomed, the scales (and the reference lines) are ranged again
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
    const stacked = [];
    this.names.forEach((name, i) => {
      const color = options.color(name, i);
      const isStacked = this.isStacked(i);
      if (isStacked) stacked.push(i + 1);
      series.push({
        label: options.label(name),
        stroke: color,
        fill: isStacked ? translucent(color, 0.3) : undefined,
        width: name === 'loss/total' ? 2 : 1.25,
        scale: options.rightAxis(name) ? 'right' : 'y',
        spanGaps: true,
        // The legend shows the raw value (not the running sum), and a stacked term's share.
        value: (u, v, s, idx) => {
          if (idx == null) return formatNumber(v);
          const raw = this.columns[i][idx];
          if (!isStacked || raw == null) return formatNumber(raw);
          const top = this.sums[stacked.at(-1) - 1][idx]; // the top of the stack: their sum
          return top ? `${formatNumber(raw)} (${Math.round((raw / top) * 100)}%)` : formatNumber(raw);
        },
        points: {size: 5},
      });
    });
    // Smoothed: each raw series again, faint. uPlot draws in order, so these, appended, lie
    // over the smoothed ones (appending keeps the indices the bands and the legend use); at a
    // quarter of the colour's strength they stay in the background.
    if (this.smoothing > 0) {
      this.names.forEach((name, i) => {
        series.push({label: `${options.label(name)} (raw)`, stroke: translucent(options.color(name, i), 0.25),
          width: 1, scale: options.rightAxis(name) ? 'right' : 'y', spanGaps: true, points: {show: false},
          value: (u, v) => formatNumber(v)});
      });
    }
    // Each stacked series fills down to the one under it (the first, down to zero).
    const bands = stacked.slice(1).map((s, k) => ({series: [s, stacked[k]]}));
    const labels = options.axisLabels || {};
    const yAxis = {...axis, scale: 'y'};
    if (labels.y) Object.assign(yAxis, {label: labels.y, labelSize: 16, labelFont: '11px system-ui, sans-serif'});
    const xAxis = {...axis, label: options.xLabel, labelSize: 18, size: 40, values: undefined};
    // Epochs are whole: no tick at 2.5.
    if (options.xLabel === 'epoch') xAxis.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
    const axes = [xAxis, yAxis];
    if (hasRight) {
      axes.push({...axis, scale: 'right', side: 1, grid: {show: false},
        ...(labels.right ? {label: labels.right, labelSize: 16, labelFont: '11px system-ui, sans-serif'} : {})});
    }
    // y covers the reference lines too, and starts at zero under a stack.
    const rangeY = (u, min, max) => {
      for (const {y} of options.references()) {
        if (!Number.isFinite(y)) continue;
        min = min == null ? y : Math.min(min, y);
        max = max == null ? y : Math.max(max, y);
      }
      if (min == null || max == null) return this.logScale ? [0.1, 1] : [0, 1];
      if (this.logScale) return logRange(min, max);
      if (stacked.length) min = Math.min(0, min);
      const range = uPlot.rangeNum(min, max, 0.1, true);
      const bounds = options.yBounds;
      if (bounds && min >= bounds[0] && max <= bounds[1]) {
        range[0] = Math.max(range[0], bounds[0]);
        range[1] = Math.min(range[1], bounds[1]);
        if (range[0] >= range[1]) return [bounds[0], bounds[1]];
      }
      return range;
    };
    this.plot = new uPlot({
      width: this.width(),
      height: options.height,
      scales: {x: {time: false}, y: this.logScale ? {range: rangeY, distr: 3, log: 10} : {range: rangeY}, right: {}},
      series,
      bands,
      axes,
      legend: {live: true},
      cursor: {drag: {x: true, y: false}, sync: options.sync ? {key: options.sync} : undefined,
        points: {size: 6}},
      hooks: {
        draw: [(u) => this.drawMarkers(u, colors), (u) => this.drawReferences(u, colors)],
        // Away from the cursor, the legend shows the newest values rather than dashes.
        setLegend: [(u) => this.showLatest(u)],
      },
    }, data, this.plotElement);
    // The raw series stay out of the legend: it names each curve once.
    if (this.smoothing > 0) {
      const rows = this.plot.root.querySelectorAll('.u-legend .u-series');
      for (let i = 1 + this.names.length; i < rows.length; i++) rows[i].hidden = true;
    }
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

  // Horizontal dashed lines at fixed values, labelled at their left end (where a student's
  // curves are usually far from the teacher's value), on the panel's colour so a curve
  // passing behind does not garble the text; below the line when above would meet the
  // stage labels along the top.
  drawReferences(u, colors) {
    const references = this.options.references().filter(({y}) => Number.isFinite(y));
    if (!references.length) return;
    const {ctx} = u;
    const {left, top, width, height} = u.bbox;
    const ratio = window.devicePixelRatio || 1;
    ctx.save();
    ctx.lineWidth = 1.5 * ratio;
    ctx.setLineDash([6 * ratio, 4 * ratio]);
    ctx.font = `${11 * ratio}px system-ui, sans-serif`;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'top';
    for (const reference of references) {
      const y = Math.round(u.valToPos(reference.y, 'y', true));
      if (!Number.isFinite(y) || y < top - 1 || y > top + height + 1) continue;
      ctx.strokeStyle = reference.color || colors.marker;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
      const text = 14 * ratio;
      const above = y - top > 34 * ratio || y + 4 * ratio + text > top + height;
      const textTop = above ? y - 3 * ratio - text : y + 4 * ratio;
      const x = left + 8 * ratio;
      ctx.fillStyle = colors.panel;
      ctx.fillRect(x - 3 * ratio, textTop, ctx.measureText(reference.label).width + 6 * ratio, text);
      ctx.fillStyle = colors.fg;
      ctx.fillText(reference.label, x, textTop + 1.5 * ratio);
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

// A chart's caption controls: smoothing, log scale, PNG, CSV. `chart` has setSmoothing,
// setLogScale, downloadPng and downloadCsv (LiveChart and BandChart alike).
function chartTools(chart, title) {
  const shown = h('output', {class: 'smoothing-value'}, 'off');
  const slider = h('input', {type: 'range', min: '0', max: '0.99', step: '0.01', value: '0', class: 'smoothing',
    'aria-label': `smoothing of ${title}`, oninput: () => {
      chart.setSmoothing(Number(slider.value));
      shown.textContent = chart.smoothing ? chart.smoothing.toFixed(2) : 'off';
    }});
  const log = h('input', {type: 'checkbox', class: 'log-scale', 'aria-label': `log scale for ${title}`,
    onchange: () => chart.setLogScale(log.checked)});
  return h('span', {class: 'chart-tools'},
    h('label', {class: 'inline', title: 'exponential moving average; the raw curve stays faint behind'}, 'smooth ',
      slider, ' ', shown),
    h('label', {class: 'inline'}, log, ' log'),
    h('button', {type: 'button', class: 'secondary small', dataset: {download: 'png'},
      'aria-label': `download ${title} as PNG`, onclick: () => chart.downloadPng()}, 'PNG'),
    h('button', {type: 'button', class: 'secondary small', dataset: {download: 'csv'},
      'aria-label': `download ${title} as CSV`, onclick: () => chart.downloadCsv()}, 'CSV'));
}

// The point a key moves a chart's cursor to (from `at`, or the newest when none yet), or
// null for a key that does not move it (then the page keeps it: Tab goes on).
function keyTarget(event, at, n) {
  if (n === 0) return null;
  const page = Math.max(1, Math.round(n / 10));
  const from = at ?? n - 1;
  const moves = {ArrowLeft: from - 1, ArrowRight: from + 1, ArrowDown: from - 1, ArrowUp: from + 1, Home: 0,
    End: n - 1, PageDown: from - page, PageUp: from + page};
  if (!(event.key in moves)) return null;
  event.preventDefault();
  return Math.max(0, Math.min(n - 1, moves[event.key]));
}

// The plot's attributes that make it a keyboard stop with a name.
function focusable(title, onKey) {
  return {tabindex: '0', role: 'group', 'aria-roledescription': 'chart',
    'aria-label': `${title || 'chart'}: arrow keys read the values`, onkeydown: onKey};
}

// A file name from a chart's title: "loss-total-by-step.png".
function fileNameOf(options, extension) {
  const base = (options.fileName || options.title || options.kind || 'chart').toLowerCase()
    .replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  return `${base || 'chart'}.${extension}`;
}

// What a uPlot has drawn, on the panel's colour (a transparent PNG is unreadable on a dark
// viewer), saved as a PNG file.
function savePng(plot, name) {
  const source = plot.ctx.canvas;
  const canvas = document.createElement('canvas');
  canvas.width = source.width;
  canvas.height = source.height;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = themeColors().panel;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(source, 0, 0);
  canvas.toBlob((blob) => saveFile(blob, name), 'image/png');
}

// CSV text: a header and rows of numbers (empty where there is none).
function csvOf(header, rows) {
  const quote = (text) => (/[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text);
  return `${[header.map(quote).join(','), ...rows.map((cells) => cells.map((v) => (v == null ? '' : String(v)))
    .join(','))].join('\n')}\n`;
}

// A y scale's range on a log axis: whole decades around what is there.
function logRange(min, max) {
  return uPlot.rangeLog(Math.max(min, 1e-12), Math.max(max, 1e-12), 10, true);
}

// An exponential moving average, debiased as TensorBoard does (the first points are not
// pulled towards zero); gaps stay gaps.
export function ema(values, weight) {
  const out = new Array(values.length);
  let last = 0;
  let count = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v == null || !Number.isFinite(v)) {
      out[i] = v ?? null;
      continue;
    }
    last = last * weight + (1 - weight) * v;
    count++;
    out[i] = last / (1 - weight ** count);
  }
  return out;
}

// Saves a Blob as a file the browser downloads.
export function saveFile(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h('a', {href: url, download: name, hidden: true});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// --- a study's mean curves with their bands -------------------------------------------

// options: title; kind (for tests and CSS); xLabel ('step' | 'epoch'); yBounds ([0, 1] for
// accuracies: the axis stays inside while the values do, and a band that spills past is
// cut); format(value) → legend text; height; empty, the text shown while there is nothing.
export class BandChart {
  constructor(parent, options) {
    this.options = {xLabel: 'step', yBounds: null, format: formatNumber, height: 200, empty: 'loading…', ...options};
    this.plotElement = h('div', {class: 'plot', dataset: {empty: this.options.empty},
      ...focusable(this.options.title, (event) => this.onKey(event))});
    this.plotElement.style.minHeight = `${this.options.height + 10}px`;
    this.legend = h('ul', {class: 'band-legend'});
    this.readout = h('p', {class: 'chart-readout', 'aria-live': 'polite'});
    this.keyIndex = null;
    this.smoothing = 0;
    this.logScale = false;
    this.element = h('figure', {class: 'chart band-chart', dataset: {kind: this.options.kind || '', series: '0'}},
      h('figcaption', {}, h('span', {class: 'chart-title'}, this.options.title || ''),
        chartTools(this, this.options.title || 'chart')), this.plotElement, this.legend, this.readout);
    this.element.bandChart = this; // for the browser tests, which read the colours drawn
    parent.append(this.element);
    this.series = [];
    this.given = []; // the series as set, before smoothing
    this.plot = null;
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.plotElement);
  }

  setEmpty(text) {
    this.plotElement.dataset.empty = text;
  }

  // series: [{label, color, dashed, band, width, rank, x, mean, low, high, n}], drawn in this
  // order (the last on top) and listed in the legend by rank. Replaces what was drawn.
  setSeries(series) {
    this.given = series;
    // Smoothed, the mean and both edges of the band each go through the moving average.
    const smooth = (values) => (this.smoothing > 0 && values ? ema(values, this.smoothing) : values);
    this.series = series.filter((s) => s.x && s.x.length)
      .map((s) => (this.smoothing > 0 ? {...s, mean: smooth(s.mean), low: smooth(s.low), high: smooth(s.high)} : s));
    this.element.dataset.smoothing = String(this.smoothing);
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.element.dataset.series = String(this.series.length);
    if (!this.series.length) {
      this.legend.replaceChildren();
      return;
    }
    // One x for all: uPlot.join leaves nulls where a series has no point (gaps are spanned).
    const joined = uPlot.join(this.series.map((s) => [s.x, s.mean, s.low, s.high]));
    const column = (i, part) => Array.from(joined[1 + i * 3 + part], (v) => (v === undefined ? null : v));
    const count = this.series.length;
    // The bands first (every upper edge, then every lower), the means after: a line is never
    // under another series' band.
    const data = [Array.from(joined[0])];
    const uSeries = [{label: this.options.xLabel}];
    const bands = [];
    this.series.forEach((s, i) => {
      data.push(column(i, 2));
      uSeries.push({label: `${s.label} high`, stroke: 'transparent', width: 0, points: {show: false},
        spanGaps: true});
    });
    this.series.forEach((s, i) => {
      data.push(column(i, 1));
      uSeries.push({label: `${s.label} low`, stroke: 'transparent', width: 0, points: {show: false}, spanGaps: true});
      if (s.band !== false) {
        bands.push({series: [1 + i, 1 + count + i], fill: translucent(s.color, s.dashed ? 0.1 : 0.18)});
      }
    });
    this.means = 1 + 2 * count; // index of the first mean series
    this.series.forEach((s, i) => {
      data.push(column(i, 0));
      uSeries.push({label: s.label, stroke: s.color, width: s.width || 2, dash: s.dashed ? [6, 4] : undefined,
        spanGaps: true, points: {show: s.x.length > 1 && s.x.length <= 30, size: 5, fill: s.color}});
    });
    this.data = data;
    this.shownIndex = undefined; // new data: the legend is written again whatever the cursor
    const colors = themeColors();
    const axis = {stroke: colors.muted, grid: {stroke: colors.grid, width: 1}, ticks: {stroke: colors.grid, width: 1},
      values: (u, splits) => splits.map(formatTick), size: 50};
    const xAxis = {...axis, label: this.options.xLabel, labelSize: 18, size: 40, values: undefined};
    if (this.options.xLabel === 'epoch') xAxis.incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
    const bounds = this.options.yBounds;
    const rangeY = (u, min, max) => {
      if (min == null || max == null) return bounds ? [...bounds] : [0, 1];
      if (this.logScale) return logRange(min, max);
      const range = uPlot.rangeNum(min, max, 0.1, true);
      if (bounds) {
        range[0] = Math.max(range[0], bounds[0]);
        range[1] = Math.min(range[1], bounds[1]);
        if (range[0] >= range[1]) return [...bounds];
      }
      return range;
    };
    const mean = (i) => i >= this.means;
    this.plot = new uPlot({
      width: this.width(),
      height: this.options.height,
      scales: {x: {time: false}, y: this.logScale ? {range: rangeY, distr: 3, log: 10} : {range: rangeY}},
      series: uSeries,
      bands,
      axes: [xAxis, axis],
      legend: {show: false}, // ours (below) names each series once, not its band's edges
      cursor: {drag: {x: true, y: false}, points: {show: (u, i) => (mean(i) ? cursorDot(this.series[i - this.means])
        : null)}},
      hooks: {setCursor: [(u) => this.renderLegend(u.cursor.idx)], draw: [(u) => this.drawWhiskers(u)]},
    }, data, this.plotElement);
    this.renderLegend(null);
  }

  setSmoothing(weight) {
    this.smoothing = Math.max(0, Math.min(0.99, weight || 0));
    this.setSeries(this.given);
  }

  onKey(event) {
    const index = this.plot ? keyTarget(event, this.keyIndex, this.data[0].length) : null;
    if (index == null) return;
    this.keyIndex = index;
    const u = this.plot;
    u.setCursor({left: u.valToPos(this.data[0][index], 'x'), top: u.over.clientHeight / 2});
    const {format} = this.options;
    const values = this.series.map((s, i) => [s, this.data[this.means + i][index], this.data[1 + this.series.length + i][index],
      this.data[1 + i][index]]).filter(([, mean]) => mean != null);
    this.readout.textContent = `${this.options.xLabel} ${formatNumber(this.data[0][index])}: ${values.map(([s, mean, low,
      high]) => `${s.label} ${format(mean)}${low != null && high != null && high > low ? ` [${format(low)}, ${format(high)}]`
      : ''}`).join(', ') || 'no value'}`;
    this.element.dataset.cursor = String(index);
  }

  setLogScale(on) {
    this.logScale = !!on;
    this.element.dataset.log = this.logScale ? 'yes' : 'no';
    this.setSeries(this.given);
  }

  downloadPng() {
    if (this.plot) savePng(this.plot, fileNameOf(this.options, 'png'));
  }

  // Each series' mean and interval as given (not smoothed), on the x of all of them.
  downloadCsv() {
    const series = this.given.filter((s) => s.x && s.x.length);
    if (!series.length) return;
    const joined = uPlot.join(series.map((s) => [s.x, s.mean, s.low || s.mean, s.high || s.mean]));
    const header = [this.options.xLabel, ...series.flatMap((s) => [`${s.label} mean`, `${s.label} low`,
      `${s.label} high`])];
    const rows = Array.from(joined[0], (x, row) => [x, ...series.flatMap((s, i) => [1, 2, 3]
      .map((part) => joined[1 + i * 3 + part - 1][row]))]);
    saveFile(new Blob([csvOf(header, rows)], {type: 'text/csv'}), fileNameOf(this.options, 'csv'));
  }

  // A band around a single point (a one-epoch run's validation accuracy) has no area: its
  // interval is drawn as a whisker instead.
  drawWhiskers(u) {
    const {ctx} = u;
    const ratio = window.devicePixelRatio || 1;
    const {left, top, width, height} = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height); // an interval past the axis's bounds is cut, as a band is
    ctx.clip();
    ctx.lineWidth = 2 * ratio;
    this.series.forEach((s, i) => {
      const means = this.data[this.means + i];
      const points = means.reduce((list, v, k) => (v == null ? list : [...list, k]), []);
      if (points.length !== 1 || s.band === false) return;
      const k = points[0];
      const low = this.data[1 + this.series.length + i][k];
      const high = this.data[1 + i][k];
      if (low == null || high == null) return;
      // Side by side, a few pixels apart, so that whiskers at the same x do not hide each other.
      const x = Math.round(u.valToPos(this.data[0][k], 'x', true) + (i - (this.series.length - 1) / 2) * 6 * ratio);
      const [upper, lower] = [u.valToPos(high, 'y', true), u.valToPos(low, 'y', true)];
      ctx.strokeStyle = s.color;
      ctx.beginPath();
      ctx.moveTo(x, upper);
      ctx.lineTo(x, lower);
      for (const y of [upper, lower]) {
        ctx.moveTo(x - 5 * ratio, y);
        ctx.lineTo(x + 5 * ratio, y);
      }
      ctx.stroke();
      ctx.fillStyle = s.color;
      ctx.beginPath();
      ctx.arc(x, u.valToPos(means[k], 'y', true), 3.5 * ratio, 0, 2 * Math.PI);
      ctx.fill();
    });
    ctx.restore();
  }

  // Each series' mean and interval at the cursor, or at its last point when the cursor is
  // away.
  renderLegend(index) {
    if (this.shownIndex === index && this.legend.childElementCount) return;
    this.shownIndex = index;
    const {format} = this.options;
    const rows = this.series.map((s, i) => [s, i]).sort(([a, i], [b, j]) => (a.rank ?? i) - (b.rank ?? j)).map(([s, i]) => {
      let k = index;
      const means = this.data[this.means + i];
      if (k == null || means[k] == null) {
        k = null;
        for (let j = means.length - 1; j >= 0; j--) if (means[j] != null) { k = j; break; }
      }
      const at = k == null ? null : this.data[0][k];
      const low = k == null ? null : this.data[1 + this.series.length + i][k];
      const high = k == null ? null : this.data[1 + i][k];
      const interval = low != null && high != null && high > low ? ` [${format(low)}, ${format(high)}]` : '';
      return h('li', {dataset: {label: s.label}},
        h('span', {class: `swatch${s.dashed ? ' dashed' : ''}`, style: `--swatch:${s.color}`}),
        h('span', {class: 'series-label'}, s.label),
        h('span', {class: 'series-value'}, k == null ? '—' : `${format(means[k])}${interval}`,
          k == null ? '' : h('span', {class: 'muted'}, ` at ${this.options.xLabel} ${formatNumber(at)}`)));
    });
    this.legend.replaceChildren(...rows);
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
    this.resizer.disconnect();
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}

// The dot uPlot puts on a mean line under the cursor.
function cursorDot(series) {
  const dot = document.createElement('div');
  dot.style.cssText = `width:7px;height:7px;margin:-3.5px 0 0 -3.5px;border-radius:50%;background:${series.color}`;
  return dot;
}
