// views/experiment_charts.js — the charts of an experiment's page: which chart each curve
// goes to (by its name: docs/config.md, docs/sql.md), each chart's title, order, axes and
// stacking, the per-class bars, and RunCharts, the page's live set of charts, which lays
// them out, loads the stored history into them and appends each streamed point. The page
// (experiment.js) feeds it; the stage markers come from experiment_stages.js.

import {LiveChart, colorFor} from '../charts.js';
import {h, clear, formatNumber, formatPercent} from '../dom.js';

export const SPLIT_ORDER = {train: 1, val: 2, test: 3, teacher: 4}; // the <n> of an eval event's id
export const EVALUATION = /^(train|val|test|teacher)\//; // per-epoch curves, by name (docs/api.md)
export const PER_CLASS = 'test/accuracy/';

// Loss terms in the order the config's formula has them; the total first.
const TERMS = ['total', 'task', 'distill', 'feature', 'adversarial'];
const termRank = (name) => {
  const index = TERMS.indexOf(name.slice(name.indexOf('/') + 1));
  return index >= 0 ? index : TERMS.length;
};
const splitRank = (name) => SPLIT_ORDER[name.split('/')[0]] || 9;

// Every curve goes to the charts whose test it passes, or else to its kind's catch-all; page
// order is this order. perEpoch charts have the epoch on x; `bars` is the per-class view.
// The teacher's evaluations (`teacher/<split>/<name>`) are not curves: each is one value,
// drawn as a reference line on the chart its `<split>/<name>` goes to.
export const CHARTS = [
  {key: 'loss', title: 'Loss terms (raw)', test: (n) => n.startsWith('loss/'), order: termRank},
  {key: 'weighted', title: 'Weighted terms, stacked: the top edge is loss/total',
    test: (n) => n.startsWith('weighted/') || n === 'loss/total', order: termRank,
    stacked: (n) => n.startsWith('weighted/')},
  {key: 'accuracy', title: 'Accuracy per epoch', perEpoch: true, test: (n) => /^(train|val|test)\/accuracy$/.test(n),
    order: splitRank, yBounds: [0, 1]},
  {key: 'eval-loss', title: 'Loss per epoch', perEpoch: true, test: (n) => /^(train|val|test)\/loss$/.test(n),
    order: splitRank},
  {key: 'per-class', title: 'Test accuracy per class', perEpoch: true, bars: true,
    test: (n) => n.startsWith(PER_CLASS) && n.length > PER_CLASS.length},
  {key: 'agreement', title: 'Agreement with the teacher (same predicted class)', perEpoch: true,
    test: (n) => /^(train|val|test)\/agreement$/.test(n), order: splitRank, yBounds: [0, 1]},
  {key: 'schedule', title: 'Learning rate and temperature', test: (n) => n === 'lr' || n === 'temperature',
    rightAxis: (n) => n === 'temperature', axisLabels: (names) => (names.includes('temperature')
      ? {y: 'lr', right: 'temperature'} : {})},
  {key: 'gate', title: 'Selective gate', test: (n) => n.startsWith('gate/') || n === 'feature/ungated_mse',
    rightAxis: (n) => n === 'feature/ungated_mse', axisLabels: (names) => (names.includes('feature/ungated_mse')
      ? {y: 'gate', right: 'ungated mse'} : {})},
  {key: 'disc', title: 'Discriminator', test: (n) => n.startsWith('disc/'), rightAxis: (n) => n === 'disc/loss',
    yBounds: [0, 1],
    axisLabels: (names) => (names.includes('disc/loss') && names.length > 1 ? {y: 'accuracy', right: 'loss'} : {})},
  {key: 'grad', title: 'Gradient norm per layer', test: (n) => n.startsWith('grad_norm/')},
  // Which term moves the student: each term's weighted share of the gradient (stacked, they
  // sum to one), and how each term's gradient points against the task's (below zero: the
  // objectives conflict). Judged by gradient, not by loss: a large loss can move little.
  {key: 'grad-share', title: 'Share of the gradient on the student, per term (stacked)',
    test: (n) => n.startsWith('grad_share/'), order: termRank, stacked: () => true, yBounds: [0, 1]},
  {key: 'grad-cosine', title: 'Cosine of each term\'s gradient with the task\'s', test: (n) => n.startsWith('grad_cos/'),
    yBounds: [-1, 1]},
  {key: 'grad-term', title: 'Gradient norm per term (raw)', test: (n) => n.startsWith('grad_norm_term/'),
    order: termRank},
  {key: 'speed', title: 'Examples per second', test: (n) => n === 'examples_per_s'},
  {key: 'diagnostics', title: 'Other curves', catchAll: true},
  {key: 'eval-other', title: 'Other evaluations', perEpoch: true, catchAll: true},
];

