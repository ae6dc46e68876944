// views/experiment_charts.js — which chart of an experiment's page each curve goes to (by
// its name: docs/config.md, docs/sql.md), each chart's title, order, axes and stacking, and
// the per-class bars. The page (experiment.js) makes the charts and feeds them; this says
// what they are.

import {h, clear, formatPercent} from '../dom.js';

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