// Which charts a curve goes to (their keys): 'teacher' for the teacher's evaluations.
export function routeOf(name, perEpoch = EVALUATION.test(name)) {
  if (perEpoch && name.startsWith('teacher/') && referenceChart(name)) return ['teacher'];
  const kind = CHARTS.filter((c) => !!c.perEpoch === perEpoch);
  const keys = kind.filter((c) => c.test && c.test(name)).map((c) => c.key);
  return keys.length ? keys : kind.filter((c) => c.catchAll).map((c) => c.key);
}

// The chart a teacher's value is a reference line on: where the student's curve of the
// same name is drawn (teacher/test/accuracy → the accuracy chart), if it is a line chart.
export function referenceChart(name) {
  const own = name.slice('teacher/'.length);
  const spec = CHARTS.find((c) => c.perEpoch && !c.bars && c.test && c.test(own));
  return spec ? spec.key : null;
}

// The per-class view: one bar per class at the newest epoch (a line per class over the
// epochs is ten tangled lines; what one wants to see is which classes lag). Takes points as
// a LiveChart does, so the page feeds both the same way.
export class ClassBars {
  constructor(parent, {title, overall}) {
    this.latest = new Map(); // class → {epoch, value}
    this.overall = overall; // epoch → the overall test accuracy, for the caption
    this.caption = h('figcaption', {}, title);
    this.list = h('div', {class: 'class-bars'});
    this.title = title;
    this.element = h('figure', {class: 'chart bars', dataset: {kind: 'per-class', classes: '0'}}, this.caption,
      this.list, h('p', {class: 'empty-note'}, 'loading…'));
    this.queued = false;
    parent.append(this.element);
  }

  declare() {}

  set(name, epoch, value) {
    if (value == null) return;
    const label = name.slice(PER_CLASS.length);
    const known = this.latest.get(label);
    if (!known || epoch >= known.epoch) this.latest.set(label, {epoch, value});
    this.schedule();
  }

  load(tables) {
    for (const [name, epochs, values] of tables) {
      if (epochs.length) this.set(name, epochs[epochs.length - 1], values[values.length - 1]);
    }
  }

  addRow(epoch, entries) {
    for (const [name, value] of entries) this.set(name, epoch, value);
    return true;
  }

  schedule() {
    if (this.queued) return;
    this.queued = true;
    requestAnimationFrame(() => this.render());
  }

  redraw() {}

  setEmpty(text) {
    this.element.querySelector('.empty-note').textContent = text;
  }

  render() {
    this.queued = false;
    if (this.destroyed) return;
    let epoch = 0;
    for (const point of this.latest.values()) epoch = Math.max(epoch, point.epoch);
    const rows = [...this.latest].filter(([, point]) => point.epoch === epoch)
      .sort(([a], [b]) => a.localeCompare(b, 'en', {numeric: true}));
    const worst = Math.min(...rows.map(([, point]) => point.value));
    const overall = this.overall(epoch);
    clear(this.caption, this.title, rows.length ? h('span', {class: 'muted'},
      ` · epoch ${epoch}${overall != null ? ` · overall ${formatPercent(overall)}` : ''}`) : null);
    clear(this.list, rows.map(([label, {value}]) => h('div', {
      class: `class-row${value === worst && rows.length > 1 ? ' worst' : ''}`, dataset: {class: label}},
    h('span', {class: 'class-name', title: label}, label),
    h('span', {class: 'class-bar'}, h('span', {style: `width:${Math.max(0, Math.min(1, value)) * 100}%`})),
    h('span', {class: 'class-value'}, formatPercent(value)))));
    this.element.dataset.epoch = String(epoch);
    this.element.dataset.classes = String(rows.length);
    this.element.querySelector('.empty-note').hidden = rows.length > 0;
  }

  destroy() {
    this.destroyed = true;
  }
}

// The page's charts, made as their first curve is named or its first point arrives, with
// the teacher's values drawn on them as reference lines and the stage starts as markers.
// Each point is appended to its chart; a chart redraws once per animation frame.
export class RunCharts {
  // id: the experiment's; stages: its StageStarts; onChange(): the header has new figures
  // to show (a teacher's value).
  constructor({id, stages, onChange}) {
    this.id = id;
    this.stages = stages;
    this.onChange = onChange;
    this.charts = new Map(); // key → LiveChart (or ClassBars)
    this.routes = new Map(); // `${perEpoch}:${name}` → [chart keys]
    this.teacherValues = new Map(); // 'teacher/test/accuracy' → its value
    this.overallAccuracy = new Map(); // epoch → test/accuracy, for the per-class caption
    this.grid = h('div', {class: 'charts'});
    this.waiting = h('p', {class: 'empty'}, 'No points yet: the charts fill in as the run reports them.');
    this.slots = new Map(CHARTS.map((c) => [c.key, h('div', {class: 'slot', hidden: true, dataset: {chart: c.key}})]));
    this.grid.append(...this.slots.values());
  }

  get size() {
    return this.charts.size;
  }

  // What the page says while there is no chart: whether points are still to come.
  setWaiting(active) {
    if (this.charts.size !== 0) return;
    this.waiting.textContent = active ? 'No points yet: the charts fill in as the run reports them.'
      : 'This run recorded no points.';
  }

  redraw() {
    for (const c of this.charts.values()) c.redraw();
  }

  setEmpty(text) {
    for (const c of this.charts.values()) c.setEmpty(text);
  }

  destroy() {
    for (const c of this.charts.values()) c.destroy();
  }

  // The teacher's values drawn on a chart: "teacher test 91.2%".
  referencesOf(key) {
    const lines = [];
    for (const [name, value] of this.teacherValues) {
      if (referenceChart(name) !== key) continue;
      const what = name.slice('teacher/'.length);
      const shown = what.endsWith('accuracy') ? formatPercent(value) : formatNumber(value);
      lines.push({y: value, label: `teacher ${what.replace(/\/(accuracy|loss)$/, ' $1')} ${shown}`,
        color: colorFor('teacher/test/accuracy')});
    }
    return lines;
  }

  setTeacherValue(name, value) {
    if (value == null || this.teacherValues.get(name) === value) return;
    this.teacherValues.set(name, value);
    const key = referenceChart(name);
    if (key) this.chart(key).referencesChanged();
    this.onChange();
  }

  // The teacher's evaluation is stored at step 0, which GET …/metrics leaves out (it gives
  // steps after since_step, 0 by default), and the stream resumes after the history: a run
  // opened after it began would never see it. The worker's report has the same figures.
  teacherFromWorker(experiment) {
    const reported = experiment.worker && experiment.worker.teacher;
    if (!reported) return;
    for (const [name, value] of [['teacher/test/accuracy', reported.accuracy], ['teacher/test/loss', reported.loss]]) {
      if (!this.teacherValues.has(name) && typeof value === 'number') this.setTeacherValue(name, value);
    }
  }

  routesOf(name, perEpoch) {
    const key = `${perEpoch}:${name}`;
    let keys = this.routes.get(key);
    if (!keys) {
      keys = routeOf(name, perEpoch);
      this.routes.set(key, keys);
    }
    return keys;
  }

  chart(key) {
    let c = this.charts.get(key);
    if (c) return c;
    const spec = CHARTS.find((s) => s.key === key);
    const slot = this.slots.get(key);
    slot.hidden = false;
    this.waiting.hidden = true;
    if (spec.bars) {
      c = new ClassBars(slot, {title: spec.title, overall: (epoch) => this.overallAccuracy.get(epoch)});
    } else {
      c = new LiveChart(slot, {title: spec.title, kind: key, xLabel: spec.perEpoch ? 'epoch' : 'step',
        markers: spec.perEpoch ? () => this.stages.epochMarkers() : () => this.stages.stepMarkers(),
        rightAxis: spec.rightAxis, order: spec.order,
        stacked: spec.stacked, references: () => this.referencesOf(key), yBounds: spec.yBounds,
        label: spec.rightAxis ? (n) => (spec.rightAxis(n) ? `${n} (right)` : n) : undefined,
        sync: `run-${this.id}-${spec.perEpoch ? 'epoch' : 'step'}`});
    }
    this.charts.set(key, c);
    return c;
  }

  // The run's curve names, before their points: each chart is laid out with its series, so
  // the page does not shift as a long history loads.
  plan(series) {
    const byChart = new Map();
    for (const name of series || []) {
      for (const key of this.routesOf(name, EVALUATION.test(name))) {
        if (key === 'teacher') continue;
        if (!byChart.has(key)) byChart.set(key, []);
        byChart.get(key).push(name);
      }
    }
    for (const key of CHARTS.map((c) => c.key).filter((k) => byChart.has(k))) {
      const c = this.chart(key);
      c.declare(byChart.get(key));
      this.axisLabels(key);
    }
  }

  // Charts with a right axis name both axes once they have both kinds of series.
  axisLabels(key) {
    const spec = CHARTS.find((s) => s.key === key);
    const c = this.charts.get(key);
    if (spec.axisLabels && c instanceof LiveChart) c.options.axisLabels = spec.axisLabels(c.names);
  }

  // One event's values, each appended to the charts its name goes to.
  addValues(x, names, values, perEpoch) {
    const rows = new Map(); // chart key → [[name, value], …]
    names.forEach((name, i) => {
      for (const key of this.routesOf(name, perEpoch)) {
        if (key === 'teacher') {
          this.setTeacherValue(name, values[i]);
          continue;
        }
        if (!rows.has(key)) rows.set(key, []);
        rows.get(key).push([name, values[i]]);
      }
    });
    for (const [key, entries] of rows) {
      const c = this.chart(key);
      const before = c.names && c.names.length;
      c.addRow(x, entries);
      if (c.names && c.names.length !== before) this.axisLabels(key);
    }
  }

  // An evaluation event's values (and the overall test accuracy, for the per-class caption).
  addEvaluation(event) {
    const names = Object.keys(event.values);
    if (event.split === 'test' && event.values.accuracy != null) {
      this.overallAccuracy.set(event.epoch, event.values.accuracy);
    }
    this.addValues(event.epoch, names.map((n) => `${event.split}/${n}`), names.map((n) => event.values[n]), true);
  }

  // The stored history (GET …/metrics) into the charts. Returns the stream's Last-Event-ID
  // for what it holds ("<step>", or "<step>.<n>" when that step's evaluations are in it
  // too), null if it holds nothing.
  loadHistory(curves) {
    const tables = new Map(); // chart key → [[name, xs, values]]
    let lastStep = -1;
    for (const [name, curve] of Object.entries(curves)) {
      const perEpoch = Array.isArray(curve.epoch);
      for (const key of this.routesOf(name, perEpoch)) {
        if (key === 'teacher') {
          this.setTeacherValue(name, curve.value[curve.value.length - 1]);
          continue;
        }
        if (!tables.has(key)) tables.set(key, []);
        tables.get(key).push([name, perEpoch ? curve.epoch : curve.step, curve.value]);
      }
      if (name === 'test/accuracy') curve.epoch.forEach((epoch, i) => this.overallAccuracy.set(epoch, curve.value[i]));
      const last = curve.step[curve.step.length - 1];
      if (!perEpoch && last > lastStep) lastStep = last;
    }
    const cursor = historyCursor(curves, lastStep);
    for (const [key, list] of tables) {
      this.chart(key).load(list);
      this.axisLabels(key);
    }
    this.stages.derive(curves, cursor.lastStep);
    return cursor.id;
  }
}

// Evaluations computed after the last step are in the history too: the stream resumes after
// them (the teacher's, at step 0, may be all there is). lastStep: the last metric step.
function historyCursor(curves, lastStep) {
  let phase = 0;
  for (const [name, curve] of Object.entries(curves)) {
    if (!Array.isArray(curve.epoch) || curve.step.length === 0) continue;
    const last = curve.step[curve.step.length - 1];
    const order = SPLIT_ORDER[name.split('/')[0]] || 0;
    if (last > lastStep) {
      lastStep = last;
      phase = order;
    } else if (last === lastStep) phase = Math.max(phase, order);
  }
  if (lastStep < 0) return {lastStep, id: null};
  return {lastStep, id: phase ? `${lastStep}.${phase}` : String(lastStep)};
}
